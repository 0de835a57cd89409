//! The bookkeeping every run shares: recording an apply resource by resource and as a
//! chained run record (with a snapshot of its manifest to roll back to), recording a
//! plan, recovering what a killed run left in the journal, finding what the state
//! remembers that the manifest no longer declares, telling corrective changes from
//! intentional ones, and pruning the history.

use crate::engine::{ApplyReport, Orphan, Outcome};
use crate::manifest::Manifest;
use crate::manifest::scrub;
use crate::plan::Plan;
use crate::state::{
    GitInfo, Holder, JournalEntry, Pruned, ResourceOutcome, Retention, RunRecord, StateError,
    StateStore, StoredResource, seal_fields,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The manifest's files and variables: enough to plan it again later. Sensitive
/// variables are sealed; a rollback asks for them again. Sensitive values written
/// literally in the files are cut out (`redacted`: such a run cannot be rolled back to).
fn snapshot(m: &Manifest, salt: &str, plan: &Plan) -> Value {
    // By id, once: looked up per resource below (a scan each would be quadratic).
    let decls: BTreeMap<&str, &crate::manifest::ResourceDecl> = m
        .resources
        .iter()
        .chain(&m.excluded_resources)
        .map(|d| (d.id.as_str(), d))
        .collect();
    let planned: BTreeMap<&str, &crate::plan::PlannedResource> =
        plan.resources.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut literals: Vec<String> = Vec::new();
    for r in plan.resources.iter().filter(|r| !r.sensitive.is_empty()) {
        if let Some(decl) = decls.get(r.id.as_str()) {
            for f in &r.sensitive {
                if let Some(Value::String(s)) = decl.properties.get(f)
                    && s.len() >= 3
                {
                    literals.push(s.clone());
                }
            }
        }
    }
    let mut redacted = false;
    // Sensitive per resource: what the plan found (schema, `sensitive:`, variables), and
    // whether the manifest itself declared it so.
    let sensitive_props = |id: &str| -> Vec<scrub::SensitiveField> {
        // A resource written once with `for_each` / `count` is planned as instances
        // `id[key]`: its text holds what any instance's properties hold.
        let prefix = format!("{id}[");
        let id = match decls.contains_key(id) {
            true => id,
            false => decls
                .range::<str, _>((
                    std::ops::Bound::Included(prefix.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .map(|(k, _)| *k)
                .filter(|k| k.starts_with(&prefix))
                .unwrap_or(id),
        };
        let declared = decls.get(id).map_or(&[][..], |d| d.sensitive.as_slice());
        match planned.get(id) {
            Some(r) => r
                .sensitive
                .iter()
                .map(|f| (f.clone(), declared.iter().any(|d| d == f || d == "*")))
                .collect(),
            // Not planned (its `when:` is false): what its declaration says.
            None => decls
                .get(id)
                .map(|d| {
                    d.sensitive
                        .iter()
                        .map(|f| (f.clone(), true))
                        .chain(d.sensitive_from_vars.iter().map(|f| (f.clone(), false)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    };
    let mut files: BTreeMap<String, String> = m
        .files
        .iter()
        .map(|f| {
            let abs = crate::manifest::load::absolute(Path::new("."), f);
            let name = abs
                .strip_prefix(&m.base_dir)
                .unwrap_or(&abs)
                .display()
                .to_string();
            let original = m.sources.get(f).cloned().unwrap_or_default();
            let (defaults, props) = match crate::manifest::yaml::parse(f, &original) {
                Ok((doc, _)) => {
                    scrub::sensitive_pointers(&doc, &m.sensitive_vars, &sensitive_props)
                }
                // It parsed when loaded; if not now, nothing of it is kept.
                Err(_) => (vec!["/".to_owned()], Vec::new()),
            };
            let scrubbed = scrub::scrub(f, &original, &defaults, &props);
            redacted |= scrubbed.literal_cut || scrubbed.withheld;
            let mut text = scrubbed.text;
            // Any other place the same literal secret was typed (a comment, a copy).
            for secret in &literals {
                if text.contains(secret.as_str()) {
                    text = text.replace(secret.as_str(), crate::plan::SENSITIVE);
                    redacted = true;
                }
            }
            (name, text)
        })
        .collect();
    // The modules it called, by their path under the manifest's directory: a literal
    // secret typed in one (an input's default) is cut like any other.
    for (name, text) in &m.module_files {
        let mut text = text.clone();
        for secret in &literals {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), crate::plan::SENSITIVE);
                redacted = true;
            }
        }
        files.insert(name.clone(), text);
    }
    // The templates it rendered: a rollback renders them as they were.
    let mut templates: BTreeMap<String, String> = BTreeMap::new();
    for (name, text) in &m.template_files {
        let mut text = text.clone();
        for secret in &literals {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), crate::plan::SENSITIVE);
                redacted = true;
            }
        }
        templates.insert(name.clone(), text);
    }
    let vars: BTreeMap<&String, Value> = m
        .vars
        .iter()
        .map(|(k, v)| {
            let v = if m.sensitive_vars.contains(k) {
                crate::state::seal(salt, v)
            } else {
                v.clone()
            };
            (k, v)
        })
        .collect();
    let mut snap = json!({"files": files, "templates": templates, "vars": vars, "sensitive_vars": m.sensitive_vars, "redacted": redacted});
    // The facts the run saw: an audit and a rollback show what the host looked like.
    if let (Some(facts), Some(map)) = (&m.facts, snap.as_object_mut()) {
        map.insert("facts".into(), facts.clone());
    }
    // Likewise the layered data it looked values up in (its files are not recorded),
    // with every value that went into a sensitive property cut out.
    if let Some(data) = &m.data {
        let (value, cut) = cut_literals(&data.value, &literals);
        if cut && let Some(map) = snap.as_object_mut() {
            map.insert("redacted".into(), Value::Bool(true));
        }
        if let Some(map) = snap.as_object_mut() {
            map.insert("data".into(), value);
        }
    }
    snap
}

/// `value` with every string holding one of `secrets` replaced; whether any was.
fn cut_literals(value: &Value, secrets: &[String]) -> (Value, bool) {
    match value {
        Value::String(s) if secrets.iter().any(|x| s.contains(x.as_str())) => {
            (Value::String(crate::plan::SENSITIVE.to_owned()), true)
        }
        Value::Array(items) => {
            let mut cut = false;
            let items = items
                .iter()
                .map(|v| {
                    let (v, c) = cut_literals(v, secrets);
                    cut |= c;
                    v
                })
                .collect();
            (Value::Array(items), cut)
        }
        Value::Object(m) => {
            let mut cut = false;
            let m = m
                .iter()
                .map(|(k, v)| {
                    let (v, c) = cut_literals(v, secrets);
                    cut |= c;
                    (k.clone(), v)
                })
                .collect();
            (Value::Object(m), cut)
        }
        other => (other.clone(), false),
    }
}

pub(crate) fn outcome_name(o: &Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.get("outcome").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Whether each change of `plan` is `corrective` (the desired properties are those of
/// the last apply: the system drifted) or `intentional` (new or changed in the manifest,
/// or removed from it) — Puppet's distinction, kept in the history.
pub fn change_kinds(
    store: &dyn StateStore,
    plan: &Plan,
) -> Result<BTreeMap<String, &'static str>, StateError> {
    let mut out = BTreeMap::new();
    let salt = store.salt()?;
    for r in &plan.resources {
        if r.action == crate::provider::Action::None || r.error.is_some() {
            continue;
        }
        let corrective = !r.orphan
            && store.resource(&r.id)?.is_some_and(|s| {
                crate::plan::digest(&s.desired)
                    == crate::plan::digest(&seal_fields(&salt, &r.desired, &r.sensitive))
            });
        out.insert(
            r.id.clone(),
            if corrective {
                "corrective"
            } else {
                "intentional"
            },
        );
    }
    Ok(out)
}

/// A run record of `command` for `manifest`, by this user on this host, finished now;
/// the caller fills in what the run found (and the git commit, which costs two `git`
/// processes).
pub fn record_of(command: &str, manifest: &Manifest, started_at: &str) -> RunRecord {
    let holder = Holder::me();
    RunRecord {
        command: command.to_owned(),
        rollback_of: None,
        manifest_path: manifest.path.display().to_string(),
        manifest_sha256: manifest.sha256.clone(),
        manifest_snapshot: json!({}),
        snapshot_sha256: None,
        git: None,
        user: holder.user,
        host: holder.host,
        started_at: started_at.to_owned(),
        finished_at: crate::state::now(),
        succeeded: true,
        resources: Vec::new(),
        steady: None,
        policy: Vec::new(),
        artifact: manifest.artifact.clone(),
    }
}

/// Apply `keep` to the history (`tenet state prune`, and the agent after each run):
/// under the run lock, waiting up to `lock_timeout` for a run in progress.
pub fn prune(
    store: Arc<dyn StateStore>,
    keep: Retention,
    lock_timeout: std::time::Duration,
) -> Result<Pruned, StateError> {
    let lock = crate::state::RunLock::take(store, lock_timeout)?;
    lock.store().prune(keep, std::time::SystemTime::now())
}

/// What one finished resource means for the state.
enum Bookkeeping {
    Put(Box<StoredResource>),
    Remove(String),
    Nothing,
}

/// What the state records of a resource besides its plan: taken from the manifest and
/// the plan once, and owned, so a journal writing off the async runtime can carry it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    manifest: String,
    provider_version: String,
    component_sha256: String,
    /// `prevent_destroy` and `forget_on_remove` as declared (`None`: no longer declared,
    /// an orphan: what the state remembered holds).
    declared: Option<(bool, bool)>,
}

/// A run's manifest and plan with their resources by id, built once per run so that
/// recording each finished resource is a lookup, not a scan.
pub struct RunIndex<'a> {
    planned: BTreeMap<&'a str, &'a crate::plan::PlannedResource>,
    facts: BTreeMap<&'a str, Facts>,
}

impl<'a> RunIndex<'a> {
    pub fn new(manifest: &'a Manifest, plan: &'a Plan) -> Self {
        let declared: BTreeMap<&str, &crate::manifest::ResourceDecl> = manifest
            .resources
            .iter()
            .map(|r| (r.id.as_str(), r))
            .collect();
        let path = manifest.path.display().to_string();
        RunIndex {
            planned: plan.resources.iter().map(|r| (r.id.as_str(), r)).collect(),
            facts: plan
                .resources
                .iter()
                .map(|p| {
                    let pin = plan.providers.get(&p.provider);
                    (
                        p.id.as_str(),
                        Facts {
                            manifest: path.clone(),
                            provider_version: pin.map(|p| p.version.clone()).unwrap_or_default(),
                            component_sha256: pin
                                .map(|p| p.component_sha256.clone())
                                .unwrap_or_default(),
                            declared: declared
                                .get(p.id.as_str())
                                .map(|d| (d.prevent_destroy, d.forget_on_remove)),
                        },
                    )
                })
                .collect(),
        }
    }

    /// What the state records of `id` besides its plan.
    pub(crate) fn facts(&self, id: &str) -> Facts {
        self.facts.get(id).cloned().unwrap_or_default()
    }

    /// Every resource's facts, owned (for a journal that outlives the borrow).
    pub(crate) fn owned_facts(&self) -> BTreeMap<String, Facts> {
        self.facts
            .iter()
            .map(|(id, f)| ((*id).to_owned(), f.clone()))
            .collect()
    }
}

/// The state's change for one finished resource: put (with the previous record's
/// `changed_at` kept when nothing changed), remove, or nothing.
fn bookkeeping(
    previous: Option<StoredResource>,
    facts: &Facts,
    p: &crate::plan::PlannedResource,
    r: &crate::engine::ResourceResult,
    salt: &str,
    now: &str,
) -> Bookkeeping {
    match &r.outcome {
        Outcome::Deleted => Bookkeeping::Remove(r.id.clone()),
        // An orphan that was already gone (or renamed): nothing to delete or remember.
        Outcome::Unchanged if p.orphan => Bookkeeping::Remove(r.id.clone()),
        Outcome::Created
        | Outcome::Updated
        | Outcome::Replaced
        | Outcome::Refreshed
        | Outcome::Checked
        | Outcome::Unchanged => {
            let changed = !matches!(r.outcome, Outcome::Unchanged | Outcome::Checked);
            let remembered = |f: fn(&StoredResource) -> bool| previous.as_ref().is_some_and(f);
            Bookkeeping::Put(Box::new(StoredResource {
                id: r.id.clone(),
                type_name: r.type_name.clone(),
                provider: p.provider.clone(),
                provider_version: facts.provider_version.clone(),
                component_sha256: facts.component_sha256.clone(),
                desired: seal_fields(salt, &p.desired, &p.sensitive),
                observed: r
                    .state
                    .clone()
                    .or_else(|| p.current.clone())
                    .map(|o| seal_fields(salt, &o, &p.sensitive)),
                sensitive: p.sensitive.clone(),
                manifest: facts.manifest.clone(),
                changed_at: match &previous {
                    Some(prev) if !changed => prev.changed_at.clone(),
                    _ => now.to_owned(),
                },
                prevent_destroy: facts
                    .declared
                    .map_or_else(|| remembered(|p| p.prevent_destroy), |d| d.0),
                forget_on_remove: facts
                    .declared
                    .map_or_else(|| remembered(|p| p.forget_on_remove), |d| d.1),
            }))
        }
        // A failure handler that did not run has nothing to remember.
        Outcome::Failed { .. }
        | Outcome::Skipped { .. }
        | Outcome::NotStarted { .. }
        | Outcome::NotTriggered { .. } => Bookkeeping::Nothing,
    }
}

/// Write one finished resource's state right away (so a run killed later loses no
/// finished work), and mark its journal entry done with its outcome. Synchronous: the
/// run's journal calls it off the async runtime.
pub(crate) fn remember_one(
    store: &dyn StateStore,
    facts: &Facts,
    planned: &crate::plan::PlannedResource,
    r: &crate::engine::ResourceResult,
    salt: &str,
) -> Result<(), StateError> {
    let previous = store.resource(&r.id)?;
    match bookkeeping(previous, facts, planned, r, salt, &crate::state::now()) {
        Bookkeeping::Put(s) => store.put_resources(std::slice::from_ref(&*s))?,
        Bookkeeping::Remove(id) => store.remove_resources(&[id])?,
        Bookkeeping::Nothing => {}
    }
    store.journal_finish(&r.id, &outcome_name(&r.outcome))
}

/// Record an apply: the resources it converged (or deleted) and a chained run record.
/// Returns the run's sequence number.
pub fn remember(
    store: &dyn StateStore,
    manifest: &Manifest,
    plan: &Plan,
    report: &ApplyReport,
    started_at: &str,
    kinds: &BTreeMap<String, &'static str>,
    rollback_of: Option<u64>,
) -> Result<u64, StateError> {
    let idx = RunIndex::new(manifest, plan);
    let now = crate::state::now();
    let salt = store.salt()?;
    // Read once; a resource whose record would not change is not written again.
    let mut known: BTreeMap<String, StoredResource> = store
        .resources()?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let mut put = Vec::new();
    let mut removed = Vec::new();
    let mut outcomes = Vec::new();
    for r in &report.results {
        let p = idx.planned.get(r.id.as_str());
        outcomes.push(ResourceOutcome {
            id: r.id.clone(),
            type_name: r.type_name.clone(),
            outcome: outcome_name(&r.outcome),
            changed_fields: match &r.outcome {
                Outcome::Created | Outcome::Updated | Outcome::Replaced => p
                    .map(|p| p.changes.iter().map(|c| c.path.clone()).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            },
            error: match &r.outcome {
                Outcome::Failed { error } => Some(error.clone()),
                Outcome::Skipped { upstream } => Some(format!("skipped: `{upstream}` failed")),
                Outcome::NotStarted { reason } => Some(reason.clone()),
                _ => None,
            },
            duration_ms: crate::engine::millis(r.duration),
            change: match &r.outcome {
                Outcome::Created | Outcome::Updated | Outcome::Replaced | Outcome::Deleted => {
                    kinds.get(&r.id).map(|k| (*k).to_owned())
                }
                _ => None,
            },
            attempts: (!r.retried.is_empty()).then(|| r.attempts()),
            retried: r.retried.iter().map(|a| a.error.clone()).collect(),
        });
        let Some(p) = p else { continue };
        let previous = known.remove(&r.id);
        match bookkeeping(previous.clone(), &idx.facts(&r.id), p, r, &salt, &now) {
            Bookkeeping::Put(s) if previous.as_ref() == Some(&*s) => {}
            Bookkeeping::Put(s) => put.push(*s),
            Bookkeeping::Remove(id) => removed.push(id),
            Bookkeeping::Nothing => {}
        }
    }
    removed.extend(plan.forget.iter().cloned());
    store.put_resources(&put)?;
    store.remove_resources(&removed)?;
    let record = RunRecord {
        rollback_of,
        manifest_snapshot: snapshot(manifest, &salt, plan),
        git: GitInfo::of(&manifest.base_dir),
        finished_at: now,
        succeeded: report.succeeded(),
        resources: outcomes,
        policy: plan.policy.clone(),
        ..record_of(
            if rollback_of.is_some() {
                "rollback"
            } else {
                "apply"
            },
            manifest,
            started_at,
        )
    };
    let seq = store.append_run(&record)?;
    // Recorded: what the journal kept for a crash is no longer needed.
    store.journal_clear()?;
    Ok(seq)
}

/// Record a plan: what it found for each resource (`create`, `update`, … or
/// `unchanged`, `error`). Plans change nothing, so the state's resources are left alone.
pub fn remember_plan(
    store: &dyn StateStore,
    manifest: &Manifest,
    plan: &Plan,
    started_at: &str,
) -> Result<u64, StateError> {
    let record = RunRecord {
        manifest_snapshot: snapshot(manifest, &store.salt()?, plan),
        git: GitInfo::of(&manifest.base_dir),
        succeeded: !plan.has_errors() && !plan.denied(),
        policy: plan.policy.clone(),
        resources: plan
            .resources
            .iter()
            .map(|r| ResourceOutcome {
                id: r.id.clone(),
                type_name: r.type_name.clone(),
                outcome: match (&r.error, r.action) {
                    (Some(_), _) => "error".into(),
                    (None, crate::provider::Action::None) if r.refresh => "refresh".into(),
                    (None, crate::provider::Action::None) => "unchanged".into(),
                    (None, a) => a.to_string(),
                },
                changed_fields: r.changes.iter().map(|c| c.path.clone()).collect(),
                error: r.error.clone(),
                duration_ms: 0.0,
                change: None,
                attempts: None,
                retried: Vec::new(),
            })
            .collect(),
        ..record_of("plan", manifest, started_at)
    };
    store.append_run(&record)
}

/// An apply a policy refused: nothing changed, recorded with the decisions (and the
/// manifest it was refused for) as a failed run.
pub fn remember_denied(
    store: &dyn StateStore,
    manifest: &Manifest,
    plan: &Plan,
    started_at: &str,
) -> Result<u64, StateError> {
    let record = RunRecord {
        manifest_snapshot: snapshot(manifest, &store.salt()?, plan),
        git: GitInfo::of(&manifest.base_dir),
        succeeded: false,
        policy: plan.policy.clone(),
        ..record_of("apply", manifest, started_at)
    };
    store.append_run(&record)
}

/// After taking the lock: if a previous run was killed in the middle of changes, say
/// which, record that run as interrupted in the history, and clear the journal. The plan
/// that follows reads every resource again, so the interrupted ones converge.
pub fn recover(
    store: &dyn StateStore,
    manifest: &Manifest,
) -> Result<Vec<JournalEntry>, StateError> {
    let pending = store.journal()?;
    if pending.is_empty() {
        return Ok(pending);
    }
    let first = pending
        .iter()
        .map(|e| e.started_at.as_str())
        .min()
        .unwrap_or_default()
        .to_owned();
    let record = RunRecord {
        // The killed run's manifest is not known: no digest, no snapshot.
        manifest_sha256: String::new(),
        succeeded: false,
        resources: pending
            .iter()
            .map(|e| ResourceOutcome {
                id: e.id.clone(),
                type_name: e.type_name.clone(),
                outcome: e.outcome.clone().unwrap_or_else(|| "interrupted".into()),
                changed_fields: Vec::new(),
                error: e.outcome.is_none().then(|| {
                    format!(
                        "the run (pid {}) was killed during its {} of this resource",
                        e.pid, e.action
                    )
                }),
                duration_ms: 0.0,
                change: None,
                attempts: None,
                retried: Vec::new(),
            })
            .collect(),
        ..record_of("apply", manifest, &first)
    };
    store.append_run(&record)?;
    store.journal_clear()?;
    Ok(pending
        .into_iter()
        .filter(|e| e.outcome.is_none())
        .collect())
}

/// What the state remembers that the manifest no longer declares: resources to delete
/// (orphans) and ids to drop from the state only (`on_remove: forget`).
pub fn orphans(
    store: &dyn StateStore,
    manifest: &Manifest,
) -> Result<(Vec<Orphan>, Vec<String>), StateError> {
    let declared: std::collections::BTreeSet<&str> =
        manifest.resources.iter().map(|r| r.id.as_str()).collect();
    let mut delete = Vec::new();
    let mut forget = Vec::new();
    let this = manifest.path.display().to_string();
    for r in store.resources()? {
        // Declared, not parsed (reported), or left out by a false `when:` this run: not
        // an orphan.
        if declared.contains(r.id.as_str())
            || manifest.rejected_ids.contains(&r.id)
            || manifest.excluded.contains_key(&r.id)
        {
            continue;
        }
        // Declared by another manifest sharing this state: not ours to remove.
        if !r.manifest.is_empty() && r.manifest != this {
            continue;
        }
        if r.forget_on_remove {
            forget.push(r.id);
            continue;
        }
        let (provider, kind) = r
            .type_name
            .split_once('.')
            .map_or((r.provider.clone(), String::new()), |(_, k)| {
                (r.provider.clone(), k.to_owned())
            });
        delete.push(Orphan {
            id: r.id,
            type_name: r.type_name,
            provider,
            kind,
            last_desired: r.desired,
            prevent_destroy: r.prevent_destroy,
            sensitive: r.sensitive,
        });
    }
    Ok((delete, forget))
}
