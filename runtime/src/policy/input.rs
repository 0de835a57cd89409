//! The document policies read as `input` (version [`INPUT_VERSION`]; `tenet policy
//! input` prints it exactly). Every key is always present (`[]`, `{}` or `null`), so no
//! rule hinges on a missing field. Sensitive values are `(sensitive)`: policies never
//! see a secret in clear.
//!
//! ```text
//! tenet:            {input_version, version, stage}        stage: preflight | plan
//! command:          plan | apply | check | …
//! manifest:         {path, sha256, vars, excluded}
//! providers:        NAME → {source, version, component_sha256, provenance,
//!                           grants: {fs, exec, net, env}, requested, missing, limits,
//!                           unsigned, location}    requested: [{capability, reason, granted}]
//!                                                  (what the component asks for; plan stage)
//! resources:        [{id, type, provider, kind, action, desired, current, changes,
//!                     unknown, sensitive, depends_on, labels, orphan, refresh, location}]
//! resource_changes: Terraform's view: [{address, type, provider_name, change:
//!                     {actions, before, after, after_unknown}}]
//! summary:          {create, update, replace, delete, unchanged, refresh, errors}
//! facts:            the host facts the manifest used (`null` when none)
//! run:              {user, host, time, time_ns}
//! ```

use super::Stage;
use crate::manifest::{Manifest, ResourceDecl};
use crate::plan::{Plan, ProviderPin, SENSITIVE};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The input document's version: a new key is additive; a changed meaning is a new
/// version.
pub const INPUT_VERSION: u32 = 1;

/// Who, where and when: what `run` holds.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub user: String,
    pub host: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub time_ns: u128,
}

impl RunFacts {
    /// This process, now.
    pub fn now() -> RunFacts {
        let me = crate::state::Holder::me();
        RunFacts {
            user: me.user,
            host: me.host,
            time: me.since,
            time_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        }
    }
}

/// The input for `stage`: from the manifest alone (preflight), or with the plan and
/// the providers it was computed with.
pub fn build(
    stage: Stage,
    command: Option<&str>,
    m: &Manifest,
    planned: Option<(&Plan, &BTreeMap<String, ProviderPin>)>,
    requested: &BTreeMap<String, Value>,
    run: &RunFacts,
) -> Value {
    let decls: BTreeMap<&str, &ResourceDecl> =
        m.resources.iter().map(|r| (r.id.as_str(), r)).collect();
    let vars: Map<String, Value> = m
        .vars
        .iter()
        .map(|(k, v)| {
            let v = if m.sensitive_vars.contains(k) {
                Value::String(SENSITIVE.into())
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let providers: Map<String, Value> = m
        .providers
        .values()
        .map(|p| {
            let pin = planned.and_then(|(_, pins)| pins.get(&p.name));
            let g = &p.grants;
            let doc = json!({
                "source": p.source.to_string(),
                "version": pin.map(|x| x.version.clone()),
                "component_sha256": pin.map(|x| x.component_sha256.clone()),
                "provenance": pin.and_then(|x| x.provenance.as_ref()).map(provenance),
                "unsigned": p.unsigned,
                "grants": {
                    "fs": g.fs.iter().map(|f| json!({"path": f.path.display().to_string(), "access": f.access.to_string()})).collect::<Vec<_>>(),
                    "exec": g.exec.iter().map(|e| json!({"program": e.program.display().to_string(), "args": e.args, "probe": e.probe})).collect::<Vec<_>>(),
                    "net": g.net.iter().map(|n| json!({"pattern": n.pattern, "scheme": n.scheme, "host": n.host, "port": n.port})).collect::<Vec<_>>(),
                    "env": g.env,
                },
                "missing": pin.map(|x| x.missing.clone()).unwrap_or_default(),
                "requested": requested.get(&p.name).cloned().unwrap_or_else(|| json!([])),
                "limits": {
                    "memory_bytes": p.limits.memory_bytes,
                    "call_timeout_ms": p.limits.call_timeout.as_millis() as u64,
                },
                "max_concurrency": p.max_concurrency,
                "location": location(&p.location),
            });
            (p.name.clone(), doc)
        })
        .collect();
    let labels = |id: &str| -> Value {
        decls
            .get(id)
            .map(|d| json!(d.labels))
            .unwrap_or_else(|| json!({}))
    };
    let place = |id: &str| decls.get(id).map(|d| location(&d.location));
    // Built by moving values, not with `json!` over them: the macro serialises what it
    // is given, which for 10,000 resources is a second copy of the whole plan.
    let (resources, changes, summary): (Vec<Value>, Vec<Value>, Value) = match planned {
        Some((plan, _)) => {
            let mut resources = Vec::with_capacity(plan.resources.len());
            let mut changes = Vec::with_capacity(plan.resources.len());
            for r in plan.resources.iter().map(|r| r.redacted()) {
                let actions: &[&str] = match r.action {
                    crate::provider::Action::None => &["no-op"],
                    crate::provider::Action::Create => &["create"],
                    crate::provider::Action::Update => &["update"],
                    crate::provider::Action::Replace => &["delete", "create"],
                    crate::provider::Action::Delete => &["delete"],
                };
                let after_unknown: Map<String, Value> = r
                    .unknown
                    .iter()
                    .map(|p| (p.trim_start_matches('/').to_owned(), Value::Bool(true)))
                    .collect();
                let after = match r.action {
                    crate::provider::Action::Delete => Value::Null,
                    _ => r.desired.clone(),
                };
                let current = r.current.unwrap_or(Value::Null);
                changes.push(object([
                    ("address", Value::String(r.id.clone())),
                    ("type", Value::String(r.type_name.clone())),
                    ("provider_name", Value::String(r.provider.clone())),
                    (
                        "change",
                        object([
                            ("actions", json!(actions)),
                            ("before", current.clone()),
                            ("after", after),
                            ("after_unknown", Value::Object(after_unknown)),
                        ]),
                    ),
                ]));
                let changes_of: Vec<Value> = r
                    .changes
                    .into_iter()
                    .map(|c| {
                        object([
                            ("path", Value::String(c.path)),
                            ("before", c.before.unwrap_or(Value::Null)),
                            ("after", c.after.unwrap_or(Value::Null)),
                            ("forces_replacement", Value::Bool(c.forces_replacement)),
                        ])
                    })
                    .collect();
                let strings =
                    |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
                resources.push(object([
                    ("labels", labels(&r.id)),
                    ("location", place(&r.id).unwrap_or(Value::Null)),
                    ("action", Value::String(r.action.to_string())),
                    ("id", Value::String(r.id)),
                    ("type", Value::String(r.type_name)),
                    ("provider", Value::String(r.provider)),
                    ("kind", Value::String(r.kind)),
                    ("desired", r.desired),
                    ("current", current),
                    ("changes", Value::Array(changes_of)),
                    ("unknown", strings(r.unknown)),
                    ("sensitive", strings(r.sensitive)),
                    ("depends_on", strings(r.depends_on)),
                    ("orphan", Value::Bool(r.orphan)),
                    ("refresh", Value::Bool(r.refresh)),
                    ("error", r.error.map_or(Value::Null, Value::String)),
                ]));
            }
            (resources, changes, json!(plan.summary))
        }
        None => {
            let resources = m
                .resources
                .iter()
                .map(|d| {
                    object([
                        ("id", Value::String(d.id.clone())),
                        ("type", Value::String(d.type_name.clone())),
                        ("provider", Value::String(d.provider.clone())),
                        ("kind", Value::String(d.kind.clone())),
                        ("action", Value::Null),
                        ("desired", declared(d)),
                        ("current", Value::Null),
                        ("changes", json!([])),
                        ("unknown", json!([])),
                        ("sensitive", json!(hidden(d))),
                        (
                            "depends_on",
                            Value::Array(
                                d.depends_on
                                    .iter()
                                    .map(|x| Value::String(x.id.clone()))
                                    .collect(),
                            ),
                        ),
                        ("labels", json!(d.labels)),
                        ("orphan", Value::Bool(false)),
                        ("refresh", Value::Bool(false)),
                        ("error", Value::Null),
                        ("location", location(&d.location)),
                    ])
                })
                .collect();
            (resources, Vec::new(), Value::Null)
        }
    };
    object([
        (
            "tenet",
            json!({"input_version": INPUT_VERSION, "version": env!("CARGO_PKG_VERSION"), "stage": stage}),
        ),
        ("command", json!(command)),
        (
            "manifest",
            json!({
                "path": m.path.display().to_string(),
                "sha256": m.sha256,
                "vars": vars,
                "excluded": m.excluded.keys().collect::<Vec<_>>(),
            }),
        ),
        ("providers", Value::Object(providers)),
        ("resources", Value::Array(resources)),
        ("resource_changes", Value::Array(changes)),
        ("summary", summary),
        ("facts", m.facts.clone().unwrap_or(Value::Null)),
        (
            "run",
            json!({"user": run.user, "host": run.host, "time": run.time, "time_ns": run.time_ns as u64}),
        ),
    ])
}

/// A JSON object of owned values (moved, not serialised again).
fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A declaration's properties as policies may see them: sensitive ones hidden.
fn declared(d: &ResourceDecl) -> Value {
    let mut props = d.properties.clone();
    let hide = hidden(d);
    if let Some(map) = props.as_object_mut() {
        let all = d.sensitive.iter().any(|s| s == "*");
        for (k, v) in map.iter_mut() {
            if all || hide.iter().any(|h| h == k) {
                *v = Value::String(SENSITIVE.into());
            }
        }
    }
    props
}

/// The properties of a declaration that are sensitive before any provider says so.
fn hidden(d: &ResourceDecl) -> Vec<String> {
    let mut out: Vec<String> = d
        .sensitive
        .iter()
        .chain(&d.sensitive_from_vars)
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

fn provenance(p: &crate::plan::Provenance) -> Value {
    match p {
        crate::plan::Provenance::Builtin => json!({"kind": "builtin"}),
        crate::plan::Provenance::Signed { key_id, key_name } => {
            json!({"kind": "signed", "key_id": key_id, "key_name": key_name})
        }
        crate::plan::Provenance::Unsigned { reason } => {
            json!({"kind": "unsigned", "reason": reason})
        }
    }
}

fn location(l: &crate::diag::Location) -> Value {
    json!({"file": l.file.display().to_string(), "line": l.line, "column": l.column})
}
