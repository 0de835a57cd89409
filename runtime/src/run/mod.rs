//! The use cases, shared by every caller (the CLI today; the agent, policy and fleets
//! next) — Terraform's `backend/local`: [`plan()`], [`apply()`] (also of a saved plan,
//! and of a rollback's target), [`drift()`], and the bookkeeping they share ([`record`]:
//! the lock, recovering a killed run, orphans, recording). Each works on a
//! [`RunContext`]: a loaded [`Session`], where the state lives, the run's
//! [`Settings`], something that [`Approve`]s a plan and a sink for [`RunEvent`]s.
//!
//! Nothing here prints or reads a terminal: the CLI renders events and outcomes, and
//! maps them to exit codes.

mod apply;
mod drift;
mod journal;
pub mod record;
mod rollback;

pub use apply::{Applied, ApplyOutcome, SavedPlan, apply};
pub use drift::{Checked, Drift, DriftedField, drift};
pub use rollback::{RollbackTarget, rollback_target};

use crate::engine::{ApplyReport, Event, RunOptions};
use crate::plan::Plan;
use crate::session::Session;
use crate::state::{JournalEntry, Location, StateError, StateStore};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// How a run goes, as its caller asked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most provider calls in flight at once.
    pub parallelism: usize,
    /// Start nothing new after the first failure.
    pub fail_fast: bool,
    /// How long to wait for another run holding the state's lock.
    pub lock_timeout: Duration,
    /// Set by the caller (Ctrl-C, an agent shutting down) to start nothing new.
    pub cancel: Arc<AtomicBool>,
    /// This run restores the desired state recorded by that run (`tenet rollback`).
    pub rollback_of: Option<u64>,
    /// Walk a plan with nothing to change too, so every resource reports `unchanged`
    /// (an event stream reports every run the same way); otherwise such a run is only
    /// recorded.
    pub walk_converged: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            parallelism: crate::engine::DEFAULT_PARALLELISM,
            fail_fast: false,
            lock_timeout: Duration::ZERO,
            cancel: Arc::new(AtomicBool::new(false)),
            rollback_of: None,
            walk_converged: false,
        }
    }
}

/// Decides whether a plan with changes may be applied: a terminal prompt, `--yes`, and
/// later a policy decision or an agent's rule.
pub trait Approve: Send {
    fn approve(&mut self, plan: &Plan) -> Result<bool, ApproveError>;
}

/// Why an approver could not decide (no terminal to ask, say).
pub type ApproveError = Box<dyn std::error::Error + Send + Sync>;

/// Approves every plan (`--yes`, a saved plan, a plan or drift check that applies
/// nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct AutoApprove;

impl Approve for AutoApprove {
    fn approve(&mut self, _plan: &Plan) -> Result<bool, ApproveError> {
        Ok(true)
    }
}

/// What a run reports as it goes, in order.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A killed run left these changes half done: they were recorded as interrupted
    /// and are read again by this run's plan.
    Recovered { pending: &'a [JournalEntry] },
    /// The plan, before it is approved.
    Planned(&'a Plan),
    /// The walk starts.
    Started {
        resources: usize,
        changes: usize,
        parallelism: usize,
    },
    /// A resource started or finished; `change` says whether a finished change was
    /// `corrective` (the system drifted) or `intentional`.
    Resource {
        event: &'a Event,
        change: Option<&'static str>,
    },
    /// Another run took the state's lock: this one starts nothing more.
    LockLost(&'a StateError),
    /// The walk ended; the run is recorded next (its number is in the outcome).
    Finished {
        report: &'a ApplyReport,
        interrupted: bool,
        elapsed: Duration,
    },
}

/// Receives a run's events (the CLI's progress line and `--json` stream; later metrics).
pub trait RunEvents: Send {
    /// `Err` from an event before the walk (a plan that could not be shown, say) stops
    /// the run before anything changes; once the walk has started, the run goes on and
    /// an error is the sink's to report.
    fn event(&mut self, event: RunEvent<'_>) -> Result<(), EventError>;
}

/// Why a sink could not take an event (its output closed, say).
pub type EventError = Box<dyn std::error::Error + Send + Sync>;

/// Ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl RunEvents for NoEvents {
    fn event(&mut self, _event: RunEvent<'_>) -> Result<(), EventError> {
        Ok(())
    }
}

/// What one use case works on.
pub struct RunContext<'a> {
    pub session: &'a Session,
    /// Where the session's state lives.
    pub state: Location,
    pub settings: Settings,
    pub approve: &'a mut dyn Approve,
    pub events: &'a mut dyn RunEvents,
}

impl RunContext<'_> {
    fn options(&self) -> RunOptions {
        RunOptions {
            cancel: self.settings.cancel.clone(),
            ..self
                .session
                .run_options(self.settings.parallelism, self.settings.fail_fast)
        }
    }

    /// Open (creating if needed) the session's state.
    fn open_state(&self) -> Result<Arc<dyn StateStore>, RunError> {
        let path = &self.session.manifest.path;
        self.state.open(path).map_err(|source| RunError::OpenState {
            path: self.state.describe(path),
            source: Box::new(source),
        })
    }

    /// The session's state if there is one (reading never creates it).
    fn existing_state(&self) -> Result<Option<Arc<dyn StateStore>>, RunError> {
        if self.state.exists_for(&self.session.manifest.path) {
            self.open_state().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the state at {path}")]
    OpenState {
        path: String,
        #[source]
        source: Box<StateError>,
    },
    #[error(transparent)]
    State(Box<StateError>),
    /// The run refuses to go on (a stale or edited saved plan, a rollback target that
    /// cannot be restored); the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// The approver could not decide.
    #[error(transparent)]
    Approve(ApproveError),
    /// The event sink failed before the walk: nothing was changed.
    #[error(transparent)]
    Events(EventError),
    /// The policies could not decide (an error, a timeout): nothing was changed.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

impl From<StateError> for RunError {
    fn from(e: StateError) -> Self {
        RunError::State(Box::new(e))
    }
}

/// Run a synchronous state call on tokio's blocking pool, so that a store that waits
/// (for another run's lock, on a network database) never holds up a runtime worker. A
/// panic in the call goes on unwinding here, as it would have on the caller's thread.
pub(crate) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down.
        Err(e) => Err(StateError::Database {
            path: "the state".into(),
            message: format!("the state call was cancelled: {e}"),
        }),
    }
}

/// Plan the session's manifest against the system, plus — given the state — the
/// deletion of what the state remembers and the manifest no longer declares.
pub async fn plan_against(
    session: &Session,
    state: Option<&dyn StateStore>,
    options: &RunOptions,
) -> Result<Plan, StateError> {
    let (gone, forget) = match state {
        Some(store) => record::orphans(store, &session.manifest)?,
        None => (Vec::new(), Vec::new()),
    };
    let mut plan = session
        .engine()
        .plan_with_orphans(
            &session.manifest,
            &session.graph,
            &gone,
            session.pins(),
            options,
        )
        .await;
    plan.forget = forget;
    Ok(plan)
}

/// Judge `plan` by the session's policies (its plan stage), for `command`: the
/// decisions go into the plan, after the preflight one.
fn judge(session: &Session, plan: &mut Plan, command: &str) -> Result<(), RunError> {
    let Some(policies) = &session.policies else {
        return Ok(());
    };
    let m = &session.manifest;
    let started = std::time::Instant::now();
    let doc = crate::policy::input::build(
        crate::policy::Stage::Plan,
        Some(command),
        m,
        Some((plan, &plan.providers)),
        &session.requested(),
        &crate::policy::input::RunFacts::now(),
    );
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        "policy input built"
    );
    let decision = crate::policy::evaluate(policies, crate::policy::Stage::Plan, doc, m)?;
    plan.policy = session.preflight.iter().cloned().collect();
    plan.policy.push(decision);
    Ok(())
}

/// A plan, and the run that recorded it.
#[derive(Debug)]
pub struct Planned {
    /// With sensitive values in clear: redact before it leaves the process.
    pub plan: Plan,
    /// Its number in the history, when there is a state to record it in (a plan never
    /// creates one).
    pub run: Option<u64>,
}

/// `tenet plan`: what apply would change. Reads every resource with read-only access;
/// recorded in the history when there is a state.
pub async fn plan(cx: &mut RunContext<'_>) -> Result<Planned, RunError> {
    let started_at = crate::state::now();
    let store = cx.existing_state()?;
    let mut plan = plan_against(cx.session, store.as_deref(), &cx.options()).await?;
    judge(cx.session, &mut plan, "plan")?;
    let run = match &store {
        Some(store) => {
            let (store, manifest, planned) =
                (store.clone(), cx.session.manifest.clone(), plan.clone());
            Some(
                blocking(move || {
                    record::remember_plan(store.as_ref(), &manifest, &planned, &started_at)
                })
                .await?,
            )
        }
        None => None,
    };
    cx.events
        .event(RunEvent::Planned(&plan))
        .map_err(RunError::Events)?;
    Ok(Planned { plan, run })
}

#[cfg(test)]
mod tests;
