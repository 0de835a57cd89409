//! The built-in `http` provider: services reached over HTTP, through `wasi:http` and the
//! operator's `net` grants only (the host refuses every other origin before connecting,
//! and every method but GET and HEAD during plans; it also adds the credentials a grant
//! carries, which this provider never sees).
//!
//! - `http.check` (`check.rs`): a health gate. Requests a URL until the status (and
//!   optionally a JSON value or a body pattern) is as expected, within a timeout; checked
//!   again on every apply, after what it depends on, and never a change. Fails naming
//!   what it last saw.
//! - `http.resource` (`object.rs`): a JSON object behind a REST API — created, read,
//!   updated, deleted; compared on the fields the manifest declares only (servers add
//!   fields); found by its URL (a natural key) or, when the server assigns ids, by a
//!   search of its collection for the element whose key field equals the manifest's.

mod check;
mod object;
mod wire;

use serde_json::Value;
use tenet_sdk::{Diagnostic, Diff, Error, Provider, ProviderInfo};

pub struct HttpProvider;

impl Provider for HttpProvider {
    fn describe() -> ProviderInfo {
        ProviderInfo::new(
            "http",
            env!("CARGO_PKG_VERSION"),
            "HTTP health gates and JSON objects behind REST APIs, through net grants only",
        )
        .kind(check::kind())
        .kind(object::kind())
    }

    fn validate(kind: &str, properties: &Value) -> Vec<Diagnostic> {
        match kind {
            "check" => check::validate(properties),
            "resource" => object::validate(properties),
            other => vec![Diagnostic::error("", format!("unknown kind `{other}`"))],
        }
    }

    fn read(kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        match kind {
            "check" => check::read(properties).map(Some),
            "resource" => object::read(properties),
            other => Err(Error::unknown_kind(other)),
        }
    }

    fn diff(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
        match kind {
            "check" => Ok(check::diff(current)),
            "resource" => object::diff(desired, current),
            other => Err(Error::unknown_kind(other)),
        }
    }

    fn apply(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Value, Error> {
        match kind {
            "check" => check::wait(desired),
            "resource" => object::apply(desired, current),
            other => Err(Error::unknown_kind(other)),
        }
    }

    fn delete(kind: &str, current: &Value) -> Result<(), Error> {
        match kind {
            // A check holds nothing to remove.
            "check" => Ok(()),
            "resource" => object::delete(current),
            other => Err(Error::unknown_kind(other)),
        }
    }
}

tenet_sdk::export_provider!(HttpProvider);
