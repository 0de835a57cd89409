//! Applying: every resource after what it depends on, independent ones in parallel,
//! journaled ahead of and after each change, a failure skipping only its dependents.
//!
//! Beyond dependencies (`orchestrate.rs` has the details): a failure its provider marks
//! transient is tried again (`retry:`, within `timeout:`); a health gate is checked on
//! every run and never counts as a change; a failure handler runs only when what it
//! watches fails; a rolling group changes a batch at a time.

use super::known::{Known, Shared, lookup};
use super::orchestrate::{Conductor, Failure};
use super::report::{ApplyReport, Event, Outcome, ResourceResult, Retried};
use super::{Engine, Journal, RunOptions};
use crate::graph::walk::{self, NotRun, Progress, StopReason, Visited, WalkSpec};
use crate::manifest::refs;
use crate::plan::{self, Plan, PlannedResource};
use crate::provider::{Action, CallContext, Provider, ProviderError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
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
        let schedule = self.schedule(
            rs.iter().map(|r| (r.provider.as_str(), r.locks.as_slice())),
            options,
        );
        let conductor = Conductor::of(rs);
        // Retries are reported as they happen, from inside the resources' tasks: sent
        // here, and the walk woken to pass them on.
        let (retry_tx, retry_rx) = mpsc::channel::<Event>();
        let wake = Arc::new(tokio::sync::Notify::new());
        let spec = WalkSpec {
            deps: conductor.deps.clone(),
            after: conductor.after.clone(),
            group: schedule.group,
            group_limits: schedule.group_limits,
            locks: schedule.locks,
            parallelism: options.parallelism,
            skip_after_failure: true,
            fail_fast: options.fail_fast,
            wake: Some(wake.clone()),
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
        let plan_rs: Arc<Vec<PlannedResource>> = Arc::new(rs.clone());
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
                let conductor = conductor.clone();
                let plan_rs = plan_rs.clone();
                let retry_tx = (retry_tx.clone(), wake.clone());
                let cancel = options.cancel.clone();
                let span = info_span!("apply", resource = %r.id, r#type = %r.type_name, action = %r.action);
                async move {
                    let began = Instant::now();
                    // A rolling batch whose group already failed too often, and a failure
                    // handler whose watched resources did not fail, do not run.
                    if let Some(reason) = conductor.held_back(i, &plan_rs) {
                        return ((Ok((Outcome::NotStarted { reason }, None)), Vec::new()), true);
                    }
                    if let Err(outcome) = conductor.triggered(i, &plan_rs) {
                        return ((Ok((outcome, None)), Vec::new()), false);
                    }
                    let handler = !r.orchestration.on_failure_of.is_empty();
                    let intent = match &journal {
                        Some(j)
                            if r.action != Action::None
                                || r.error.is_some()
                                || r.refresh
                                || handler
                                || r.orchestration.deferred.is_some() =>
                        {
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
                    let mut retried = Vec::new();
                    let result = match provider {
                        Ok(p) => {
                            let started = AtomicUsize::new(0);
                            let job = Job {
                                p: p.as_ref(),
                                r: &r,
                                known: &known,
                                index: &index,
                                notified,
                                check,
                            };
                            let attempts = attempts(
                                job,
                                &retry_tx,
                                &cancel,
                                &started,
                                &mut retried,
                            );
                            match r.orchestration.timeout_ms {
                                None => attempts.await,
                                Some(ms) => {
                                    let limit = Duration::from_millis(ms);
                                    let timed = tokio::time::timeout(limit, attempts).await;
                                    match timed {
                                        Ok(done) => done,
                                        // The attempt in flight is abandoned: the sandbox
                                        // drops its instance, which can run no more.
                                        Err(_) => {
                                            // Out of time while waiting to try again:
                                            // the last attempt is the one that failed.
                                            let n = started.load(Ordering::Relaxed);
                                            let last = if n == retried.len() {
                                                retried.pop().map(|a| format!(": {}", a.error))
                                            } else {
                                                None
                                            };
                                            Err(format!(
                                                "did not finish within its timeout of {} ({n} attempt{}){}",
                                                humantime::format_duration(limit),
                                                if n == 1 { "" } else { "s" },
                                                last.unwrap_or_default()
                                            ))
                                        }
                                    }
                                }
                            }
                        }
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
                            retried: retried.clone(),
                        };
                        j.finish(&r, &done).await;
                    }
                    let failed = result.is_err();
                    ((result, retried), failed)
                }
                .instrument(span)
            },
            |progress| {
                for e in retry_rx.try_iter() {
                    on_event(e);
                }
                match progress {
                    Progress::Started(i) => {
                        started[i] = Some(Instant::now());
                        let r = &rs[i];
                        if r.action != Action::None
                            || r.error.is_some()
                            || r.refresh
                            || r.orchestration.check
                            || r.orchestration.deferred.is_some()
                            || !r.orchestration.on_failure_of.is_empty()
                        {
                            on_event(Event::ResourceStarted {
                                id: r.id.clone(),
                                type_name: r.type_name.clone(),
                                action: r.action,
                            });
                        }
                    }
                    Progress::Woken => {}
                    Progress::Finished(i, visited) => {
                        let r = &rs[i];
                        let (outcome, state, retried) = match visited {
                            Visited::Ran {
                                value: (Ok((outcome, state)), retried),
                                ..
                            } => (outcome.clone(), state.clone(), retried.clone()),
                            Visited::Ran {
                                value: (Err(e), retried),
                                ..
                            } => (Outcome::Failed { error: e.clone() }, None, retried.clone()),
                            Visited::NotRun(NotRun::UpstreamFailed(u)) => (
                                Outcome::Skipped {
                                    upstream: rs[*u].id.clone(),
                                },
                                None,
                                Vec::new(),
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
                                Vec::new(),
                            ),
                        };
                        conductor.finished(
                            i,
                            matches!(outcome, Outcome::Failed { .. }),
                            !outcome.is_success(),
                        );
                        let result = ResourceResult {
                            id: r.id.clone(),
                            type_name: r.type_name.clone(),
                            outcome,
                            duration: started[i].map(|s| s.elapsed()).unwrap_or_default(),
                            state,
                            retried,
                        };
                        on_event(Event::ResourceFinished(result.clone()));
                        results[i] = Some(result);
                    }
                }
            },
        )
        .await;
        // Every resource is reported: one the walk could not order (which validation and
        // the conductor rule out) is not started, never silently missing.
        for (i, slot) in results.iter_mut().enumerate() {
            if slot.is_none() {
                let r = &rs[i];
                let result = ResourceResult {
                    id: r.id.clone(),
                    type_name: r.type_name.clone(),
                    outcome: Outcome::NotStarted {
                        reason: "it could not be ordered among the others".into(),
                    },
                    duration: Duration::ZERO,
                    state: None,
                    retried: Vec::new(),
                };
                on_event(Event::ResourceFinished(result.clone()));
                *slot = Some(result);
            }
        }
        ApplyReport {
            results: results.into_iter().flatten().collect(),
        }
    }
}

/// Apply one resource, trying a transient failure again as its `retry:` allows; each
/// retry is reported on `events` and recorded in `retried`. A retry plans the resource
/// afresh (a failed attempt may have done part of the work).
async fn attempts(
    job: Job<'_>,
    events: &(mpsc::Sender<Event>, Arc<tokio::sync::Notify>),
    cancel: &AtomicBool,
    started: &AtomicUsize,
    retried: &mut Vec<Retried>,
) -> Result<(Outcome, Option<Value>), String> {
    let r = job.r;
    loop {
        let attempt = retried.len() + 1;
        started.store(attempt, Ordering::Relaxed);
        let once = apply_checked(job, attempt > 1).await;
        let failure = match once {
            Ok(done) => return Ok(done),
            Err(f) => f,
        };
        let limit = r.orchestration.retry.map_or(1, |x| x.attempts as usize);
        if !failure.transient || attempt >= limit || cancel.load(Ordering::Relaxed) {
            return Err(if attempt > 1 {
                format!("{} (attempt {attempt} of {limit})", failure.message)
            } else {
                failure.message
            });
        }
        let wait = r
            .orchestration
            .retry
            .map(|x| x.delay_after(u32::try_from(attempt).unwrap_or(u32::MAX)))
            .unwrap_or_default();
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let _ = events.0.send(Event::ResourceRetrying {
            id: r.id.clone(),
            attempt,
            error: failure.message.clone(),
            wait_ms,
        });
        events.1.notify_one();
        tracing::info!(resource = %r.id, attempt, wait_ms, error = %failure.message, "transient failure: trying again");
        retried.push(Retried {
            attempt,
            error: failure.message,
            wait_ms,
        });
        // Interruptible: Ctrl-C during a long wait starts no further attempt.
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if cancel.load(Ordering::Relaxed) {
                return Err(format!(
                    "the run was interrupted while waiting to try again (after {attempt} attempts)"
                ));
            }
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }
}

/// What applying one resource needs: its provider, its plan, what others offer its
/// references, whether a notifier changed, whether to check the provider's result.
#[derive(Clone, Copy)]
struct Job<'a> {
    p: &'a dyn Provider,
    r: &'a PlannedResource,
    known: &'a Shared,
    index: &'a BTreeMap<String, usize>,
    notified: bool,
    check: bool,
}

/// One attempt: apply, then (for changes) the contract check.
async fn apply_checked(job: Job<'_>, fresh: bool) -> Result<(Outcome, Option<Value>), Failure> {
    let (p, r) = (job.p, job.r);
    match apply_one(job, fresh).await? {
        (outcome, Some(state), desired)
            if job.check
                && matches!(
                    outcome,
                    Outcome::Created | Outcome::Updated | Outcome::Replaced | Outcome::Refreshed
                ) =>
        {
            consistent(p, r, &desired, &state).await?;
            Ok((outcome, Some(state)))
        }
        (outcome, state, _) => Ok((outcome, state)),
    }
}

/// Apply one planned resource; returns the outcome, the new state and the desired
/// properties it was applied with (references resolved). `fresh`: plan it again first
/// (a retry, or a failure handler: the system moved since the plan).
async fn apply_one(job: Job<'_>, fresh: bool) -> Result<(Outcome, Option<Value>, Value), Failure> {
    let Job {
        p,
        r,
        known,
        index,
        notified,
        ..
    } = job;
    if let Some(e) = &r.error {
        // Could not be planned: it fails, its dependents are skipped, the rest runs.
        return Err(format!("could not be planned: {e}").into());
    }
    let cx = CallContext { resource: &r.id };
    // Values that were known only after apply are known now.
    let desired = if r.unknown.is_empty() {
        r.desired.clone()
    } else {
        let resolved = {
            let known = known.lock().unwrap_or_else(|e| e.into_inner());
            refs::resolve(&r.desired, &|t, f| lookup(&known, index, t, f))
        };
        if !resolved.unknown.is_empty() {
            return Err(format!(
                "values still unknown after the resources it references were applied: {}",
                resolved.unknown.join(", ")
            )
            .into());
        }
        resolved.value
    };
    if r.orchestration.check {
        // A health gate: waits (in its provider) until healthy, on every run, after what
        // it depends on changed. Never a change.
        let state = p.apply(cx, &r.kind, &desired, r.current.as_ref()).await?;
        return Ok((Outcome::Checked, Some(state), desired));
    }
    let handler = !r.orchestration.on_failure_of.is_empty();
    if r.unknown.is_empty() && !fresh && !handler && r.orchestration.deferred.is_none() {
        if notified && r.action == Action::None {
            // Refresh: unchanged itself, but a resource it listens to changed in this run.
            let state = p.apply(cx, &r.kind, &desired, r.current.as_ref()).await?;
            return Ok((Outcome::Refreshed, Some(state), desired));
        }
        let (outcome, state) =
            act(p, &r.id, &r.kind, r.action, &desired, r.current.as_ref()).await?;
        return Ok((outcome, state, desired));
    }
    let current = p.read(cx, &r.kind, &desired).await?;
    let diff = p.diff(cx, &r.kind, &desired, current.as_ref()).await?;
    if notified && diff.action == Action::None {
        let state = p.apply(cx, &r.kind, &desired, current.as_ref()).await?;
        return Ok((Outcome::Refreshed, Some(state), desired));
    }
    // Never do more than the plan showed: it promised a create or an in-place update.
    if matches!(diff.action, Action::Replace | Action::Delete)
        && !matches!(r.action, Action::Replace | Action::Delete)
    {
        return Err(format!(
            "applying it now would {} it, which the plan did not show; run plan again",
            diff.action
        )
        .into());
    }
    if fresh && diff.action == Action::None && !handler && r.orchestration.deferred.is_none() {
        // A failed attempt did the work after all: report the change the plan promised.
        let outcome = match r.action {
            Action::Create => Outcome::Created,
            Action::Update => Outcome::Updated,
            Action::Replace => Outcome::Replaced,
            Action::Delete => Outcome::Deleted,
            Action::None => Outcome::Unchanged,
        };
        return Ok((outcome, current, desired));
    }
    let (outcome, state) = act(p, &r.id, &r.kind, diff.action, &desired, current.as_ref()).await?;
    Ok((outcome, state, desired))
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
) -> Result<(Outcome, Option<Value>), Failure> {
    let cx = CallContext { resource: id };
    let err = |e: ProviderError| Failure::from(e);
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
