//! A component exporting `tenet:provider/resources@0.2.0`, which this Tenet does not
//! support: loading it must fail with the ABI version and the supported range.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "provider" });
}

struct Future;

impl bindings::exports::tenet::provider::resources::Guest for Future {
    fn describe() -> String {
        "from the future".to_owned()
    }
}

bindings::export!(Future with_types_in bindings);
