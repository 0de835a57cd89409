//! The engine: walks the resources' dependency graph concurrently and calls providers
//! through the [`Provider`] trait — `read` + `diff` to plan, `apply` / `delete` to
//! converge. Independent resources run in parallel, bounded globally (`--parallelism`) and
//! per provider (`max_concurrency`). A failed resource does not stop the run: what depends
//! on it is skipped (naming the failed upstream resource) and everything else still
//! converges, unless `fail_fast` asks to start nothing new. Knows nothing of Wasm.

use crate::graph::Graph;
use crate::graph::walk::{self, NotRun, Progress, StopReason, Visited, WalkSpec};
use crate::manifest::{Manifest, refs};
use crate::plan::{self, ManifestRef, Plan, PlannedResource, ProviderPin, Summary};
use crate::provider::{Action, CallContext, Diff, FieldChange, KindInfo, Provider, ProviderError};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Instrument, info_span};

pub use crate::graph::walk::DEFAULT_PARALLELISM;

/// A future a [`Journal`] returns: owns what it needs, so it runs inside the resource's
/// task.
pub type JournalFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Where an apply writes ahead and behind each resource (the run layer's journal and
/// state). Both are awaited inside the resource's own task — `begin` before its provider
/// is called, `finish` before anything that depends on it starts — so an intent is on
/// disk before the change, and a slow store delays that resource, never the walk's
/// scheduling of the others.
pub trait Journal: Send + Sync {
    /// `r` is about to change (or be refreshed): called only for resources with an
    /// action, a plan error or a refresh. `Err` (the intent could not be written): the
    /// provider is not called, and the resource fails with that message.
    fn begin(&self, r: &PlannedResource) -> JournalFuture<Result<(), String>>;
    /// `r` ran (whatever its outcome, unchanged included).
    fn finish(&self, planned: &PlannedResource, r: &ResourceResult) -> JournalFuture<()>;
}

/// How a run walks the graph.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most provider calls in flight at once.
    pub parallelism: usize,
    /// Most calls in flight per provider (`max_concurrency` in the manifest); providers
    /// not listed are limited by `parallelism` only.
    pub provider_limits: BTreeMap<String, usize>,
    /// Start nothing new after the first failure.
    pub fail_fast: bool,
    /// Set (e.g. on Ctrl-C) to start nothing new; calls in flight finish.
    pub cancel: Arc<AtomicBool>,
    /// Providers whose results are not re-read after apply (`consistency_check: false`
    /// in the manifest, for slow or eventually consistent APIs).
    pub unchecked_providers: BTreeSet<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            parallelism: DEFAULT_PARALLELISM,
            provider_limits: BTreeMap::new(),
            fail_fast: false,
            cancel: Arc::new(AtomicBool::new(false)),
            unchecked_providers: BTreeSet::new(),
        }
    }
}

/// What happened to one resource during apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Updated,
    /// Unchanged itself, applied again because a resource that notifies it changed.
    Refreshed,
    Replaced,
    Deleted,
    Unchanged,
    Failed {
        error: String,
    },
    /// Not run because a resource it depends on failed.
    Skipped {
        upstream: String,
    },
    /// Not run because the run stopped first (fail-fast or interruption); counted as
    /// skipped.
    NotStarted {
        reason: String,
    },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        !matches!(
            self,
            Outcome::Failed { .. } | Outcome::Skipped { .. } | Outcome::NotStarted { .. }
        )
    }
}

/// The result for one resource.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceResult {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
    /// The state after the change (none when absent or unknown).
    #[serde(skip)]
    pub state: Option<Value>,
}

/// A duration in milliseconds with microsecond precision, as runs report them.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(millis(*d))
}

/// The result of an apply, in plan order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub results: Vec<ResourceResult>,
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub created: usize,
    pub updated: usize,
    pub refreshed: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl ApplyReport {
    pub fn counts(&self) -> OutcomeCounts {
        let mut c = OutcomeCounts::default();
        for r in &self.results {
            match r.outcome {
                Outcome::Created => c.created += 1,
                Outcome::Updated => c.updated += 1,
                Outcome::Refreshed => c.refreshed += 1,
                Outcome::Replaced => c.replaced += 1,
                Outcome::Deleted => c.deleted += 1,
                Outcome::Unchanged => c.unchanged += 1,
                Outcome::Failed { .. } => c.failed += 1,
                Outcome::Skipped { .. } | Outcome::NotStarted { .. } => c.skipped += 1,
            }
        }
        c
    }

    pub fn succeeded(&self) -> bool {
        self.results.iter().all(|r| r.outcome.is_success())
    }

    /// The `n` resources that took longest to change (unchanged ones excluded).
    pub fn slowest(&self, n: usize) -> Vec<&ResourceResult> {
        let mut changed: Vec<&ResourceResult> = self
            .results
            .iter()
            .filter(|r| {
                !matches!(
                    r.outcome,
                    Outcome::Unchanged | Outcome::NotStarted { .. } | Outcome::Skipped { .. }
                )
            })
            .collect();
        changed.sort_by(|a, b| b.duration.cmp(&a.duration).then_with(|| a.id.cmp(&b.id)));
        changed.truncate(n);
        changed
    }
}

/// Progress reported while applying, in the order things happen.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A provider call for the resource is starting.
    ResourceStarted {
        id: String,
        #[serde(rename = "type")]
        type_name: String,
        action: Action,
    },
    /// The resource is done (including skipped and not started ones).
    ResourceFinished(ResourceResult),
}

/// One node's planning, boxed so declared resources and orphans share a type.
type PlanFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    (refs::Resolved, Result<(Option<Value>, Diff), String>),
                    bool,
                ),
            > + Send
            + 'a,
    >,
>;

/// Indices in an order where each comes after its `deps` (they form no cycle: paths
/// strictly inside one another).
fn topological(deps: &[Vec<usize>]) -> Vec<usize> {
    fn visit(i: usize, deps: &[Vec<usize>], done: &mut Vec<bool>, out: &mut Vec<usize>) {
        if done[i] {
            return;
        }
        done[i] = true;
        for &d in &deps[i] {
            visit(d, deps, done, out);
        }
        out.push(i);
    }
    let mut done = vec![false; deps.len()];
    let mut out = Vec::with_capacity(deps.len());
    for i in 0..deps.len() {
        visit(i, deps, &mut done, &mut out);
    }
    out
}

/// A resource the state remembers that the manifest no longer declares: it is planned
/// for deletion (children before the directories that hold them) unless it carries
/// `prevent_destroy`.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub id: String,
    pub type_name: String,
    pub provider: String,
    pub kind: String,
    /// The desired properties last applied: they identify it to its provider.
    pub last_desired: Value,
    pub prevent_destroy: bool,
    /// Its sensitive properties (stored as salted hashes).
    pub sensitive: Vec<String>,
}

/// Runs plans against providers.
pub struct Engine {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

/// The walk's groups: one per provider, in name order, with its limit.
fn groups<'a>(
    names: impl Iterator<Item = &'a str>,
    options: &RunOptions,
) -> (BTreeMap<String, usize>, Vec<usize>) {
    let mut index = BTreeMap::new();
    for n in names {
        let next = index.len();
        index.entry(n.to_owned()).or_insert(next);
    }
    let mut limits = vec![usize::MAX; index.len()];
    for (name, &g) in &index {
        if let Some(&limit) = options.provider_limits.get(name) {
            limits[g] = limit.max(1);
        }
    }
    (index, limits)
}

impl Engine {
    pub fn new(providers: BTreeMap<String, Arc<dyn Provider>>) -> Self {
        Engine { providers }
    }

    fn provider(&self, name: &str) -> Result<Arc<dyn Provider>, String> {
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| format!("provider `{name}` is not loaded"))
    }

    /// Read and diff every resource of a validated manifest, independent ones in
    /// parallel. A resource that cannot be read carries its error; the rest is planned.
    pub async fn plan(
        &self,
        manifest: &Manifest,
        graph: &Graph,
        pins: BTreeMap<String, ProviderPin>,
        options: &RunOptions,
    ) -> Plan {
        self.plan_with_orphans(manifest, graph, &[], pins, options)
            .await
    }

    /// [`Engine::plan`], plus the deletion of `orphans`: resources the state remembers
    /// that the manifest no longer declares.
    pub async fn plan_with_orphans(
        &self,
        manifest: &Manifest,
        graph: &Graph,
        orphans: &[Orphan],
        pins: BTreeMap<String, ProviderPin>,
        options: &RunOptions,
    ) -> Plan {
        let rs = &manifest.resources;
        let n = rs.len();
        let (group_of, group_limits) = groups(
            rs.iter()
                .map(|r| r.provider.as_str())
                .chain(orphans.iter().map(|o| o.provider.as_str())),
            options,
        );
        let orphan_deps = self.orphan_order(orphans);
        // An orphan with the same provider, kind and identity as a declared resource was
        // renamed, not removed: the object now belongs to the new id. Drop it from the
        // state; never delete it.
        let identity = |provider: &str, kind: &str, doc: &Value| -> Option<String> {
            let p = self.providers.get(provider)?;
            let k = p.info().kinds.get(kind)?;
            Some(plan::canonical(doc.get(&k.identity)?))
        };
        // Only needed with orphans: a plan without a state stays as cheap as before.
        let declared: BTreeSet<(String, String, String)> = rs
            .iter()
            .take(if orphans.is_empty() { 0 } else { n })
            .filter_map(|r| {
                let id = identity(&r.provider, &r.kind, &r.properties)?;
                Some((r.provider.clone(), r.kind.clone(), id))
            })
            .collect();
        let renamed: Vec<bool> = orphans
            .iter()
            .map(|o| {
                identity(&o.provider, &o.kind, &o.last_desired)
                    .is_some_and(|id| declared.contains(&(o.provider.clone(), o.kind.clone(), id)))
            })
            .collect();
        let spec = WalkSpec {
            deps: (0..n)
                .map(|i| graph.dependencies(i).to_vec())
                .chain(
                    orphan_deps
                        .iter()
                        .map(|d| d.iter().map(|j| n + j).collect()),
                )
                .collect(),
            group: rs
                .iter()
                .map(|r| group_of[&r.provider])
                .chain(orphans.iter().map(|o| group_of[&o.provider]))
                .collect(),
            group_limits,
            parallelism: options.parallelism,
            skip_after_failure: false,
            fail_fast: false,
        };
        // What finished nodes offer to the resources that reference them.
        let known: Shared = Arc::new(Mutex::new(vec![None; rs.len()]));
        let index: Arc<BTreeMap<String, usize>> = Arc::new(
            rs.iter()
                .enumerate()
                .map(|(i, r)| (r.id.clone(), i))
                .collect(),
        );
        let visited = walk::walk(
            &spec,
            &options.cancel,
            |i| {
                if let Some(o) = i.checked_sub(n).and_then(|j| orphans.get(j)) {
                    let was_renamed = renamed[i - n];
                    let o = o.clone();
                    let provider = self.provider(&o.provider);
                    let span = info_span!("plan", resource = %o.id, r#type = %o.type_name, orphan = true);
                    let fut: PlanFuture<'_> = Box::pin(async move {
                        let resolved = refs::Resolved {
                            value: o.last_desired.clone(),
                            unknown: Vec::new(),
                        };
                        let result = match provider {
                            _ if was_renamed => Ok((None, Diff { action: Action::None, changes: Vec::new() })),
                            _ if o.prevent_destroy => Err(format!(
                                "`{}` was removed from the manifest, but it has prevent_destroy set (remembered in the state), so Tenet keeps it; to stop managing it without deleting it run `tenet state forget {}`",
                                o.id, o.id
                            )),
                            Err(_) => Err(format!(
                                "`{}` was removed from the manifest and must be deleted, but its provider `{}` is no longer declared: declare the provider again, or run `tenet state forget {}`",
                                o.id, o.provider, o.id
                            )),
                            Ok(p) => p
                                .read(CallContext { resource: &o.id }, &o.kind, &o.last_desired)
                                .await
                                .map(|current| {
                                    let action = if current.is_some() {
                                        Action::Delete
                                    } else {
                                        Action::None
                                    };
                                    (current, Diff { action, changes: Vec::new() })
                                })
                                .map_err(|e| e.to_string()),
                        };
                        let failed = result.is_err();
                        ((resolved, result), failed)
                    }
                    .instrument(span));
                    return fut;
                }
                let r = &rs[i];
                let provider = self.provider(&r.provider);
                let (id, kind, desired) = (r.id.clone(), r.kind.clone(), r.properties.clone());
                let (known, index) = (known.clone(), index.clone());
                let span = info_span!("plan", resource = %r.id, r#type = %r.type_name);
                let fut: PlanFuture<'_> = Box::pin(async move {
                    let resolved = {
                        let known = known.lock().unwrap_or_else(|e| e.into_inner());
                        refs::resolve(&desired, &|t, f| lookup(&known, &index, t, f))
                    };
                    let result = match provider {
                        Ok(p) => plan_resolved(p.as_ref(), &id, &kind, &resolved).await,
                        Err(e) => Err(e),
                    };
                    let entry = Known {
                        desired: resolved.value.clone(),
                        current: result.as_ref().ok().and_then(|(c, _)| c.clone()),
                        settled: resolved.unknown.is_empty()
                            && matches!(&result, Ok((_, d)) if d.action == Action::None),
                    };
                    known.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(entry);
                    let failed = result.is_err();
                    ((resolved, result), failed)
                }
                .instrument(span));
                fut
            },
            |_| {},
        )
        .await;
        // `notify`: who refreshes whom (the graph already orders notifiers first).
        let position: BTreeMap<&str, usize> = rs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        let mut notified_by: Vec<Vec<String>> = vec![Vec::new(); rs.len()];
        for r in rs {
            for n in &r.notify {
                if let Some(&j) = position.get(n.id.as_str()) {
                    notified_by[j].push(r.id.clone());
                }
            }
        }
        let mut by_index: Vec<Option<PlannedResource>> = visited
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let mut planned = match i.checked_sub(n).and_then(|j| orphans.get(j)) {
                    Some(o) => PlannedResource {
                        id: o.id.clone(),
                        type_name: o.type_name.clone(),
                        provider: o.provider.clone(),
                        kind: o.kind.clone(),
                        action: Action::None,
                        changes: Vec::new(),
                        desired: o.last_desired.clone(),
                        current: None,
                        current_sha256: None,
                        depends_on: orphan_deps[i - n]
                            .iter()
                            .map(|&d| orphans[d].id.clone())
                            .collect(),
                        error: None,
                        unknown: Vec::new(),
                        notified_by: Vec::new(),
                        refresh: false,
                        orphan: true,
                        sensitive: o.sensitive.clone(),
                    },
                    None => {
                        let r = &rs[i];
                        PlannedResource {
                            id: r.id.clone(),
                            type_name: r.type_name.clone(),
                            provider: r.provider.clone(),
                            kind: r.kind.clone(),
                            action: Action::None,
                            changes: Vec::new(),
                            desired: r.properties.clone(),
                            current: None,
                            current_sha256: None,
                            depends_on: graph
                                .dependencies(i)
                                .iter()
                                .map(|&d| rs[d].id.clone())
                                .collect(),
                            error: None,
                            unknown: Vec::new(),
                            notified_by: notified_by[i].clone(),
                            refresh: false,
                            orphan: false,
                            sensitive: self.sensitive_fields(r, manifest),
                        }
                    }
                };
                match v {
                    Visited::Ran {
                        value: (resolved, result),
                        ..
                    } => {
                        planned.desired = resolved.value;
                        planned.unknown = resolved.unknown;
                        match result {
                            Ok((current, diff)) => {
                                planned.current_sha256 = current.as_ref().map(plan::digest);
                                planned.current = current;
                                planned.action = diff.action;
                                planned.changes = diff.changes;
                            }
                            Err(e) => planned.error = Some(e),
                        }
                    }
                    Visited::NotRun(_) => {
                        planned.error = Some("not planned: the run was interrupted".into())
                    }
                }
                // `prevent_destroy` holds for declared resources too: no replacement, no
                // delete (e.g. `ensure: absent`).
                if let Some(r) = rs.get(i).filter(|r| r.prevent_destroy)
                    && planned.error.is_none()
                    && matches!(planned.action, Action::Replace | Action::Delete)
                {
                    planned.error = Some(format!(
                        "applying it would {} `{}`, but it has lifecycle.prevent_destroy set; change the manifest, or remove prevent_destroy first",
                        planned.action, r.id
                    ));
                }
                Some(planned)
            })
            .collect();
        // An unchanged resource whose notifier changes (or is itself refreshed) will be
        // refreshed; in execution order, so chains of notifications carry through.
        let mut changing: BTreeSet<String> = BTreeSet::new();
        for &i in graph.order() {
            if let Some(r) = by_index[i].as_mut().filter(|r| r.error.is_none()) {
                r.refresh =
                    r.action == Action::None && r.notified_by.iter().any(|n| changing.contains(n));
                if r.action != Action::None || r.refresh {
                    changing.insert(r.id.clone());
                }
            }
        }
        // Execution order: the graph's (dependencies first, then manifest order).
        // Orphans last, each after the orphans inside it.
        let resources: Vec<PlannedResource> = graph
            .order()
            .iter()
            .copied()
            .chain(topological(&orphan_deps).into_iter().map(|j| n + j))
            .filter_map(|i| by_index[i].take())
            .collect();
        let summary = Summary::of(&resources);
        Plan {
            format_version: plan::FORMAT_VERSION,
            tenet_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: ManifestRef {
                path: manifest.path.display().to_string(),
                sha256: manifest.sha256.clone(),
            },
            providers: pins,
            resources,
            forget: Vec::new(),
            summary,
        }
    }

    /// The sensitive top-level properties of a declared resource: those its kind's schema
    /// marks `sensitive`, and those the manifest lists (`sensitive: true`: all).
    fn sensitive_fields(
        &self,
        r: &crate::manifest::ResourceDecl,
        manifest: &Manifest,
    ) -> Vec<String> {
        let mut fields: BTreeSet<String> = self
            .providers
            .get(&r.provider)
            .and_then(|p| p.info().kinds.get(&r.kind).map(KindInfo::sensitive_fields))
            .unwrap_or_default()
            .into_iter()
            .collect();
        // Built from a sensitive variable: sensitive too.
        let secrets: Vec<String> = manifest
            .sensitive_vars
            .iter()
            .filter_map(|name| manifest.vars.get(name))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .filter(|s| !s.is_empty())
            .collect();
        // Any string inside the property that contains a secret, compared as text (not
        // as escaped JSON, so secrets with newlines or quotes are found too).
        fn holds(v: &Value, secrets: &[String]) -> bool {
            match v {
                Value::String(s) => secrets.iter().any(|secret| s.contains(secret.as_str())),
                Value::Array(a) => a.iter().any(|x| holds(x, secrets)),
                Value::Object(m) => m.values().any(|x| holds(x, secrets)),
                other => secrets.contains(&other.to_string()),
            }
        }
        if let Some(map) = r.properties.as_object() {
            for (k, v) in map {
                if holds(v, &secrets) {
                    fields.insert(k.clone());
                }
            }
        }
        // `sensitive: true` is every property but the identity: that names the object
        // (plans, drift and deletion must find it again), it is not a secret.
        let identity = self
            .providers
            .get(&r.provider)
            .and_then(|p| p.info().kinds.get(&r.kind))
            .map(|k| k.identity.clone());
        for f in &r.sensitive {
            if f == "*" {
                if let Some(map) = r.properties.as_object() {
                    fields.extend(
                        map.keys()
                            .filter(|k| identity.as_ref() != Some(*k))
                            .cloned(),
                    );
                }
            } else {
                fields.insert(f.clone());
            }
        }
        fields.into_iter().collect()
    }

    /// For each orphan, the orphans that must be deleted before it: those whose managed
    /// path lies inside its own (a file before its directory).
    fn orphan_order(&self, orphans: &[Orphan]) -> Vec<Vec<usize>> {
        let paths: Vec<Option<std::path::PathBuf>> = orphans
            .iter()
            .map(|o| {
                let p = self.providers.get(&o.provider)?;
                let kind = p.info().kinds.get(&o.kind)?;
                kind.path_properties
                    .contains(&kind.identity)
                    .then(|| o.last_desired.get(&kind.identity)?.as_str())
                    .flatten()
                    .map(std::path::PathBuf::from)
            })
            .collect();
        (0..orphans.len())
            .map(|i| {
                (0..orphans.len())
                    .filter(|&j| {
                        j != i
                            && matches!((&paths[i], &paths[j]), (Some(outer), Some(inner))
                                if inner != outer && inner.starts_with(outer))
                    })
                    .collect()
            })
            .collect()
    }

    /// Carry out a plan: every resource after what it depends on, independent ones in
    /// parallel. A failure marks the resource failed and skips everything that depends
    /// on it; independent resources still run (unless `fail_fast`).
    pub async fn apply(
        &self,
        plan: &Plan,
        options: &RunOptions,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> ApplyReport {
        self.apply_journaled(plan, options, None, on_event).await
    }

    /// [`Engine::apply`], writing each resource ahead and behind to `journal`.
    pub async fn apply_journaled(
        &self,
        plan: &Plan,
        options: &RunOptions,
        journal: Option<Arc<dyn Journal>>,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> ApplyReport {
        let rs = &plan.resources;
        let index: BTreeMap<&str, usize> = rs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        let (group_of, group_limits) = groups(rs.iter().map(|r| r.provider.as_str()), options);
        let spec = WalkSpec {
            deps: rs
                .iter()
                .map(|r| {
                    r.depends_on
                        .iter()
                        .filter_map(|d| index.get(d.as_str()).copied())
                        .collect()
                })
                .collect(),
            group: rs.iter().map(|r| group_of[&r.provider]).collect(),
            group_limits,
            parallelism: options.parallelism,
            skip_after_failure: true,
            fail_fast: options.fail_fast,
        };
        // Desired documents are known from the plan; states become known as resources
        // are applied (unchanged ones: their current state).
        let known: Shared = Arc::new(Mutex::new(
            rs.iter()
                .map(|r| {
                    Some(Known {
                        desired: r.desired.clone(),
                        current: r.current.clone(),
                        settled: r.action == Action::None && r.unknown.is_empty(),
                    })
                })
                .collect(),
        ));
        let index: Arc<BTreeMap<String, usize>> = Arc::new(
            rs.iter()
                .enumerate()
                .map(|(i, r)| (r.id.clone(), i))
                .collect(),
        );
        // Which resources changed in this run, for `notify`.
        let changed: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
        let mut started: Vec<Option<Instant>> = vec![None; rs.len()];
        let mut results: Vec<Option<ResourceResult>> = (0..rs.len()).map(|_| None).collect();
        walk::walk(
            &spec,
            &options.cancel,
            |i| {
                let r = rs[i].clone();
                let provider = self.provider(&r.provider);
                let (known, index) = (known.clone(), index.clone());
                let check = !options.unchecked_providers.contains(&r.provider);
                let changed = changed.clone();
                let journal = journal.clone();
                let span = info_span!("apply", resource = %r.id, r#type = %r.type_name, action = %r.action);
                async move {
                    let began = Instant::now();
                    let intent = match &journal {
                        Some(j) if r.action != Action::None || r.error.is_some() || r.refresh => {
                            j.begin(&r).await
                        }
                        _ => Ok(()),
                    };
                    let notified = {
                        let changed = changed.lock().unwrap_or_else(|e| e.into_inner());
                        r.notified_by.iter().any(|n| changed.contains(n))
                    };
                    // Nothing changes without its intent on disk.
                    let provider = provider.and_then(|p| intent.map(|()| p));
                    let result = match provider {
                        Ok(p) => match apply_one(p.as_ref(), &r, &known, &index, notified).await {
                            Ok((outcome, Some(state), desired))
                                if check
                                    && matches!(
                                        outcome,
                                        Outcome::Created
                                            | Outcome::Updated
                                            | Outcome::Replaced
                                            | Outcome::Refreshed
                                    ) =>
                            {
                                consistent(p.as_ref(), &r, &desired, &state)
                                    .await
                                    .map(|()| (outcome, Some(state)))
                            }
                            Ok((outcome, state, _)) => Ok((outcome, state)),
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    };
                    if let Ok((outcome, state)) = &result {
                        if matches!(
                            outcome,
                            Outcome::Created | Outcome::Updated | Outcome::Replaced | Outcome::Refreshed
                        ) {
                            changed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(r.id.clone());
                        }
                        let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(k) = known[i].as_mut() {
                            k.current = state.clone();
                            k.settled = true;
                        }
                    }
                    if let Some(j) = &journal {
                        let (outcome, state) = match &result {
                            Ok((o, s)) => (o.clone(), s.clone()),
                            Err(e) => (Outcome::Failed { error: e.clone() }, None),
                        };
                        let done = ResourceResult {
                            id: r.id.clone(),
                            type_name: r.type_name.clone(),
                            outcome,
                            duration: began.elapsed(),
                            state,
                        };
                        j.finish(&r, &done).await;
                    }
                    let failed = result.is_err();
                    (result, failed)
                }
                .instrument(span)
            },
            |progress| match progress {
                Progress::Started(i) => {
                    started[i] = Some(Instant::now());
                    let r = &rs[i];
                    if r.action != Action::None || r.error.is_some() || r.refresh {
                        on_event(Event::ResourceStarted {
                            id: r.id.clone(),
                            type_name: r.type_name.clone(),
                            action: r.action,
                        });
                    }
                }
                Progress::Finished(i, visited) => {
                    let r = &rs[i];
                    let (outcome, state) = match visited {
                        Visited::Ran { value: Ok((outcome, state)), .. } => (outcome.clone(), state.clone()),
                        Visited::Ran { value: Err(e), .. } => (Outcome::Failed { error: e.clone() }, None),
                        Visited::NotRun(NotRun::UpstreamFailed(u)) => (
                            Outcome::Skipped {
                                upstream: rs[*u].id.clone(),
                            },
                            None,
                        ),
                        Visited::NotRun(NotRun::Stopped(why)) => (
                            Outcome::NotStarted {
                                reason: match why {
                                    StopReason::Cancelled => "the run was interrupted".into(),
                                    StopReason::FailFast => {
                                        "the run stopped after a failure (--fail-fast)".into()
                                    }
                                },
                            },
                            None,
                        ),
                    };
                    let result = ResourceResult {
                        id: r.id.clone(),
                        type_name: r.type_name.clone(),
                        outcome,
                        duration: started[i].map(|s| s.elapsed()).unwrap_or_default(),
                        state,
                    };
                    on_event(Event::ResourceFinished(result.clone()));
                    results[i] = Some(result);
                }
            },
        )
        .await;
        ApplyReport {
            results: results.into_iter().flatten().collect(),
        }
    }
}

/// What a finished resource offers to the resources that reference it.
#[derive(Debug, Clone)]
struct Known {
    desired: Value,
    current: Option<Value>,
    /// Its current state is final for this run (unchanged, or applied).
    settled: bool,
}

type Shared = Arc<Mutex<Vec<Option<Known>>>>;

/// The value of `${resources.<target>.<field>}`: the target's desired value when it sets
/// the field (and it is not itself waiting for a reference), otherwise its observed value
/// once settled; `None` while known only after apply.
fn lookup(
    known: &[Option<Known>],
    index: &BTreeMap<String, usize>,
    target: &str,
    field: &str,
) -> Option<Value> {
    let k = known.get(*index.get(target)?)?.as_ref()?;
    let observed = || {
        k.settled
            .then(|| k.current.as_ref()?.get(field).cloned())
            .flatten()
    };
    match k.desired.get(field) {
        // Itself waiting for a reference: known once that resource is applied.
        Some(Value::String(s)) if refs::has_reference(s) => observed(),
        Some(v) => Some(v.clone()),
        None if k.settled => observed(),
        None => None,
    }
}

/// The marker a plan shows for a value known only after apply.
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

async fn plan_one(
    p: &dyn Provider,
    id: &str,
    kind: &str,
    desired: &Value,
) -> Result<(Option<Value>, Diff), String> {
    let cx = CallContext { resource: id };
    let current = p.read(cx, kind, desired).await.map_err(|e| e.to_string())?;
    let diff = p
        .diff(cx, kind, desired, current.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    Ok((current, diff))
}

/// Plan a resource whose references are resolved as far as possible. With values known
/// only after apply, the provider cannot diff: the plan shows a create (or an update of
/// what exists) with those fields "known after apply", and apply diffs again.
async fn plan_resolved(
    p: &dyn Provider,
    id: &str,
    kind: &str,
    resolved: &refs::Resolved,
) -> Result<(Option<Value>, Diff), String> {
    if resolved.unknown.is_empty() {
        return plan_one(p, id, kind, &resolved.value).await;
    }
    let identity = p.info().kinds.get(kind).map(|k| format!("/{}", k.identity));
    let current = if identity.is_some_and(|i| resolved.unknown.contains(&i)) {
        None
    } else {
        p.read(CallContext { resource: id }, kind, &resolved.value)
            .await
            .map_err(|e| e.to_string())?
    };
    let changes = resolved
        .unknown
        .iter()
        .map(|pointer| FieldChange {
            path: pointer.clone(),
            before: current.as_ref().and_then(|c| c.pointer(pointer)).cloned(),
            after: Some(Value::String(KNOWN_AFTER_APPLY.to_owned())),
            forces_replacement: false,
        })
        .collect();
    let action = if current.is_some() {
        Action::Update
    } else {
        Action::Create
    };
    Ok((current, Diff { action, changes }))
}

/// Apply one planned resource; returns the outcome, the new state and the desired
/// properties it was applied with (references resolved).
async fn apply_one(
    p: &dyn Provider,
    r: &PlannedResource,
    known: &Shared,
    index: &BTreeMap<String, usize>,
    notified: bool,
) -> Result<(Outcome, Option<Value>, Value), String> {
    if let Some(e) = &r.error {
        // Could not be planned: it fails, its dependents are skipped, the rest runs.
        return Err(format!("could not be planned: {e}"));
    }
    if notified && r.action == Action::None && r.unknown.is_empty() {
        // Refresh: unchanged itself, but a resource it listens to changed in this run.
        let cx = CallContext { resource: &r.id };
        let state = p
            .apply(cx, &r.kind, &r.desired, r.current.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        return Ok((Outcome::Refreshed, Some(state), r.desired.clone()));
    }
    if r.unknown.is_empty() {
        let (outcome, state) =
            act(p, &r.id, &r.kind, r.action, &r.desired, r.current.as_ref()).await?;
        return Ok((outcome, state, r.desired.clone()));
    }
    // Values that were known only after apply are known now: resolve, then diff again.
    let resolved = {
        let known = known.lock().unwrap_or_else(|e| e.into_inner());
        refs::resolve(&r.desired, &|t, f| lookup(&known, index, t, f))
    };
    if !resolved.unknown.is_empty() {
        return Err(format!(
            "values still unknown after the resources it references were applied: {}",
            resolved.unknown.join(", ")
        ));
    }
    let (current, diff) = plan_one(p, &r.id, &r.kind, &resolved.value).await?;
    if notified && diff.action == Action::None {
        let cx = CallContext { resource: &r.id };
        let state = p
            .apply(cx, &r.kind, &resolved.value, current.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        return Ok((Outcome::Refreshed, Some(state), resolved.value));
    }
    // Never do more than the plan showed: it promised a create or an in-place update.
    if matches!(diff.action, Action::Replace | Action::Delete) {
        return Err(format!(
            "with its values known, applying it would now {} it, which the plan did not show; run plan again",
            diff.action
        ));
    }
    let (outcome, state) = act(
        p,
        &r.id,
        &r.kind,
        diff.action,
        &resolved.value,
        current.as_ref(),
    )
    .await?;
    Ok((outcome, state, resolved.value))
}

/// The contract check after a change: a fresh `read` must return what `apply` returned.
/// A provider whose `apply` reports a state the system does not have would make every
/// later plan wrong; say so now, naming the fields that differ.
async fn consistent(
    p: &dyn Provider,
    r: &PlannedResource,
    desired: &Value,
    applied: &Value,
) -> Result<(), String> {
    let fresh = p
        .read(CallContext { resource: &r.id }, &r.kind, desired)
        .await
        .map_err(|e| format!("the read after apply failed: {e}"))?;
    let Some(fresh) = fresh else {
        return Err(format!(
            "provider `{}` produced an inconsistent result for resource `{}`: apply reported the resource, but a fresh read finds nothing",
            r.provider, r.id
        ));
    };
    if plan::digest(&fresh) == plan::digest(applied) {
        return Ok(());
    }
    let empty = serde_json::Map::new();
    let (a, b) = (
        applied.as_object().unwrap_or(&empty),
        fresh.as_object().unwrap_or(&empty),
    );
    let fields: BTreeSet<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    let fields: Vec<String> = fields.into_iter().map(|f| format!("/{f}")).collect();
    Err(format!(
        "provider `{}` produced an inconsistent result for resource `{}`: a fresh read after apply differs in {} \
         (set `consistency_check: false` on the provider for eventually consistent APIs)",
        r.provider,
        r.id,
        if fields.is_empty() {
            "the document".to_owned()
        } else {
            fields.join(", ")
        }
    ))
}

/// Carry out one action.
async fn act(
    p: &dyn Provider,
    id: &str,
    kind: &str,
    action: Action,
    desired: &Value,
    current: Option<&Value>,
) -> Result<(Outcome, Option<Value>), String> {
    let cx = CallContext { resource: id };
    let err = |e: ProviderError| e.to_string();
    match action {
        Action::None => Ok((Outcome::Unchanged, current.cloned())),
        Action::Create | Action::Update => {
            let state = p.apply(cx, kind, desired, current).await.map_err(err)?;
            let outcome = if action == Action::Create {
                Outcome::Created
            } else {
                Outcome::Updated
            };
            Ok((outcome, Some(state)))
        }
        Action::Replace => {
            if let Some(current) = current {
                p.delete(cx, kind, current).await.map_err(err)?;
            }
            let state = p.apply(cx, kind, desired, None).await.map_err(err)?;
            Ok((Outcome::Replaced, Some(state)))
        }
        Action::Delete => {
            if let Some(current) = current {
                p.delete(cx, kind, current).await.map_err(err)?;
            }
            Ok((Outcome::Deleted, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{self, LoadOptions};
    use crate::provider::Operation;
    use crate::provider::mock::MockProvider;

    fn manifest(dir: &tempfile::TempDir, body: &str) -> (Manifest, Graph) {
        let path = dir.path().join("m.yaml");
        std::fs::write(
            &path,
            format!("providers:\n  mock: {{}}\nresources:\n{body}"),
        )
        .expect("write");
        let (m, diags) = manifest::load(&path, &LoadOptions::default());
        assert!(diags.is_empty(), "{diags}");
        let g = Graph::of(&m.resources).expect("valid graph");
        (m, g)
    }

    fn engine(mock: &Arc<MockProvider>) -> Engine {
        let p: Arc<dyn Provider> = mock.clone();
        Engine::new(BTreeMap::from([("mock".to_owned(), p)]))
    }

    const THREE: &str = r"  - {id: c, type: mock.item, properties: {name: c, value: 3}, depends_on: [b]}
  - {id: a, type: mock.item, properties: {name: a, value: 1}}
  - {id: b, type: mock.item, properties: {name: b, value: 2}, depends_on: [a]}
  - {id: z, type: mock.item, properties: {name: z, value: 9}}
";

    fn outcomes(report: &ApplyReport) -> BTreeMap<&str, Outcome> {
        report
            .results
            .iter()
            .map(|r| (r.id.as_str(), r.outcome.clone()))
            .collect()
    }

    /// Plan THREE against a fresh mock; `fail` lists resources whose apply fails.
    /// A manifest of mock resources, its graph, a fresh mock (whose apply fails for the
    /// ids in `fail`), an engine on it, and the first plan.
    struct Setup {
        manifest: Manifest,
        graph: Graph,
        mock: Arc<MockProvider>,
        engine: Engine,
        plan: Plan,
    }

    impl Setup {
        async fn new(dir: &tempfile::TempDir, body: &str, fail: &[&str]) -> Setup {
            let (manifest, graph) = manifest(dir, body);
            let mock = Arc::new(MockProvider::new());
            if let Ok(mut f) = mock.fail_apply.lock() {
                f.extend(fail.iter().map(|s| (*s).to_owned()));
            }
            let engine = engine(&mock);
            let plan = engine
                .plan(&manifest, &graph, BTreeMap::new(), &RunOptions::default())
                .await;
            Setup {
                manifest,
                graph,
                mock,
                engine,
                plan,
            }
        }

        async fn replan(&self) -> Plan {
            self.engine
                .plan(
                    &self.manifest,
                    &self.graph,
                    BTreeMap::new(),
                    &RunOptions::default(),
                )
                .await
        }
    }

    async fn planned(dir: &tempfile::TempDir, fail: &[&str]) -> (Arc<MockProvider>, Engine, Plan) {
        let s = Setup::new(dir, THREE, fail).await;
        (s.mock, s.engine, s.plan)
    }

    #[tokio::test]
    async fn applies_in_dependency_order_and_converges() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Setup::new(&dir, THREE, &[]).await;
        let (mock, e, plan) = (&s.mock, &s.engine, s.plan.clone());
        assert_eq!(plan.summary.create, 4);
        let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
        assert!(report.succeeded());
        let applies: Vec<String> = mock.calls_of(Operation::Apply);
        let pos = |id: &str| applies.iter().position(|a| a == id).expect("applied");
        assert!(pos("a") < pos("b") && pos("b") < pos("c"), "{applies:?}");
        assert_eq!(applies.len(), 4);

        let again = s.replan().await;
        assert!(
            !again.has_changes(),
            "second plan must be empty: {:?}",
            again.summary
        );
        assert_eq!(again.summary.unchanged, 4);
    }

    /// Records begin/finish in order; refuses the intent of the ids in `refuse`.
    struct Recording {
        log: Arc<Mutex<Vec<String>>>,
        refuse: Vec<&'static str>,
    }

    impl Journal for Recording {
        fn begin(&self, r: &PlannedResource) -> JournalFuture<Result<(), String>> {
            let (log, id) = (self.log.clone(), r.id.clone());
            let refused = self.refuse.contains(&id.as_str());
            Box::pin(async move {
                log.lock().expect("log").push(format!("begin {id}"));
                if refused {
                    Err("the journal is full".into())
                } else {
                    Ok(())
                }
            })
        }

        fn finish(&self, _planned: &PlannedResource, r: &ResourceResult) -> JournalFuture<()> {
            let (log, id) = (self.log.clone(), r.id.clone());
            Box::pin(async move { log.lock().expect("log").push(format!("finish {id}")) })
        }
    }

    #[tokio::test]
    async fn the_journal_is_written_around_each_change_and_a_refused_intent_changes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mock, e, plan) = planned(&dir, &[]).await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let journal = Arc::new(Recording {
            log: log.clone(),
            refuse: vec!["b"],
        });
        let report = e
            .apply_journaled(&plan, &RunOptions::default(), Some(journal), &mut |_| {})
            .await;
        let by_id = outcomes(&report);
        // b's intent could not be written: its provider was never called, and c (which
        // depends on it) was skipped.
        assert!(
            matches!(&by_id["b"], Outcome::Failed { error } if error == "the journal is full"),
            "{by_id:?}"
        );
        assert_eq!(
            by_id["c"],
            Outcome::Skipped {
                upstream: "b".into()
            }
        );
        let applied = mock.calls_of(Operation::Apply);
        assert!(!applied.contains(&"b".to_owned()), "{applied:?}");
        let log = log.lock().expect("log").clone();
        let at = |x: &str| log.iter().position(|l| l == x).unwrap_or(usize::MAX);
        // Each intent before its finish, a's finish before b (its dependent) begins;
        // a skipped resource is neither begun nor finished.
        assert!(
            at("begin a") < at("finish a") && at("finish a") < at("begin b"),
            "{log:?}"
        );
        assert!(
            at("finish b") < usize::MAX && at("begin c") == usize::MAX,
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn failure_skips_dependents_and_spares_the_rest() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_mock, e, plan) = planned(&dir, &["a"]).await;
        let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
        let by_id = outcomes(&report);
        assert!(matches!(by_id["a"], Outcome::Failed { .. }));
        assert_eq!(
            by_id["b"],
            Outcome::Skipped {
                upstream: "a".into()
            }
        );
        assert_eq!(
            by_id["c"],
            Outcome::Skipped {
                upstream: "a".into()
            }
        );
        assert_eq!(by_id["z"], Outcome::Created);
        assert!(!report.succeeded());
        let c = report.counts();
        assert_eq!((c.failed, c.skipped, c.created), (1, 2, 1));
    }

    #[tokio::test]
    async fn a_resource_that_could_not_be_planned_fails_and_blocks_only_its_dependents() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_mock, e, mut plan) = planned(&dir, &[]).await;
        let b = plan.resources.iter_mut().find(|r| r.id == "b").expect("b");
        b.error = Some("read failed".into());
        b.action = Action::None;
        let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
        let by_id = outcomes(&report);
        assert_eq!(
            by_id["b"],
            Outcome::Failed {
                error: "could not be planned: read failed".into()
            }
        );
        assert_eq!(
            by_id["c"],
            Outcome::Skipped {
                upstream: "b".into()
            }
        );
        assert_eq!(
            (&by_id["a"], &by_id["z"]),
            (&Outcome::Created, &Outcome::Created)
        );
    }

    #[tokio::test]
    async fn references_resolve_from_desired_values_and_after_apply() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Setup::new(&dir, "  - {id: a, type: mock.item, properties: {name: a, value: 1}}\n  - {id: b, type: mock.item, properties: {name: b, value: '${resources.a.value}/${resources.a.serial}'}}\n  - {id: c, type: mock.item, properties: {name: c, value: '${resources.a.value}'}}\n", &[]).await;
        let (mock, e, plan) = (&s.mock, &s.engine, s.plan.clone());
        let b = plan.resources.iter().find(|r| r.id == "b").expect("b");
        assert_eq!(b.unknown, vec!["/value".to_owned()]);
        assert_eq!(b.action, Action::Create);
        assert_eq!(
            b.changes[0].after,
            Some(serde_json::json!(KNOWN_AFTER_APPLY))
        );
        let c = plan.resources.iter().find(|r| r.id == "c").expect("c");
        assert!(c.unknown.is_empty());
        assert_eq!(
            c.desired["value"], 1,
            "a desired value is known at plan time, typed"
        );
        assert_eq!(b.depends_on, vec!["a".to_owned()]);

        let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
        assert!(report.succeeded(), "{:?}", report.results);
        let state = mock.state.lock().expect("state").clone();
        let serial = state["a"]["serial"].as_str().expect("serial").to_owned();
        assert_eq!(state["b"]["value"], format!("1/{serial}"));

        // Converged: a's serial is now observed, so b plans with everything known.
        let again = s.replan().await;
        assert!(!again.has_changes(), "{:?}", again.resources);
    }

    #[tokio::test]
    async fn references_chain_through_values_known_after_apply() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Setup::new(&dir, "  - {id: a, type: mock.item, properties: {name: a, value: 1}}\n  - {id: b, type: mock.item, properties: {name: b, value: '${resources.a.serial}'}}\n  - {id: c, type: mock.item, properties: {name: c, value: 'via ${resources.b.value}, not $${resources.b.value}'}}\n", &[]).await;
        let (mock, e, plan) = (&s.mock, &s.engine, s.plan.clone());
        let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
        assert!(report.succeeded(), "{:?}", report.results);
        let state = mock.state.lock().expect("state").clone();
        let serial = state["a"]["serial"].as_str().expect("serial").to_owned();
        assert_eq!(state["b"]["value"], serial);
        assert_eq!(
            state["c"]["value"],
            format!("via {serial}, not ${{resources.b.value}}"),
            "an escaped reference reaches the provider as literal text"
        );
    }

    #[tokio::test]
    async fn a_change_refreshes_the_resources_it_notifies_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tmp");
        let body = |config: u32| {
            format!(
                "  - {{id: restart, type: mock.item, properties: {{name: restart, value: 0}}, notify: [chain]}}\n\
                 \x20 - {{id: chain, type: mock.item, properties: {{name: chain, value: 0}}}}\n\
                 \x20 - {{id: config, type: mock.item, properties: {{name: config, value: {config}}}, notify: [restart]}}\n\
                 \x20 - {{id: quiet, type: mock.item, properties: {{name: quiet, value: 5}}, notify: [other]}}\n\
                 \x20 - {{id: other, type: mock.item, properties: {{name: other, value: 7}}}}\n"
            )
        };
        let mock = Arc::new(MockProvider::new());
        let e = engine(&mock);
        let run = |config: u32| {
            let (m, g) = manifest(&dir, &body(config));
            let e = &e;
            async move {
                e.plan(&m, &g, BTreeMap::new(), &RunOptions::default())
                    .await
            }
        };
        // First run: everything is created; a created resource is not refreshed as well.
        let plan = run(1).await;
        // The notifier runs first, whatever the manifest order.
        let order: Vec<&str> = plan.resources.iter().map(|r| r.id.as_str()).collect();
        assert!(
            order.iter().position(|id| *id == "config")
                < order.iter().position(|id| *id == "restart"),
            "{order:?}"
        );
        let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
        assert!(outcomes(&report).values().all(|o| *o == Outcome::Created));

        // Change `config` only: `restart` is planned as a refresh, `other` is not.
        let plan = run(2).await;
        let by_id: BTreeMap<&str, &PlannedResource> =
            plan.resources.iter().map(|r| (r.id.as_str(), r)).collect();
        assert!(by_id["restart"].refresh && by_id["restart"].action == Action::None);
        assert_eq!(by_id["restart"].notified_by, vec!["config".to_owned()]);
        assert!(!by_id["other"].refresh);
        // Notifications chain: `restart` is refreshed, so `chain` is too.
        assert!(by_id["chain"].refresh);
        assert_eq!(plan.summary.refresh, 2);
        assert!(plan.has_changes());
        mock.calls.lock().expect("lock").clear();
        let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
        let by_id = outcomes(&report);
        assert_eq!(by_id["config"], Outcome::Updated);
        assert_eq!(by_id["restart"], Outcome::Refreshed);
        assert_eq!(by_id["chain"], Outcome::Refreshed);
        assert_eq!(by_id["other"], Outcome::Unchanged);
        let applied: Vec<String> = mock.calls_of(Operation::Apply);
        assert_eq!(
            applied,
            vec![
                "config".to_owned(),
                "restart".to_owned(),
                "chain".to_owned()
            ]
        );

        // Converged: nothing changes, nothing is refreshed.
        let plan = run(2).await;
        assert!(!plan.has_changes(), "{:?}", plan.summary);

        // A notifier whose change fails refreshes nothing: the listener is skipped.
        mock.fail_apply
            .lock()
            .expect("lock")
            .insert("config".into());
        let plan = run(3).await;
        let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
        let by_id = outcomes(&report);
        assert!(matches!(by_id["config"], Outcome::Failed { .. }));
        assert_eq!(
            by_id["restart"],
            Outcome::Skipped {
                upstream: "config".into()
            }
        );
    }

    #[tokio::test]
    async fn an_inconsistent_apply_result_fails_the_resource_unless_unchecked() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mock, e, plan) = planned(&dir, &[]).await;
        mock.inconsistent.lock().expect("lock").insert("z".into());
        let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
        let by_id = outcomes(&report);
        assert_eq!(
            by_id["z"],
            Outcome::Failed {
                error: "provider `mock` produced an inconsistent result for resource `z`: a fresh read after apply differs in /ghost (set `consistency_check: false` on the provider for eventually consistent APIs)".into()
            }
        );
        assert_eq!(by_id["a"], Outcome::Created);

        let (mock, e, plan) = planned(&dir, &[]).await;
        mock.inconsistent.lock().expect("lock").insert("z".into());
        let options = RunOptions {
            unchecked_providers: BTreeSet::from(["mock".to_owned()]),
            ..RunOptions::default()
        };
        let report = e.apply(&plan, &options, &mut |_| {}).await;
        assert!(report.succeeded(), "checks off: {:?}", report.results);
    }

    #[tokio::test]
    async fn cancellation_starts_nothing_new_and_reports_what_was_not_done() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_mock, e, plan) = planned(&dir, &[]).await;
        let options = RunOptions::default();
        options
            .cancel
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let report = e.apply(&plan, &options, &mut |_| {}).await;
        assert!(!report.succeeded());
        assert_eq!(report.counts().skipped, 4);
        assert!(report.results.iter().all(|r| r.outcome
            == Outcome::NotStarted {
                reason: "the run was interrupted".into()
            }));
    }

    #[tokio::test]
    async fn fail_fast_leaves_later_work_not_started() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_mock, e, plan) = planned(&dir, &["a"]).await;
        let options = RunOptions {
            parallelism: 1,
            fail_fast: true,
            ..RunOptions::default()
        };
        let report = e.apply(&plan, &options, &mut |_| {}).await;
        let by_id = outcomes(&report);
        assert!(matches!(by_id["a"], Outcome::Failed { .. }));
        assert_eq!(
            by_id["b"],
            Outcome::Skipped {
                upstream: "a".into()
            }
        );
        assert!(
            matches!(by_id["z"], Outcome::NotStarted { .. }),
            "{:?}",
            by_id["z"]
        );
    }

    #[tokio::test]
    async fn saved_plan_goes_stale_when_the_system_moves() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Setup::new(&dir, THREE, &[]).await;
        assert!(crate::plan::check_saved(&s.plan, &s.replan().await).is_empty());
        s.mock
            .state
            .lock()
            .expect("state")
            .insert("z".into(), serde_json::json!({"name": "z", "value": 0}));
        let found = crate::plan::check_saved(&s.plan, &s.replan().await);
        assert!(
            matches!(&found[..], [crate::plan::Mismatch::Stale { id, .. }] if id == "z"),
            "{found:?}"
        );
    }
}
