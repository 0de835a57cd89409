//! `tenet apply`: plan, show, confirm, converge — independent resources in parallel, with
//! live progress on a terminal or a JSON event stream (`--json`). Given a saved plan
//! (`plan --out`), apply exactly that plan, but only if the manifest, the providers and
//! every resource's observed state are still what the plan was computed from. The
//! operation is [`crate::run::apply`]; this is its terminal: the confirmation prompt,
//! the progress display, the event stream and the summary.
//!
//! Ctrl-C once: start nothing new, let the calls in flight finish (they are bounded by
//! their deadlines; writes are atomic), print what was and was not done. Twice: exit now.

use super::args::parse_timeout;
use super::progress::LiveProgress;
use super::{EXIT_ERROR, ManifestArgs, RunArgs, render};
use crate::engine::{Event, OutcomeCounts};
use crate::plan::Plan;
use crate::run::{
    self, ApplyOutcome, Approve, ApproveError, EventError, RunContext, RunEvent, RunEvents,
};
use crate::session::Session;
use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How many of the slowest resources the summary names.
const SLOWEST_SHOWN: usize = 5;
/// Exit code after a second Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_ABORTED: i32 = 130;

impl RunControl {
    /// `--json` streams events: there is no one to ask, so it needs `--yes`.
    fn check_json(&self) -> anyhow::Result<()> {
        if self.json && !self.yes {
            bail!("--json needs --yes: there is no one to ask for confirmation in a stream");
        }
        Ok(())
    }
}

/// How a converging run goes: shared by `apply` and `rollback`.
#[derive(Debug, Args)]
pub struct RunControl {
    #[command(flatten)]
    run: RunArgs,
    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Stream one JSON object per event on stdout instead of text (see README); needs
    /// `--yes` or a saved plan.
    #[arg(long)]
    json: bool,
    /// How long to wait for another run holding the state's lock (e.g. `30s`).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_timeout)]
    lock_timeout: std::time::Duration,
    #[command(flatten)]
    overrides: super::args::PolicyOverrides,
}

impl RunControl {
    /// The session's options: the manifest's, with this run's policy overrides.
    fn options(&self, manifest: &ManifestArgs) -> anyhow::Result<crate::session::SessionOptions> {
        Ok(crate::session::SessionOptions {
            policy_overrides: self.overrides.pairs()?,
            ..manifest.session_options()?
        })
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file or directory, or a plan saved with `tenet plan --out FILE`.
    #[command(flatten)]
    manifest: ManifestArgs,
    #[command(flatten)]
    control: RunControl,
    /// Start nothing new after the first failure (resources in flight finish).
    #[arg(long)]
    fail_fast: bool,
    /// Set by `tenet rollback`: the run whose desired state this one restores.
    #[arg(skip)]
    rollback_of: Option<u64>,
}

/// `tenet rollback RUN`: plan the desired state recorded by an earlier run (its manifest
/// files and variables) against today's system, show it, and apply it on confirmation.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The run to go back to (its number in `tenet history`).
    run_id: u64,
    #[command(flatten)]
    manifest: ManifestArgs,
    #[command(flatten)]
    control: RunControl,
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<u8> {
    args.control.check_json()?;
    let options = args.control.options(&args.manifest)?;
    let target = run::rollback_target(&options.state, &options.path, args.run_id, &options.vars)?;
    let rec = &target.record;
    let session = Session::open_snapshot(&options, target.snapshot.clone()).await?;
    if !args.control.json {
        println!(
            "Rolling back to the desired state of run #{} ({} by {}@{}, manifest sha256 {}).\n",
            args.run_id, rec.started_at, rec.user, rec.host, rec.manifest_sha256
        );
    }
    super::print_warnings(&session);
    let apply = ApplyArgs {
        manifest: args.manifest,
        control: args.control,
        fail_fast: false,
        rollback_of: Some(args.run_id),
    };
    converge(&session, &apply, None).await
}

pub async fn execute(args: ApplyArgs) -> anyhow::Result<u8> {
    if let Some(saved) = crate::plan::file::read(&args.manifest.path)? {
        // The manifest the plan was made from, with the variables given now.
        let options = crate::session::SessionOptions {
            path: saved.manifest.path.clone().into(),
            ..args.control.options(&args.manifest)?
        };
        let session = Session::open(&options).await?;
        return converge(&session, &args, Some(&saved)).await;
    }
    args.control.check_json()?;
    let session = Session::open(&args.control.options(&args.manifest)?).await?;
    super::print_warnings(&session);
    converge(&session, &args, None).await
}

/// Apply the session's manifest (or `saved`), rendering as the run goes, and map the
/// outcome to an exit code.
async fn converge(session: &Session, args: &ApplyArgs, saved: Option<&Plan>) -> anyhow::Result<u8> {
    let json = args.control.json;
    let cancel = Arc::new(AtomicBool::new(false));
    let mut events = Terminal::new(json, cancel.clone());
    let mut approve: Box<dyn Approve> = if args.control.yes {
        Box::new(run::AutoApprove)
    } else {
        Box::new(Prompt)
    };
    let outcome = run::apply(
        &mut RunContext {
            session,
            state: args.manifest.location.location(),
            settings: run::Settings {
                parallelism: args.control.run.parallelism,
                fail_fast: args.fail_fast,
                lock_timeout: args.control.lock_timeout,
                cancel,
                rollback_of: args.rollback_of,
                // A stream reports every run the same way.
                walk_converged: json,
            },
            approve: approve.as_mut(),
            events: &mut events,
        },
        saved.map(|plan| run::SavedPlan {
            plan,
            file: &args.manifest.path,
        }),
    )
    .await;
    events.stop_watching();
    if let Some(e) = events.failed.take() {
        return Err(e.into());
    }
    match outcome? {
        ApplyOutcome::Declined => {
            println!("Apply cancelled; nothing was changed.");
            Ok(EXIT_ERROR)
        }
        ApplyOutcome::Denied { run, .. } => {
            if !json {
                println!(
                    "Apply refused by policy: nothing was changed (recorded as run #{run}, `tenet show {run}`)."
                );
            }
            Ok(super::EXIT_DENIED)
        }
        ApplyOutcome::Converged { .. } => Ok(0),
        ApplyOutcome::Applied(applied) => {
            let run_id = applied
                .recorded
                .context("the run finished but could not be recorded in the state")?;
            if !json {
                println!("Recorded as run #{run_id} (`tenet show {run_id}`).");
            }
            Ok(if applied.report.succeeded() {
                0
            } else {
                EXIT_ERROR
            })
        }
    }
}

/// Asks on the terminal; only `yes` is accepted.
struct Prompt;

impl Approve for Prompt {
    fn approve(&mut self, _plan: &Plan) -> Result<bool, ApproveError> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(
                "apply needs confirmation and standard input is not a terminal: pass --yes to apply without asking"
                    .into(),
            );
        }
        print!("\nDo you want to apply these changes? Only 'yes' is accepted: ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        Ok(answer.trim() == "yes")
    }
}

/// The run-level events of `--json` (resource events come from the engine).
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum JsonEvent<'a> {
    /// What the policies decided, before anything runs (one event per stage).
    Policy {
        decision: &'a crate::policy::Decision,
    },
    RunStarted {
        resources: usize,
        changes: usize,
        parallelism: usize,
    },
    RunFinished {
        succeeded: bool,
        interrupted: bool,
        duration_ms: f64,
        counts: OutcomeCounts,
    },
}

fn emit(value: &impl Serialize) {
    if let Ok(line) = serde_json::to_string(value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// A run on the terminal: the plan, live progress and result lines, the summary — or,
/// with `--json`, one JSON object per event.
struct Terminal {
    json: bool,
    cancel: Arc<AtomicBool>,
    progress: Option<LiveProgress>,
    interrupts: Option<tokio::task::JoinHandle<()>>,
    /// The first write that failed (a closed pipe): reported once the run returns.
    failed: Option<std::io::Error>,
}

impl Terminal {
    fn new(json: bool, cancel: Arc<AtomicBool>) -> Self {
        Terminal {
            json,
            cancel,
            progress: None,
            interrupts: None,
            failed: None,
        }
    }

    fn stop_watching(&mut self) {
        if let Some(w) = self.interrupts.take() {
            w.abort();
        }
    }

    fn write(&mut self, result: std::io::Result<()>) {
        if let Err(e) = result
            && self.failed.is_none()
        {
            self.failed = Some(e);
        }
    }
}

impl RunEvents for Terminal {
    fn event(&mut self, event: RunEvent<'_>) -> Result<(), EventError> {
        match event {
            RunEvent::Recovered { pending } => {
                let list: Vec<String> = pending
                    .iter()
                    .map(|e| format!("{} ({})", e.id, e.action))
                    .collect();
                eprintln!(
                    "warning: the previous run (pid {}) was killed while changing: {}; they are read again and converged now (recorded in the history as interrupted)",
                    pending[0].pid,
                    list.join(", ")
                );
            }
            RunEvent::Planned(plan) => {
                if !self.json {
                    render::plan(&plan.redacted())?;
                } else {
                    for decision in &plan.policy {
                        emit(&JsonEvent::Policy { decision });
                    }
                }
            }
            RunEvent::Started {
                resources,
                changes,
                parallelism,
            } => {
                if self.json {
                    emit(&JsonEvent::RunStarted {
                        resources,
                        changes,
                        parallelism,
                    });
                } else {
                    let mut out = std::io::stdout().lock();
                    writeln!(out)?;
                    out.flush()?;
                }
                self.interrupts = Some(watch_interrupts(self.cancel.clone()));
                self.progress = Some(LiveProgress::new(resources, !self.json));
            }
            RunEvent::Resource { event, change } => {
                if self.json {
                    let mut value = serde_json::to_value(event).unwrap_or_default();
                    if let (Some(k), Some(map)) = (change, value.as_object_mut()) {
                        map.insert("change".into(), k.into());
                    }
                    emit(&value);
                    return Ok(());
                }
                let Some(progress) = self.progress.as_mut() else {
                    return Ok(());
                };
                match event {
                    Event::ResourceStarted { id, .. } => progress.started(id),
                    Event::ResourceRetrying {
                        id,
                        attempt,
                        error,
                        wait_ms,
                    } => progress.println(&render::retry_line(id, *attempt, error, *wait_ms)),
                    Event::ResourceFinished(r) => {
                        progress.finished(&r.id);
                        if let Some(mut line) = render::result_line(r) {
                            if let Some(k) = change {
                                line = format!("{} ({k})\n", line.trim_end());
                            }
                            progress.println(&line);
                        }
                    }
                }
            }
            RunEvent::LockLost(err) => eprintln!("error: {err}"),
            RunEvent::Finished {
                report,
                interrupted,
                elapsed,
            } => {
                if let Some(p) = self.progress.take() {
                    p.finish();
                }
                self.stop_watching();
                if self.json {
                    emit(&JsonEvent::RunFinished {
                        succeeded: report.succeeded(),
                        interrupted,
                        duration_ms: crate::engine::millis(elapsed),
                        counts: report.counts(),
                    });
                    return Ok(());
                }
                let mut text = format!("\n{}", render::apply_summary(report));
                text.push_str(&render::slowest(&report.slowest(SLOWEST_SHOWN), elapsed));
                if interrupted {
                    text.push_str(
                        "Interrupted: resources marked not started were left as they were.\n",
                    );
                }
                let mut out = anstream::stdout();
                // The run goes on to be recorded; the failure is reported once it is.
                let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                self.write(written);
            }
        }
        Ok(())
    }
}

/// On Ctrl-C: stop starting work; on a second one: exit at once.
fn watch_interrupts(cancel: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.store(true, Ordering::SeqCst);
            eprintln!(
                "\nInterrupted: starting nothing new, waiting for the resources in flight \
                 (Ctrl-C again to abort at once)."
            );
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("Aborted.");
                std::process::exit(EXIT_ABORTED);
            }
        }
    })
}
