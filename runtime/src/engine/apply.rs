//! Applying: every resource after what it depends on, independent ones in parallel,
//! journaled ahead of and after each change, a failure skipping only its dependents.

use super::known::{Known, Shared, lookup};
use super::plan::plan_one;
use super::report::{ApplyReport, Event, Outcome, ResourceResult};
use super::{Engine, Journal, RunOptions};
use crate::graph::walk::{self, NotRun, Progress, StopReason, Visited, WalkSpec};
use crate::manifest::refs;
use crate::plan::{self, Plan, PlannedResource};
use crate::provider::{Action, CallContext, Provider, ProviderError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{Instrument, info_span};

impl Engine {
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
        let schedule = self.schedule(
            rs.iter().map(|r| (r.provider.as_str(), r.locks.as_slice())),
            options,
        );
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
            group: schedule.group,
            group_limits: schedule.group_limits,
            locks: schedule.locks,
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
