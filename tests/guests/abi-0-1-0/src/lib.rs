//! A provider built against the archived, released `tenet:provider@0.1.0` world
//! (wit/archive/0.1.0), which has no `capabilities` export and imports `tenet:host`
//! 0.1.0: a 0.1.x host must still load and run it. Kind `note`: a value that exists
//! exactly as declared.

#[allow(unsafe_code, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/archive/0.1.0/provider",
        world: "provider",
        generate_all,
    });
}

use bindings::exports::tenet::provider::resources::{
    Diagnostic, DiffResult, Error, Guest, ProviderInfo,
};
use bindings::tenet::provider::types::{Action, KindInfo};

struct Old;

impl Guest for Old {
    fn describe() -> ProviderInfo {
        bindings::tenet::host::log::log(bindings::tenet::host::log::Level::Debug, "describe");
        ProviderInfo {
            name: "old".into(),
            version: "0.1.0".into(),
            description: "built against tenet:provider@0.1.0".into(),
            kinds: vec![KindInfo {
                name: "note".into(),
                description: "a value".into(),
                schema: r#"{"type":"object","properties":{"name":{"type":"string"}},"required":["name"],"additionalProperties":false}"#.into(),
                identity: "name".into(),
                force_new: vec![],
                path_properties: vec![],
            }],
        }
    }
    fn validate(_kind: String, _properties: String) -> Vec<Diagnostic> {
        Vec::new()
    }
    fn read(_kind: String, properties: String) -> Result<Option<String>, Error> {
        Ok(Some(properties))
    }
    fn diff(
        _kind: String,
        _desired: String,
        _current: Option<String>,
    ) -> Result<DiffResult, Error> {
        Ok(DiffResult {
            action: Action::None,
            changes: vec![],
        })
    }
    fn apply(_kind: String, desired: String, _current: Option<String>) -> Result<String, Error> {
        Ok(desired)
    }
    fn delete(_kind: String, _current: String) -> Result<(), Error> {
        Ok(())
    }
}

bindings::export!(Old with_types_in bindings);
