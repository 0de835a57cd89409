//! A provider that misbehaves on request, to prove the host contains it. Kind `probe`
//! with properties `path` and `action`; `read` and `apply` both perform `action`:
//! - `ok`: nothing; the resource "exists" with the given properties;
//! - `write`: write a file at `path` through WASI;
//! - `chmod`: chmod `path` through the host's fs-ext;
//! - `loop`: spin forever (the deadline must stop it);
//! - `panic`: panic (a trap; the message goes to stderr);
//! - `alloc`: allocate 1 GiB (the memory cap must stop it);
//! - `log-flood`: emit far more log lines than the host keeps;
//! - `slow-apply`: absent on `read`, and `apply` takes 1.5 s (to interrupt a run);
//! - `noisy-diff`: `diff` reports a change whose before and after are equal.

use serde_json::{Value, json};
use tenet_sdk::{Diff, Error, FieldChange, KindInfo, Provider, ProviderInfo};

pub struct Misbehave;

fn perform(properties: &Value) -> Result<Option<Value>, Error> {
    let action = properties
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("ok");
    let path = properties
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("/nonexistent");
    match action {
        "write" => std::fs::write(path, "written by misbehave\n")
            .map_err(|e| Error::CapabilityDenied(format!("write {path}: {e}")))?,
        "chmod" => tenet_sdk::fs::chmod(path, 0o777)?,
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "panic" => panic!("misbehave panicked on purpose"),
        "alloc" => {
            let big = vec![1u8; 1 << 30];
            return Ok(Some(json!({"len": std::hint::black_box(big).len()})));
        }
        "log-flood" => {
            for i in 0..5_000 {
                tenet_sdk::log::info(&format!("flood {i}"));
            }
        }
        _ => {}
    }
    Ok(Some(properties.clone()))
}

impl Provider for Misbehave {
    fn describe() -> ProviderInfo {
        ProviderInfo::new("misbehave", "0.1.0", "misbehaves on request").kind(
            KindInfo::new(
                "probe",
                "performs `action` on read and apply",
                json!({
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        "action": {"enum": ["ok", "write", "chmod", "loop", "panic", "alloc", "log-flood", "slow-apply", "noisy-diff"]},
                        "value": {}
                    },
                    "required": ["action"],
                    "additionalProperties": false
                }),
                "path",
            )
            .path_properties(&["path"]),
        )
    }

    fn read(_kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        if properties.get("action").and_then(Value::as_str) == Some("slow-apply") {
            return Ok(None);
        }
        perform(properties)
    }

    fn diff(_kind: &str, desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
        match desired.get("action").and_then(Value::as_str) {
            // Reports a change although nothing differs: a contract violation.
            Some("noisy-diff") => Ok(Diff::from_changes(vec![FieldChange::new(
                "action",
                Some(json!("noisy-diff")),
                Some(json!("noisy-diff")),
            )])),
            _ => Ok(Diff::between(desired, current, &[])),
        }
    }

    fn apply(_kind: &str, desired: &Value, _current: Option<&Value>) -> Result<Value, Error> {
        if desired.get("action").and_then(Value::as_str) == Some("slow-apply") {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            return Ok(desired.clone());
        }
        perform(desired).map(|v| v.unwrap_or(Value::Null))
    }

    fn delete(_kind: &str, _current: &Value) -> Result<(), Error> {
        Ok(())
    }
}

tenet_sdk::export_provider!(Misbehave);
