//! Planning: read and diff every declared resource (and every orphan the state
//! remembers), independent ones in parallel, with references resolved from what is
//! known before anything is applied.

use super::known::{KNOWN_AFTER_APPLY, Known, Shared, lookup};
use super::{Engine, Orphan, RunOptions};
use crate::graph::Graph;
use crate::graph::walk::{self, Visited, WalkSpec};
use crate::manifest::{Manifest, refs};
use crate::plan::{self, ManifestRef, Orchestration, Plan, PlannedResource, ProviderPin, Summary};
use crate::provider::{Action, CallContext, Diff, FieldChange, KindInfo, Provider};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tracing::{Instrument, info_span};

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

impl Engine {
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
        let schedule = self.schedule(
            rs.iter()
                .map(|r| (r.provider.as_str(), r.locks.as_slice()))
                .chain(orphans.iter().map(|o| (o.provider.as_str(), &[][..]))),
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
            group: schedule.group,
            group_limits: schedule.group_limits,
            locks: schedule.locks,
            parallelism: options.parallelism,
            after: Vec::new(),
            skip_after_failure: false,
            fail_fast: false,
            wake: None,
        };
        // Batched reads first: one call per provider and kind for every resource the
        // walk would read one by one.
        let prefetched = Arc::new(Mutex::new(self.prefetch(rs).await));
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
                let read = prefetched
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&i);
                let span = info_span!("plan", resource = %r.id, r#type = %r.type_name);
                let fut: PlanFuture<'_> = Box::pin(async move {
                    let resolved = {
                        let known = known.lock().unwrap_or_else(|e| e.into_inner());
                        refs::resolve(&desired, &|t, f| lookup(&known, &index, t, f))
                    };
                    let result = match (provider, read) {
                        (Ok(p), Some(read)) => match read {
                            Ok(current) => diff_read(p.as_ref(), &id, &kind, &resolved.value, current).await,
                            Err(e) => Err(e),
                        },
                        (Ok(p), None) => plan_resolved(p.as_ref(), &id, &kind, &resolved).await,
                        (Err(e), _) => Err(e),
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
                        locks: Vec::new(),
                        orchestration: Default::default(),
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
                            locks: r.locks.clone(),
                            orchestration: Orchestration {
                                retry: r.retry.or_else(|| {
                                    manifest.providers.get(&r.provider).and_then(|p| p.retry)
                                }),
                                timeout_ms: r
                                    .timeout
                                    .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                                on_failure_of: r.on_failure.iter().map(|d| d.id.clone()).collect(),
                                rolling: r.rolling.clone(),
                                check: self
                                    .providers
                                    .get(&r.provider)
                                    .and_then(|p| p.info().kinds.get(&r.kind))
                                    .is_some_and(KindInfo::is_check),
                                deferred: None,
                            },
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
        // A resource that cannot be read while a health check it depends on is waiting
        // (the service it lives in is not up yet) is planned when the check passed,
        // during the apply — in execution order, so what depends on it waits too.
        let mut waiting: BTreeSet<usize> = BTreeSet::new();
        for &i in graph.order() {
            let Some(r) = by_index[i].as_mut() else {
                continue;
            };
            if r.orchestration.check && r.error.is_none() && r.action != Action::None {
                waiting.insert(i);
                continue;
            }
            // Only a failed read or diff (its action is still none): a refusal such as
            // prevent_destroy's (a replace or delete) stays an error.
            let Some(e) = r.error.as_ref().filter(|_| r.action == Action::None) else {
                continue;
            };
            let behind = graph.dependencies(i).iter().find(|d| waiting.contains(d));
            let why = if !r.orchestration.on_failure_of.is_empty() {
                // A failure handler is needed exactly when things are broken: planned
                // when it runs, whatever its plan-time read said.
                format!("planned if it runs (now: {})", crate::diag::one_line(e))
            } else if let Some(&d) = behind {
                waiting.insert(i);
                format!(
                    "planned once `{}` passes (now: {})",
                    rs[d].id,
                    crate::diag::one_line(e)
                )
            } else {
                continue;
            };
            r.orchestration.deferred = Some(why);
            r.error = None;
        }
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
            excluded: manifest.excluded.keys().cloned().collect(),
            summary,
            policy: Vec::new(),
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
        fields.extend(r.sensitive_from_vars.iter().cloned());
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

    /// Read, before the walk, the resources of kinds their provider reads in batches
    /// (`Execution::batched_kinds`) whose properties reference no other resource (so
    /// they are known before anything is planned): one `read_many` per provider and kind
    /// with two or more such resources. By resource index.
    async fn prefetch(
        &self,
        rs: &[crate::manifest::ResourceDecl],
    ) -> BTreeMap<usize, Result<Option<Value>, String>> {
        let mut batches: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for (i, r) in rs.iter().enumerate() {
            let batched = self
                .providers
                .get(&r.provider)
                .is_some_and(|p| p.execution().batched_kinds.contains(&r.kind));
            if batched && refs::find(&r.properties).is_empty() {
                batches
                    .entry((r.provider.as_str(), r.kind.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        let mut out = BTreeMap::new();
        for ((provider, kind), members) in batches {
            let Some(p) = self.providers.get(provider).filter(|_| members.len() > 1) else {
                continue;
            };
            let ids: Vec<&str> = members.iter().map(|&i| rs[i].id.as_str()).collect();
            let props: Vec<Value> = members.iter().map(|&i| rs[i].properties.clone()).collect();
            let span = info_span!("read_many", provider, kind, resources = members.len());
            let results = p.read_many(&ids, kind, &props).instrument(span).await;
            out.extend(
                members
                    .into_iter()
                    .zip(results.into_iter().map(|r| r.map_err(|e| e.to_string()))),
            );
        }
        out
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
}

pub(super) async fn plan_one(
    p: &dyn Provider,
    id: &str,
    kind: &str,
    desired: &Value,
) -> Result<(Option<Value>, Diff), String> {
    let cx = CallContext { resource: id };
    let current = p.read(cx, kind, desired).await.map_err(|e| e.to_string())?;
    diff_read(p, id, kind, desired, current).await
}

/// Diff a resource against the `current` state already read.
async fn diff_read(
    p: &dyn Provider,
    id: &str,
    kind: &str,
    desired: &Value,
    current: Option<Value>,
) -> Result<(Option<Value>, Diff), String> {
    let diff = p
        .diff(
            CallContext { resource: id },
            kind,
            desired,
            current.as_ref(),
        )
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
