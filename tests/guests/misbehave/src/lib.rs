//! A hostile provider: each resource names one attack, to prove the host contains it.
//! Kind `probe` with properties `action`, `path`, `target`, `args`, `method`, `value`,
//! `phase`; `read` and `apply` both perform `action` unless noted (with `phase: apply`,
//! `read` finds nothing and only `apply` performs it):
//! - `ok`: nothing; the resource "exists" with the given properties;
//! - `write`: write a file at `target` (or `path`) through WASI (`..`, absolute paths,
//!   symlinks);
//! - `chmod` / `chown`: change `target` (or `path`) through the host's fs-ext;
//!   `refusals-then-chmod` first makes twenty refused calls, then chmods and ignores the
//!   refusal;
//! - `exec`: run `target` with `args` through `tenet:host/exec`; `exec-ignore` does the
//!   same during `read` but ignores a refusal and carries on (a sneaky provider);
//! - `http`: send `method` (default GET) to the URL `target` through `wasi:http`;
//! - `env`: the environment variable `target` must be visible with the value `value`;
//! - `loop`: spin forever (the deadline must stop it);
//! - `recurse`: unbounded recursion (stack overflow);
//! - `panic`: panic (a trap; the message goes to stderr);
//! - `alloc`: allocate 1 GiB (the memory cap must stop it);
//! - `output-flood`: write 100 MB to stdout; `log-flood`: 5,000 log lines;
//! - `block`: run `target` (a granted `sleep`) with no timeout of its own, so the host's
//!   call deadline must stop it;
//! - `slow-apply`: absent on `read`, and `apply` takes 1.5 s (to interrupt a run);
//! - `noisy-diff`: `diff` reports a change whose before and after are equal;
//! - `malformed-json`: `apply` returns text that is not JSON;
//! - `bad-schema`: `apply` returns a state whose `path` is a number;
//! - `lying-apply`: `apply` claims a `value` that a fresh `read` does not show;
//! - `forge`: log a message, then fail with an error, both carrying `value` (text made to
//!   pass as Tenet's own lines);
//! - `clock-sleep`: sleep on the WASI clock for `value` seconds (default 60), which
//!   blocks in a host call past any deadline;
//! - `hold`: allocate `value` MiB (default 200) and keep it in a global, so a pooled
//!   instance holds it between calls.
//!
//! Batched reads (`read-many`, used when the environment variable `MISBEHAVE_SETTINGS`
//! is `batch`): `short-batch` returns one state fewer than it was asked for.
//!
//! What it declares about itself (`execution.settings`) follows `MISBEHAVE_SETTINGS`
//! (granted as `env`): `ld-preload` and `planted-path` fix environment values a provider
//! may not set, `zero` asks for no concurrency, `bad-lock` names a lock that is not a
//! name, `phantom-kind` batches a kind it does not have, `batch` batches `probe` and
//! holds the lock `misbehave`; anything else declares nothing.
//!
//! It implements the export by hand instead of `export_provider!` so `apply` can return
//! raw text (malformed JSON is impossible through the SDK).

use serde_json::{Value, json};
use std::io::Write;
use tenet_sdk::__bindings::exports::tenet::provider::{batch, capabilities, execution, resources};
use tenet_sdk::exec::Command;
use tenet_sdk::{Capabilities, Diff, Error, FieldChange, KindInfo, Provider, ProviderInfo};

pub struct Misbehave;

fn text<'a>(p: &'a Value, key: &str, default: &'a str) -> &'a str {
    p.get(key).and_then(Value::as_str).unwrap_or(default)
}

fn run(properties: &Value) -> Result<tenet_sdk::exec::Output, Error> {
    let args: Vec<String> = properties
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Command::new(text(properties, "target", "/bin/true"))
        .args(args)
        .run()?)
}

/// Recurses until the stack overflows; `black_box` keeps the frames from being folded.
fn recurse(pad: [u8; 256]) -> u64 {
    let pad = std::hint::black_box(pad);
    if pad[1] == 0 {
        return 0;
    }
    recurse(pad) + u64::from(pad[0])
}

#[cfg(not(target_os = "wasi"))]
fn http(_properties: &Value) -> Result<u16, Error> {
    Err(Error::Internal(
        "wasi:http exists only in the component".into(),
    ))
}

#[cfg(target_os = "wasi")]
fn http(properties: &Value) -> Result<u16, Error> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};
    let url = text(properties, "target", "http://127.0.0.1:9/");
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    let method = match text(properties, "method", "GET") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_owned()),
    };
    let bad = |what: &str| Error::Internal(format!("cannot build request: {what}"));
    req.set_method(&method).map_err(|()| bad("method"))?;
    req.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }))
    .map_err(|()| bad("scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|()| bad("authority"))?;
    req.set_path_with_query(Some(path))
        .map_err(|()| bad("path"))?;
    let fut = outgoing_handler::handle(req, None).map_err(|e| {
        Error::CapabilityDenied(format!(
            "{} {url}: {e:?}",
            text(properties, "method", "GET")
        ))
    })?;
    fut.subscribe().block();
    match fut.get() {
        Some(Ok(Ok(resp))) => Ok(resp.status()),
        Some(Ok(Err(e))) => Err(Error::CapabilityDenied(format!("{url}: {e:?}"))),
        other => Err(Error::Internal(format!("{url}: {other:?}"))),
    }
}

/// Perform `action`; `reading` is true during `read`.
fn perform(properties: &Value, reading: bool) -> Result<Option<Value>, Error> {
    // `target` is not a path property, so the host does not resolve or check it before
    // the call: the guest aims it wherever it likes.
    let path = properties
        .get("target")
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(properties, "path", "/nonexistent"));
    match text(properties, "action", "ok") {
        "write" => std::fs::write(path, "written by misbehave\n")
            .map_err(|e| Error::CapabilityDenied(format!("write {path}: {e}")))?,
        "chmod" => tenet_sdk::fs::chmod(path, 0o777)?,
        "refusals-then-chmod" => {
            // Twenty harmless refused calls first, to push the real attempt out of any
            // capped list of refusals; then a chmod, ignoring its refusal.
            for _ in 0..20 {
                let _ = tenet_sdk::fs::stat("/etc/hostname");
            }
            let _ = tenet_sdk::fs::chmod(path, 0o777);
        }
        "chown" => tenet_sdk::fs::chown(path, Some(0), Some(0))?,
        "exec" => {
            let out = run(properties)?;
            if !out.success() {
                return Err(Error::Internal(format!(
                    "{} exited with {:?}",
                    text(properties, "target", ""),
                    out.status
                )));
            }
        }
        "exec-ignore" if reading => {
            let _ = run(properties);
        }
        "block" => {
            let out = run(properties)?;
            if out.timed_out {
                return Err(Error::Transient("the host stopped the program".into()));
            }
        }
        "http" => {
            let status = http(properties)?;
            if status != 200 {
                return Err(Error::Internal(format!("HTTP status {status}")));
            }
        }
        "env" => {
            let name = text(properties, "target", "");
            let want = text(properties, "value", "");
            match std::env::var(name) {
                Ok(v) if v == want => {}
                Ok(_) => return Err(Error::Conflict(format!("env {name} has another value"))),
                Err(_) => {
                    return Err(Error::CapabilityDenied(format!(
                        "environment variable {name} is not visible"
                    )));
                }
            }
        }
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "recurse" => {
            let n = recurse([1; 256]);
            return Ok(Some(json!({"depth": n})));
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
        "output-flood" => {
            let chunk = vec![b'x'; 1 << 16];
            let mut out = std::io::stdout();
            // 100 MB; writes fail once the host's buffer is full, and that is fine.
            for _ in 0..1600 {
                if out.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
        "forge" => {
            let forged = text(properties, "value", "");
            tenet_sdk::log::warn(forged);
            return Err(Error::Internal(forged.to_owned()));
        }
        "clock-sleep" => {
            let secs = properties
                .get("value")
                .and_then(Value::as_u64)
                .unwrap_or(60);
            std::thread::sleep(std::time::Duration::from_secs(secs));
        }
        "hold" => {
            let mib = properties
                .get("value")
                .and_then(Value::as_u64)
                .unwrap_or(200) as usize;
            // Touched, so the pages are really resident.
            let block = vec![7u8; mib << 20];
            HELD.with(|h| h.borrow_mut().push(std::hint::black_box(block)));
        }
        _ => {}
    }
    Ok(Some(properties.clone()))
}

thread_local! {
    /// What `hold` keeps: it lives as long as the instance.
    static HELD: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
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
                        "action": {"enum": ["ok", "write", "chmod", "refusals-then-chmod", "chown", "exec", "exec-ignore",
                            "http", "env", "loop", "recurse", "panic", "alloc", "log-flood",
                            "output-flood", "block", "slow-apply", "noisy-diff",
                            "malformed-json", "bad-schema", "lying-apply", "forge", "clock-sleep", "hold", "short-batch"]},
                        "target": {"type": "string"},
                        "args": {"type": "array", "items": {"type": "string"}},
                        "method": {"type": "string"},
                        "phase": {"enum": ["apply"]},
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

    fn capabilities() -> Capabilities {
        Capabilities::new()
            .program("/bin/echo", true, "says hello during plans")
            .host("http://127.0.0.1:*", "talks to a test server")
            .env("TENET_TEST_GRANTED", "reads a granted variable")
            .directory("/nonexistent-misbehave", true, "a directory nobody grants")
    }

    fn read(_kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        if text(properties, "phase", "") == "apply" {
            return Ok(None);
        }
        match text(properties, "action", "ok") {
            "slow-apply" | "block" => Ok(None),
            "malformed-json" | "bad-schema" | "lying-apply" => Ok(None),
            _ => perform(properties, true),
        }
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
        match text(desired, "action", "ok") {
            "slow-apply" => {
                std::thread::sleep(std::time::Duration::from_millis(1500));
                Ok(desired.clone())
            }
            "bad-schema" => Ok(json!({"action": "bad-schema", "path": 42})),
            "lying-apply" => {
                let mut claimed = desired.clone();
                claimed["value"] = json!("claimed but never done");
                Ok(claimed)
            }
            _ => perform(desired, false).map(|v| v.unwrap_or(Value::Null)),
        }
    }

    fn delete(_kind: &str, _current: &Value) -> Result<(), Error> {
        Ok(())
    }
}

/// The export, by hand: everything goes through the SDK's adapter except `apply` of
/// `malformed-json`, which returns raw text.
pub struct Export;

impl resources::Guest for Export {
    fn describe() -> resources::ProviderInfo {
        tenet_sdk::__adapter::describe::<Misbehave>()
    }
    fn validate(kind: String, properties: String) -> Vec<resources::Diagnostic> {
        tenet_sdk::__adapter::validate::<Misbehave>(&kind, &properties)
    }
    fn read(kind: String, properties: String) -> Result<Option<String>, resources::Error> {
        tenet_sdk::__adapter::read::<Misbehave>(&kind, &properties)
    }
    fn diff(
        kind: String,
        desired: String,
        current: Option<String>,
    ) -> Result<resources::DiffResult, resources::Error> {
        tenet_sdk::__adapter::diff::<Misbehave>(&kind, &desired, current.as_deref())
    }
    fn apply(
        kind: String,
        desired: String,
        current: Option<String>,
    ) -> Result<String, resources::Error> {
        if desired.contains("\"malformed-json\"") {
            return Ok("{\"path\": oops".to_owned());
        }
        tenet_sdk::__adapter::apply::<Misbehave>(&kind, &desired, current.as_deref())
    }
    fn delete(kind: String, current: String) -> Result<(), resources::Error> {
        tenet_sdk::__adapter::delete::<Misbehave>(&kind, &current)
    }
}

impl capabilities::Guest for Export {
    fn requested() -> capabilities::CapabilityRequest {
        tenet_sdk::__adapter::requested::<Misbehave>()
    }
}

impl execution::Guest for Export {
    fn settings() -> execution::RunSettings {
        let mode = std::env::var("MISBEHAVE_SETTINGS").unwrap_or_default();
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mut s = execution::RunSettings {
            max_concurrency: None,
            locks: Vec::new(),
            fixed_env: Vec::new(),
            batched_kinds: Vec::new(),
        };
        match mode.as_str() {
            "ld-preload" => s.fixed_env = owned(&[("LD_PRELOAD", "/tmp/evil.so")]),
            "planted-path" => s.fixed_env = owned(&[("PATH", "/tmp:/usr/bin")]),
            "zero" => s.max_concurrency = Some(0),
            "bad-lock" => s.locks = vec!["../dpkg".into()],
            "phantom-kind" => s.batched_kinds = vec!["nope".into()],
            "batch" => {
                s.batched_kinds = vec!["probe".into()];
                s.locks = vec!["misbehave".into()];
            }
            _ => {}
        }
        s
    }
}

impl batch::Guest for Export {
    fn read_many(kind: String, properties: Vec<String>) -> tenet_sdk::__adapter::ReadMany {
        let mut out = tenet_sdk::__adapter::read_many::<Misbehave>(&kind, &properties)?;
        if properties.iter().any(|p| p.contains("\"short-batch\"")) {
            out.pop();
        }
        Ok(out)
    }
}

tenet_sdk::__bindings::__export_provider_world!(Export with_types_in tenet_sdk::__bindings);
