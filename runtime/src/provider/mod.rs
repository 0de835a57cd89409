//! The provider contract as the engine sees it: plain Rust types and an async trait.
//! The Wasm implementation lives in `plugin`; `mock` (tests) implements the same trait in
//! memory so the engine is tested without Wasm. Nothing here knows about wasmtime.

pub mod conformance;
/// Test support: not in the release binary (feature `test-support` for other crates).
#[cfg(any(test, feature = "test-support"))]
pub mod mock;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The provider ABI this host implements: `tenet:provider/resources@0.1.x` (0.1.2 adds
/// the optional `batch` and `execution` exports).
pub const ABI_INTERFACE: &str = "tenet:provider/resources";
/// Semver range of `tenet:provider` versions this host can run.
pub const SUPPORTED_ABI: &str = ">=0.1.0, <0.2.0";

/// Compile a kind's JSON Schema. Schemas come from providers, so `pattern`s use the
/// linear-time `regex` engine: a hostile pattern cannot make validation backtrack for
/// minutes.
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| e.to_string())
}

/// One resource kind of a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindInfo {
    pub name: String,
    pub description: String,
    /// JSON Schema of the desired properties.
    pub schema: Value,
    /// The property that identifies the resource on the system.
    pub identity: String,
    /// Properties whose change forces replacement.
    pub force_new: Vec<String>,
    /// Properties holding file-system paths (resolved against the manifest).
    pub path_properties: Vec<String>,
}

/// The annotation by which a kind's schema declares it a health gate: checked on every
/// apply, never a change (`http.check`).
pub const CHECK_ANNOTATION: &str = "x-tenet-check";

impl KindInfo {
    /// Whether the kind is a health gate (its schema says `"x-tenet-check": true`).
    pub fn is_check(&self) -> bool {
        self.schema.get(CHECK_ANNOTATION) == Some(&Value::Bool(true))
    }

    /// Top-level properties the schema marks `"sensitive": true`.
    pub fn sensitive_fields(&self) -> Vec<String> {
        self.schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .filter(|(_, s)| s.get("sensitive") == Some(&Value::Bool(true)))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What a provider says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub kinds: BTreeMap<String, KindInfo>,
}

/// What applying the desired state would do to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    None,
    Create,
    Update,
    Replace,
    Delete,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::None => "none",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        })
    }
}

/// One field that differs between current and desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// JSON pointer into the properties.
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forces_replacement: bool,
}

/// The outcome of `diff`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub action: Action,
    pub changes: Vec<FieldChange>,
}

/// A problem `validate` found in a resource's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyDiagnostic {
    pub is_error: bool,
    /// JSON pointer into the properties.
    pub path: String,
    pub message: String,
}

/// The provider operation in progress; tags logs and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Describe,
    Validate,
    Read,
    Diff,
    Apply,
    Delete,
}

impl Operation {
    /// Whether the operation may change the system (and so gets write access).
    pub fn mutates(self) -> bool {
        matches!(self, Operation::Apply | Operation::Delete)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Describe => "describe",
            Operation::Validate => "validate",
            Operation::Read => "read",
            Operation::Diff => "diff",
            Operation::Apply => "apply",
            Operation::Delete => "delete",
        })
    }
}

/// Why a provider call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    // Reported by the provider itself (the WIT `error` variant).
    InvalidInput,
    NotFound,
    Conflict,
    CapabilityDenied,
    Transient,
    Internal,
    // Detected by the host.
    /// The guest trapped (a panic, an out-of-bounds access, a memory limit).
    Trap,
    /// The call ran past its deadline.
    Timeout,
    /// The guest broke the contract (invalid JSON, oversized output, wrong shape).
    Protocol,
    /// The host could not run the call (instantiation failed, …).
    Host,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::CapabilityDenied => "capability denied",
            ErrorKind::Transient => "transient error",
            ErrorKind::Internal => "provider error",
            ErrorKind::Trap => "provider trapped",
            ErrorKind::Timeout => "deadline exceeded",
            ErrorKind::Protocol => "contract violation",
            ErrorKind::Host => "host error",
        })
    }
}

/// A failed provider call, naming provider, resource and operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider `{provider}` failed to {operation} resource `{resource}`: {kind}: {message}")]
pub struct ProviderError {
    pub provider: String,
    pub resource: String,
    pub operation: Operation,
    pub kind: ErrorKind,
    pub message: String,
}

/// Which resource a call is for; tags the provider's logs and errors.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub resource: &'a str,
}

/// What a provider declares about how it runs (WIT `execution`, since 0.1.2), checked
/// by the host when it was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// Most of its calls in flight at once, below the operator's `max_concurrency`.
    pub max_concurrency: Option<usize>,
    /// Named locks each of its resources holds while it runs (see `locks:` in manifests).
    pub locks: Vec<String>,
    /// Environment set on every program it runs.
    pub fixed_env: Vec<(String, String)>,
    /// Kinds read in batches (`read_many` is one call for many resources).
    pub batched_kinds: BTreeSet<String>,
}

/// What a provider that declares nothing declares.
static NOTHING_DECLARED: Execution = Execution {
    max_concurrency: None,
    locks: Vec::new(),
    fixed_env: Vec::new(),
    batched_kinds: BTreeSet::new(),
};

/// A provider as the engine uses it. Implementations must be safe to call concurrently.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// What `describe` returned when the provider was loaded.
    fn info(&self) -> &ProviderInfo;

    /// How it asks to be scheduled. Default: nothing declared.
    fn execution(&self) -> &Execution {
        &NOTHING_DECLARED
    }

    /// Current state of many resources of one `kind` (`ids[i]` names `properties[i]`),
    /// one result each, in order; the same as [`Provider::read`] for each. The engine
    /// calls it for the kinds [`Execution::batched_kinds`] names. Default: one read each.
    async fn read_many(
        &self,
        ids: &[&str],
        kind: &str,
        properties: &[Value],
    ) -> Vec<Result<Option<Value>, ProviderError>> {
        read_each(self, ids, kind, properties).await
    }

    /// Checks the schema cannot express.
    async fn validate(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        properties: &Value,
    ) -> Result<Vec<PropertyDiagnostic>, ProviderError>;

    /// Current state, or `None` when absent. Must not change the system.
    async fn read(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        properties: &Value,
    ) -> Result<Option<Value>, ProviderError>;

    /// Compare desired properties with the current state. Must not change the system.
    async fn diff(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        desired: &Value,
        current: Option<&Value>,
    ) -> Result<Diff, ProviderError>;

    /// Converge; returns the new current state.
    async fn apply(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        desired: &Value,
        current: Option<&Value>,
    ) -> Result<Value, ProviderError>;

    /// Remove the resource.
    async fn delete(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        current: &Value,
    ) -> Result<(), ProviderError>;
}

/// [`Provider::read`] for each resource in turn: what `read_many` is for a provider (or a
/// kind) that does not batch.
pub async fn read_each<P: Provider + ?Sized>(
    p: &P,
    ids: &[&str],
    kind: &str,
    properties: &[Value],
) -> Vec<Result<Option<Value>, ProviderError>> {
    let mut out = Vec::with_capacity(properties.len());
    for (id, props) in ids.iter().zip(properties) {
        out.push(p.read(CallContext { resource: id }, kind, props).await);
    }
    out
}

#[cfg(test)]
mod sensitive_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_properties_marked_sensitive_are_found() {
        let k = KindInfo {
            name: "secret".into(),
            description: String::new(),
            schema: json!({"type": "object", "properties": {
                "name": {"type": "string"},
                "password": {"type": "string", "sensitive": true},
                "token": {"type": "string", "sensitive": false}
            }}),
            identity: "name".into(),
            force_new: vec![],
            path_properties: vec![],
        };
        assert_eq!(k.sensitive_fields(), vec!["password".to_owned()]);
    }
}

/// What a provider says it needs (`capabilities.requested`) plus its capability-bearing
/// imports. Declaring grants nothing; it is shown beside the grants so the operator sees
/// what is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Requested {
    pub directories: Vec<DirectoryRequest>,
    pub programs: Vec<ProgramRequest>,
    pub hosts: Vec<HostRequest>,
    pub env: Vec<EnvRequest>,
    /// Imports that need a grant (`tenet:host/exec`, `wasi:http/outgoing-handler`).
    pub imports: Vec<String>,
    /// The `tenet:provider` version the component exports.
    #[serde(default)]
    pub abi: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectoryRequest {
    pub path: String,
    pub write: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgramRequest {
    pub program: String,
    pub probe: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostRequest {
    pub origin: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvRequest {
    pub name: String,
    pub reason: String,
}

impl Requested {
    /// What the component can ask for, one sorted line each (`import tenet:host/exec@0.1.1`,
    /// `fs rw /etc/app`, `exec /usr/bin/systemctl (probe)`, `net https://api`, `env LANG`):
    /// recorded in `tenet.lock`, compared by `tenet lock --upgrade`.
    pub fn summary(&self) -> Vec<String> {
        let mut out: Vec<String> = self.imports.iter().map(|i| format!("import {i}")).collect();
        out.extend(
            self.directories
                .iter()
                .map(|d| format!("fs {} {}", if d.write { "rw" } else { "ro" }, d.path)),
        );
        out.extend(self.programs.iter().map(|p| {
            format!(
                "exec {}{}",
                p.program,
                if p.probe { " (probe)" } else { "" }
            )
        }));
        out.extend(self.hosts.iter().map(|h| format!("net {}", h.origin)));
        out.extend(self.env.iter().map(|e| format!("env {}", e.name)));
        out.sort();
        out.dedup();
        out
    }
}
