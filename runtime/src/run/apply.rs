//! `apply`: take the state's lock, recover what a killed run left half done, plan (or
//! check a saved plan is still exactly what the manifest plans), ask for approval, walk
//! the plan with the journal written ahead of every change, and record the run.

use super::journal::StateJournal;
use super::record::{self, RunIndex};
use super::{RunContext, RunError, RunEvent, blocking, plan_against};
use crate::engine::{ApplyReport, Event, Outcome, ResourceResult, RunOptions};
use crate::manifest::Manifest;
use crate::plan::{Mismatch, Plan};
use crate::state::StateStore;
use crate::state::{RunLock, StateError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A plan saved by `tenet plan --out`, to apply only if it is still exactly what the
/// manifest plans. The session must have been opened on `plan.manifest.path`.
#[derive(Debug)]
pub struct SavedPlan<'a> {
    pub plan: &'a Plan,
    /// The file it was read from (named in refusals).
    pub file: &'a std::path::Path,
}

/// How an apply ended.
#[derive(Debug)]
pub enum ApplyOutcome {
    /// The approver said no: nothing was changed.
    Declined,
    /// A policy denied the plan: nothing was changed; the refusal is recorded as run
    /// `run`.
    Denied { plan: Plan, run: u64 },
    /// Nothing needed to change; the run was recorded (a converged run is evidence of
    /// compliance; forgotten resources still leave the state).
    Converged { plan: Plan, run: u64 },
    /// The plan was walked.
    Applied(Applied),
}

/// A walked plan.
#[derive(Debug)]
pub struct Applied {
    pub plan: Plan,
    pub report: ApplyReport,
    /// The run was cancelled (Ctrl-C, a lost lock) before everything started.
    pub interrupted: bool,
    pub elapsed: Duration,
    /// The run's number in the history. The system changed whatever the state says: a
    /// state that cannot be written is reported after the run's own result.
    pub recorded: Result<u64, StateError>,
}

impl Applied {
    pub fn succeeded(&self) -> bool {
        self.report.succeeded()
    }
}

/// Apply the session's manifest (or `saved`, checked first) and record the run.
pub async fn apply(
    cx: &mut RunContext<'_>,
    saved: Option<SavedPlan<'_>>,
) -> Result<ApplyOutcome, RunError> {
    let (store, timeout) = (cx.open_state()?, cx.settings.lock_timeout);
    let lock = blocking(move || RunLock::take(store, timeout)).await?;
    // Owned once, for the state calls made on the blocking pool.
    let manifest = Arc::new(cx.session.manifest.clone());
    let pending = {
        let (store, manifest) = (lock.store().clone(), manifest.clone());
        blocking(move || record::recover(store.as_ref(), &manifest)).await?
    };
    if !pending.is_empty() {
        cx.events
            .event(RunEvent::Recovered { pending: &pending })
            .map_err(RunError::Events)?;
    }
    let started_at = crate::state::now();
    if let Some(saved) = &saved {
        check_identity(cx, saved.plan)?;
    }
    let options = cx.options();
    let mut plan = plan_against(cx.session, Some(lock.store().as_ref()), &options).await?;
    if let Some(saved) = &saved {
        check_unchanged(saved, &plan)?;
    }
    // The policies judge the plan that is applied (a saved one too: the policies, the
    // clock or the system may have changed since it was reviewed).
    super::judge(cx.session, &mut plan, "apply")?;
    cx.events
        .event(RunEvent::Planned(&plan))
        .map_err(RunError::Events)?;
    if plan.denied() {
        let (store, manifest, denied, started) = (
            lock.store().clone(),
            manifest.clone(),
            plan.clone(),
            started_at.clone(),
        );
        let run =
            blocking(move || record::remember_denied(store.as_ref(), &manifest, &denied, &started))
                .await?;
        return Ok(ApplyOutcome::Denied { plan, run });
    }
    // Nothing to change and no health gate to wait for: nothing to walk.
    if !plan.has_changes()
        && !plan.has_errors()
        && plan.summary.wait == 0
        && !cx.settings.walk_converged
    {
        let report = unchanged(&plan);
        let run = record_apply(
            lock.store(),
            &manifest,
            (&plan, &report),
            &started_at,
            &BTreeMap::new(),
            cx.settings.rollback_of,
        )
        .await?;
        return Ok(ApplyOutcome::Converged { plan, run });
    }
    // A saved plan was approved when it was reviewed; it is exactly what runs.
    if saved.is_none()
        && (plan.has_changes() || plan.has_errors())
        && !cx.approve.approve(&plan).map_err(RunError::Approve)?
    {
        return Ok(ApplyOutcome::Declined);
    }
    walk(cx, (plan, &manifest), options, &lock, &started_at)
        .await
        .map(ApplyOutcome::Applied)
}

/// Record an apply on the blocking pool.
async fn record_apply(
    store: &Arc<dyn StateStore>,
    manifest: &Arc<Manifest>,
    (plan, report): (&Plan, &ApplyReport),
    started_at: &str,
    kinds: &BTreeMap<String, &'static str>,
    rollback_of: Option<u64>,
) -> Result<u64, StateError> {
    let (store, manifest, plan, report) = (
        store.clone(),
        manifest.clone(),
        plan.clone(),
        report.clone(),
    );
    let (started_at, kinds) = (started_at.to_owned(), kinds.clone());
    blocking(move || {
        record::remember(
            store.as_ref(),
            &manifest,
            &plan,
            &report,
            &started_at,
            &kinds,
            rollback_of,
        )
    })
    .await
}

/// The report of a run in which nothing needed to change.
fn unchanged(plan: &Plan) -> ApplyReport {
    ApplyReport {
        results: plan
            .resources
            .iter()
            .map(|r| ResourceResult {
                id: r.id.clone(),
                type_name: r.type_name.clone(),
                // Nothing failed, so no failure handler runs.
                outcome: if r.orchestration.on_failure_of.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::NotTriggered {
                        reason: "nothing it handles failed".into(),
                    }
                },
                duration: Duration::ZERO,
                state: r.current.clone(),
                retried: Vec::new(),
            })
            .collect(),
    }
}

/// Grants as one line, `nothing` when empty.
fn lines(granted: &[String]) -> String {
    if granted.is_empty() {
        "nothing".into()
    } else {
        granted.join("; ")
    }
}

/// A saved plan is refused unless the manifest and every provider (bytes and grants)
/// are those it was made with.
fn check_identity(cx: &RunContext<'_>, plan: &Plan) -> Result<(), RunError> {
    let session = cx.session;
    if session.manifest.sha256 != plan.manifest.sha256 {
        return Err(RunError::Refused(format!(
            "refusing to apply a stale plan: the manifest {} (or its variables) changed since the plan was made \
             (plan: sha256 {}, now: sha256 {}); run `tenet plan` again",
            plan.manifest.path, plan.manifest.sha256, session.manifest.sha256
        )));
    }
    let pins = session.pins();
    for (name, pin) in &plan.providers {
        let refused = match pins.get(name) {
            Some(now)
                if now.component_sha256 == pin.component_sha256 && now.granted == pin.granted =>
            {
                continue;
            }
            Some(now) if now.component_sha256 == pin.component_sha256 => format!(
                "refusing to apply a stale plan: the grants of provider `{name}` changed since the plan was made \
                 (planned with: {}; now: {})",
                lines(&pin.granted),
                lines(&now.granted)
            ),
            Some(now) => format!(
                "refusing to apply a stale plan: provider `{name}` changed since the plan was made \
                 (expected sha256 {}, found {} from {})",
                pin.component_sha256, now.component_sha256, now.source
            ),
            None => {
                format!("refusing to apply a stale plan: provider `{name}` is no longer declared")
            }
        };
        return Err(RunError::Refused(refused));
    }
    Ok(())
}

/// The plan file is only compared, never applied: what runs is the plan the manifest
/// produces now (real sensitive values, today's provider provenance), and it must be
/// exactly what was reviewed — the system unchanged, and the file not edited.
fn check_unchanged(saved: &SavedPlan<'_>, fresh: &Plan) -> Result<(), RunError> {
    let mismatches = crate::plan::check_saved(saved.plan, fresh);
    let (stale, altered): (Vec<_>, Vec<_>) = mismatches
        .iter()
        .partition(|m| matches!(m, Mismatch::Stale { .. }));
    let list = |ms: &[&Mismatch]| -> String {
        ms.iter()
            .map(|m| match m {
                Mismatch::Stale { id, reason } => format!("  {id}: {reason}"),
                Mismatch::Altered { id, what } => format!("  {id}: {what}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    if !altered.is_empty() {
        return Err(RunError::Refused(format!(
            "refusing to apply {}: it is not what the manifest plans (the file was edited after it was made):\n{}\nrun `tenet plan` again and review it",
            saved.file.display(),
            list(&altered)
        )));
    }
    if !stale.is_empty() {
        return Err(RunError::Refused(format!(
            "refusing to apply a stale plan: the system changed since the plan was made:\n{}\nrun `tenet plan` again",
            list(&stale)
        )));
    }
    Ok(())
}

/// Walk the plan, journaling each change, and record the run.
async fn walk(
    cx: &mut RunContext<'_>,
    (plan, manifest): (Plan, &Arc<Manifest>),
    options: RunOptions,
    lock: &RunLock,
    started_at: &str,
) -> Result<Applied, RunError> {
    let store = lock.store();
    let kinds = record::change_kinds(store.as_ref(), &plan)?;
    let index = RunIndex::new(&cx.session.manifest, &plan);
    let journal = StateJournal::new(store.clone(), store.salt()?, &index, options.cancel.clone());
    let lost = journal.lost();
    let started = Instant::now();
    cx.events
        .event(RunEvent::Started {
            resources: plan.resources.len(),
            changes: plan.summary.changes(),
            parallelism: options.parallelism,
        })
        .map_err(RunError::Events)?;
    let events = &mut *cx.events;
    // From here on the walk runs whatever a sink says: what it could not show is its own
    // to report.
    let report_lost = |events: &mut dyn super::RunEvents| {
        if let Some(err) = lost.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = events.event(RunEvent::LockLost(&err));
        }
    };
    let mut on_event = |e: Event| {
        report_lost(&mut *events);
        let change = match &e {
            Event::ResourceFinished(r) => match r.outcome {
                Outcome::Created | Outcome::Updated | Outcome::Replaced | Outcome::Deleted => {
                    kinds.get(&r.id).copied()
                }
                _ => None,
            },
            Event::ResourceStarted { .. } | Event::ResourceRetrying { .. } => None,
        };
        let _ = events.event(RunEvent::Resource { event: &e, change });
    };
    let report = cx
        .session
        .engine()
        .apply_journaled(
            &plan,
            &options,
            Some(std::sync::Arc::new(journal)),
            &mut on_event,
        )
        .await;
    report_lost(&mut *cx.events);
    let interrupted = options.cancel.load(Ordering::SeqCst);
    let elapsed = started.elapsed();
    let _ = cx.events.event(RunEvent::Finished {
        report: &report,
        interrupted,
        elapsed,
    });
    let recorded = record_apply(
        store,
        manifest,
        (&plan, &report),
        started_at,
        &kinds,
        cx.settings.rollback_of,
    )
    .await;
    Ok(Applied {
        plan,
        report,
        interrupted,
        elapsed,
        recorded,
    })
}
