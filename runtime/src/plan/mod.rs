//! Plans: the resolved, deterministic artifact between a manifest and a change. A plan
//! records, in execution order, every resource's desired properties, the observed state
//! it was computed from (and its digest, so a saved plan can refuse to apply once the
//! system moved) and the action with its field changes. Serialisable (`plan --out`,
//! `plan --json`); `format_version` changes whenever the format does.

use crate::provider::{Action, FieldChange};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Version of the plan format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// A computed plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    /// Version of Tenet that computed it.
    pub tenet_version: String,
    pub manifest: ManifestRef,
    pub providers: BTreeMap<String, ProviderPin>,
    /// In execution order: every resource after what it depends on.
    pub resources: Vec<PlannedResource>,
    /// Resources that left the manifest with `on_remove: forget`: dropped from the state,
    /// the system left as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forget: Vec<String>,
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRef {
    pub path: String,
    pub sha256: String,
}

/// The exact provider a plan was computed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderPin {
    pub source: String,
    pub version: String,
    pub component_sha256: String,
    /// Why its code may run: built in, signed by a trusted key, or unsigned and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::source::Provenance>,
    /// What the provider may do, one line per grant (`fs rw /srv`, `exec …`, `net …`).
    #[serde(default)]
    pub granted: Vec<String>,
    /// What the provider asked for and was not granted, with its reason.
    #[serde(default)]
    pub missing: Vec<String>,
}

/// One resource in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedResource {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub provider: String,
    pub kind: String,
    pub action: Action,
    pub changes: Vec<FieldChange>,
    pub desired: Value,
    pub current: Option<Value>,
    /// sha256 of the canonical JSON of `current`; none when absent.
    pub current_sha256: Option<String>,
    pub depends_on: Vec<String>,
    /// Why the resource could not be planned; it fails when the plan is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// JSON pointers of desired properties known only after apply (they reference a
    /// value another resource computes); `desired` holds their reference text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
    /// Resources whose change in this run refreshes this one (`notify`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notified_by: Vec<String>,
    /// Planned to be refreshed: unchanged itself, but a resource that notifies it has
    /// changes in this plan (the refresh happens only if that change succeeds).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
    /// No longer in the manifest: remembered by the state, planned for deletion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub orphan: bool,
    /// Top-level properties whose values are sensitive: shown and saved as
    /// [`SENSITIVE`], stored in the state only as salted hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
}

/// What is shown (and saved in plan files) instead of a sensitive value.
pub const SENSITIVE: &str = "(sensitive)";

impl PlannedResource {
    /// A copy fit to show or save: sensitive values in `desired`, `current` and the
    /// changes replaced by [`SENSITIVE`].
    pub fn redacted(&self) -> PlannedResource {
        let mut r = self.clone();
        if r.sensitive.is_empty() {
            return r;
        }
        let hide = |doc: &mut Value, fields: &[String]| {
            if let Some(map) = doc.as_object_mut() {
                for f in fields {
                    if let Some(v) = map.get_mut(f) {
                        *v = Value::String(SENSITIVE.into());
                    }
                }
            }
        };
        hide(&mut r.desired, &self.sensitive);
        if let Some(c) = r.current.as_mut() {
            hide(c, &self.sensitive);
        }
        for c in &mut r.changes {
            let top = c
                .path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("");
            if self.sensitive.iter().any(|f| f == top) {
                for v in [&mut c.before, &mut c.after].into_iter().flatten() {
                    *v = Value::String(SENSITIVE.into());
                }
            }
        }
        r
    }
}

impl Plan {
    /// The plan with every sensitive value hidden (for output and plan files).
    pub fn redacted(&self) -> Plan {
        Plan {
            resources: self
                .resources
                .iter()
                .map(PlannedResource::redacted)
                .collect(),
            ..self.clone()
        }
    }
}

/// Counts per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub unchanged: usize,
    /// Unchanged resources that will be refreshed because a notifier changes.
    #[serde(default)]
    pub refresh: usize,
    pub errors: usize,
}

impl Summary {
    pub fn of(resources: &[PlannedResource]) -> Summary {
        let mut s = Summary::default();
        for r in resources {
            if r.error.is_some() {
                s.errors += 1;
                continue;
            }
            match r.action {
                Action::None if r.refresh => s.refresh += 1,
                Action::None => s.unchanged += 1,
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
            }
        }
        s
    }

    pub fn changes(&self) -> usize {
        self.create + self.update + self.replace + self.delete + self.refresh
    }
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.summary.changes() > 0
    }

    pub fn has_errors(&self) -> bool {
        self.summary.errors > 0
    }
}

/// sha256 of a document's canonical JSON (object keys sorted), so equal states have equal
/// digests whatever order a provider wrote their fields in.
pub fn digest(value: &Value) -> String {
    hex::encode(Sha256::digest(canonical(value).as_bytes()))
}

/// Canonical JSON text: object keys sorted at every level, no whitespace.
pub fn canonical(value: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_ignores_key_order() {
        let a = json!({"b": 1, "a": {"y": 2, "x": [3, {"q": 1, "p": 2}]}});
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": [3, {"p": 2, "q": 1}], "y": 2}, "b": 1}"#)
                .expect("json");
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&json!({"b": 2})));
    }
}
