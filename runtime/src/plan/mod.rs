//! Plans: the resolved, deterministic artifact between a manifest and a change. A plan
//! records, in execution order, every resource's desired properties, the observed state
//! it was computed from (and its digest, so a saved plan can refuse to apply once the
//! system moved) and the action with its field changes. Serialisable (`plan --out`,
//! `plan --json`); `format_version` changes whenever the format does.

pub mod file;
pub mod policy;

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
    /// Resources whose `when:` condition is false: not planned, not managed this run (and
    /// not deleted: the system keeps them as they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    pub summary: Summary,
    /// What the manifest's policies decided: the preflight stage, then the plan stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<policy::Decision>,
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
    pub provenance: Option<Provenance>,
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
    /// Named locks it holds while it changes (`locks:` in the manifest), besides its
    /// provider's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<String>,
    /// How the run orchestrates it beyond its dependencies (empty for most).
    #[serde(flatten)]
    pub orchestration: Orchestration,
}

/// What a run does with a resource beyond "after what it depends on": `retry:`,
/// `timeout:`, `on_failure:`, `serial:`, health gates and deferred planning. Empty (the
/// default) for most resources; flattened into the resource in plan files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Orchestration {
    /// How a failure its provider marks transient is tried again (`retry:`, or its
    /// provider's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::manifest::orchestrate::Retry>,
    /// `timeout:`, in milliseconds: one deadline for all its attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A failure handler: runs only if one of these fails in the run (`on_failure:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure_of: Vec<String>,
    /// Its place in a rolling group (`serial:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling: Option<crate::manifest::orchestrate::Rolling>,
    /// A health gate (its kind's schema says `x-tenet-check`): checked again on every
    /// apply, after what it depends on, and never a change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check: bool,
    /// Could not be read while a health check it depends on is waiting (its service is
    /// not up yet): read and diffed during the apply, once the check passed. Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<String>,
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
    /// Failure handlers (`on_failure:`): they run only if what they watch fails.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conditional: usize,
    /// Health gates not passing now: apply waits for them (not a change).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait: usize,
    /// Resources planned during the apply, once the checks they depend on pass.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferred: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    pub fn of(resources: &[PlannedResource]) -> Summary {
        let mut s = Summary::default();
        for r in resources {
            if r.error.is_some() {
                s.errors += 1;
                continue;
            }
            if !r.orchestration.on_failure_of.is_empty() {
                s.conditional += 1;
                continue;
            }
            if r.orchestration.deferred.is_some() {
                s.deferred += 1;
                continue;
            }
            if r.orchestration.check {
                if r.action == Action::None {
                    s.unchanged += 1;
                } else {
                    s.wait += 1;
                }
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
        self.create + self.update + self.replace + self.delete + self.refresh + self.deferred
    }
}

impl Plan {
    /// Whether a policy result stops this plan from being applied.
    pub fn denied(&self) -> bool {
        self.policy.iter().any(policy::Decision::blocked)
    }

    pub fn has_changes(&self) -> bool {
        self.summary.changes() > 0
    }

    pub fn has_errors(&self) -> bool {
        self.summary.errors > 0
    }
}

/// Why the provider's code may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Provenance {
    /// Part of the `tenet` binary.
    Builtin,
    /// Signed by a trusted key.
    Signed { key_id: String, key_name: String },
    /// Runs without a signature: `reason` says who allowed it.
    Unsigned { reason: String },
}

impl Provenance {
    pub fn signer(&self) -> Option<&str> {
        match self {
            Provenance::Signed { key_id, .. } => Some(key_id),
            _ => None,
        }
    }
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provenance::Builtin => f.write_str("built into tenet"),
            Provenance::Signed { key_id, key_name } if key_name == key_id => {
                write!(f, "signed by trusted key {key_id}")
            }
            Provenance::Signed { key_id, key_name } => {
                write!(f, "signed by trusted key {key_id} ({key_name})")
            }
            Provenance::Unsigned { reason } => write!(f, "UNSIGNED ({reason})"),
        }
    }
}

/// Why a saved plan cannot be applied as it stands, per resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The system or the state moved since the plan was made: plan again.
    Stale { id: String, reason: String },
    /// The plan file says something the manifest does not: it was edited after it was
    /// made (or made with other variables). Applying it would apply what nobody planned.
    Altered { id: String, what: String },
}

/// Compare a saved plan with the plan the same manifest produces now. The saved file is
/// only ever compared, never applied: what runs is `fresh`, which must match what was
/// reviewed field for field (sensitive values compared as their redaction, since a plan
/// file never holds them). Empty when the saved plan is exactly what would run.
pub fn check_saved(saved: &Plan, fresh: &Plan) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let saved_by_id: BTreeMap<&str, &PlannedResource> =
        saved.resources.iter().map(|r| (r.id.as_str(), r)).collect();
    let fresh_by_id: BTreeMap<&str, &PlannedResource> =
        fresh.resources.iter().map(|r| (r.id.as_str(), r)).collect();
    for (id, s) in &saved_by_id {
        if !fresh_by_id.contains_key(id) {
            out.push(if s.orphan {
                Mismatch::Stale {
                    id: id.to_string(),
                    reason: "the state no longer remembers it".into(),
                }
            } else {
                Mismatch::Altered {
                    id: id.to_string(),
                    what: "the manifest does not declare it".into(),
                }
            });
        }
    }
    for f in &fresh.resources {
        let Some(s) = saved_by_id.get(f.id.as_str()) else {
            out.push(if f.orphan {
                Mismatch::Stale {
                    id: f.id.clone(),
                    reason: "the state remembers it now (another run applied it since)".into(),
                }
            } else {
                Mismatch::Altered {
                    id: f.id.clone(),
                    what: "the plan file leaves it out".into(),
                }
            });
            continue;
        };
        if s.current_sha256 != f.current_sha256 {
            let reason = match (&s.current_sha256, &f.current_sha256) {
                (None, Some(_)) => "it was absent at plan time and now exists",
                (Some(_), None) => "it existed at plan time and is now gone",
                _ => "its observed state changed since the plan was made",
            };
            out.push(Mismatch::Stale {
                id: f.id.clone(),
                reason: reason.into(),
            });
            continue;
        }
        let (s, f) = (s.redacted(), f.redacted());
        let fields: [(&str, bool); 19] = [
            ("type", s.type_name == f.type_name),
            ("provider", s.provider == f.provider),
            ("kind", s.kind == f.kind),
            ("action", s.action == f.action),
            ("desired properties", s.desired == f.desired),
            ("changes", s.changes == f.changes),
            ("dependencies", s.depends_on == f.depends_on),
            ("values known after apply", s.unknown == f.unknown),
            ("notifiers", s.notified_by == f.notified_by),
            ("refresh", s.refresh == f.refresh),
            ("deletion as an orphan", s.orphan == f.orphan),
            ("sensitive fields", s.sensitive == f.sensitive),
            ("error", s.error == f.error),
            ("retries", s.orchestration.retry == f.orchestration.retry),
            (
                "timeout",
                s.orchestration.timeout_ms == f.orchestration.timeout_ms,
            ),
            (
                "failure handling",
                s.orchestration.on_failure_of == f.orchestration.on_failure_of,
            ),
            (
                "rolling group",
                s.orchestration.rolling == f.orchestration.rolling,
            ),
            (
                "health check",
                s.orchestration.check == f.orchestration.check,
            ),
            (
                "deferral",
                s.orchestration.deferred.is_some() == f.orchestration.deferred.is_some(),
            ),
        ];
        if let Some((what, _)) = fields.iter().find(|(_, same)| !same) {
            out.push(Mismatch::Altered {
                id: f.id.clone(),
                what: format!("its planned {what} differ from what the manifest produces"),
            });
        }
    }
    let order = |p: &Plan| p.resources.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    if out.is_empty() && order(saved) != order(fresh) {
        out.push(Mismatch::Altered {
            id: "(plan)".into(),
            what: "the order of execution differs from the manifest's".into(),
        });
    }
    if saved.forget != fresh.forget {
        out.push(Mismatch::Altered {
            id: "(plan)".into(),
            what: "the resources it forgets differ from what the manifest produces".into(),
        });
    }
    out
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

    fn resource(id: &str, desired: Value) -> PlannedResource {
        PlannedResource {
            id: id.into(),
            type_name: "file.file".into(),
            provider: "file".into(),
            kind: "file".into(),
            action: Action::Create,
            changes: Vec::new(),
            desired,
            current: None,
            current_sha256: None,
            depends_on: Vec::new(),
            error: None,
            unknown: Vec::new(),
            notified_by: Vec::new(),
            refresh: false,
            orphan: false,
            sensitive: vec!["content".into()],
            locks: Vec::new(),
            orchestration: Default::default(),
        }
    }

    fn plan(resources: Vec<PlannedResource>) -> Plan {
        Plan {
            format_version: FORMAT_VERSION,
            tenet_version: "test".into(),
            manifest: ManifestRef {
                path: "tenet.yaml".into(),
                sha256: "00".into(),
            },
            providers: BTreeMap::new(),
            summary: Summary::of(&resources),
            excluded: Vec::new(),
            resources,
            forget: Vec::new(),
            policy: Vec::new(),
        }
    }

    #[test]
    fn a_saved_plan_must_be_what_the_manifest_plans() {
        let fresh = plan(vec![
            resource("a", json!({"path": "/x/a", "content": "s3cret"})),
            resource("b", json!({"path": "/x/b", "content": "b"})),
        ]);
        // As saved: sensitive values redacted. That is the same plan.
        let saved = fresh.redacted();
        assert_eq!(check_saved(&saved, &fresh), Vec::new());

        // Regression (issue 12): an edited desired document is refused, naming it.
        let mut edited = saved.clone();
        edited.resources[1].desired["path"] = json!("/etc/cron.d/evil");
        assert_eq!(
            check_saved(&edited, &fresh),
            vec![Mismatch::Altered {
                id: "b".into(),
                what: "its planned desired properties differ from what the manifest produces"
                    .into()
            }]
        );
        let mut action = saved.clone();
        action.resources[0].action = Action::Delete;
        assert!(
            matches!(&check_saved(&action, &fresh)[..], [Mismatch::Altered { id, .. }] if id == "a")
        );
        let mut dropped = saved.clone();
        dropped.resources.pop();
        assert!(
            matches!(&check_saved(&dropped, &fresh)[..], [Mismatch::Altered { id, .. }] if id == "b")
        );
        // The system moving is staleness, not tampering.
        let mut moved = saved.clone();
        moved.resources[0].current_sha256 = Some("ab".into());
        assert!(
            matches!(&check_saved(&moved, &fresh)[..], [Mismatch::Stale { id, .. }] if id == "a")
        );
    }

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
