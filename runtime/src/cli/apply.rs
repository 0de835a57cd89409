//! `tenet apply`: plan, show, confirm, converge — independent resources in parallel, with
//! live progress on a terminal or a JSON event stream (`--json`). Given a saved plan
//! (`plan --out`), apply exactly that plan, but only if the manifest, the providers and
//! every resource's observed state are still what the plan was computed from.
//!
//! Ctrl-C once: start nothing new, let the calls in flight finish (they are bounded by
//! their deadlines; writes are atomic), print what was and was not done. Twice: exit now.

use super::args::parse_timeout;
use super::history::{change_kinds, open_for, recover, remember};
use super::progress::LiveProgress;
use super::session::Session;
use super::{EXIT_ERROR, ManifestArgs, RunArgs, render};
use crate::engine::{ApplyReport, Event, Outcome, OutcomeCounts, ResourceResult, RunOptions};
use crate::plan::Plan;
use crate::state::RunLock;
use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Grants as one line, `nothing` when empty.
fn lines(granted: &[String]) -> String {
    if granted.is_empty() {
        "nothing".into()
    } else {
        granted.join("; ")
    }
}

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
    let state_path = args.manifest.location.path_for(&args.manifest.path);
    if !state_path.exists() {
        bail!(
            "no state at {}: there is no history to roll back to",
            state_path.display()
        );
    }
    let store = args.manifest.location.open(&args.manifest.path)?;
    // A record is acted on only if the chain verifies up to it: an edited snapshot
    // would apply what no run ever applied.
    if let Err(broken) = store.verify()?
        && broken.seq() <= args.run_id
    {
        bail!(
            "refusing to roll back to run {}: the history does not verify up to it: {broken}; see `tenet audit verify`",
            args.run_id
        );
    }
    let target = store.run(args.run_id)?;
    let rec = &target.record;
    if !matches!(rec.command.as_str(), "apply" | "rollback") {
        bail!(
            "run {} is a {}, which applied nothing: roll back to an apply (see `tenet history`)",
            args.run_id,
            rec.command
        );
    }
    let files: std::collections::BTreeMap<String, String> = rec
        .manifest_snapshot
        .get("files")
        .and_then(|f| serde_json::from_value(f.clone()).ok())
        .filter(|f: &std::collections::BTreeMap<String, String>| !f.is_empty())
        .with_context(|| {
            format!(
                "run {} ({}) recorded no manifest to roll back to; pick an apply run from `tenet history`",
                args.run_id, rec.command
            )
        })?;
    let mut vars: std::collections::BTreeMap<String, serde_json::Value> = rec
        .manifest_snapshot
        .get("vars")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    // Sensitive variables were recorded sealed: the operator gives them again, and they
    // must be the values of that run.
    let sensitive: Vec<String> = rec
        .manifest_snapshot
        .get("sensitive_vars")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let salt = store.salt()?;
    for name in &sensitive {
        let given = args
            .manifest
            .vars
            .iter()
            .rev()
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| k.trim() == name))
            .map(|(_, v)| crate::manifest::load::typed_var(v));
        let Some(value) = given else {
            bail!(
                "run {} used the sensitive variable `{name}`, which is recorded only as a hash: pass it again with --var {name}=VALUE",
                args.run_id
            );
        };
        if vars.get(name) != Some(&crate::state::seal(&salt, &value)) {
            bail!(
                "--var {name} is not the value run {} used (its recorded hash differs)",
                args.run_id
            );
        }
        vars.insert(name.clone(), value);
    }
    if rec.manifest_snapshot.get("redacted") == Some(&serde_json::Value::Bool(true)) {
        bail!(
            "run {}'s manifest held sensitive values written literally, which were not recorded; it cannot be rolled back to (keep secrets in variables declared `sensitive: true`)",
            args.run_id
        );
    }
    let recorded = Path::new(&rec.manifest_path);
    let base_dir = if recorded.is_dir() {
        recorded.to_path_buf()
    } else {
        recorded.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    drop(store);
    let session = Session::open_snapshot(
        &args.manifest,
        crate::manifest::Snapshot {
            base_dir,
            files,
            vars,
        },
    )
    .await?;
    if !args.control.json {
        println!(
            "Rolling back to the desired state of run #{} ({} by {}@{}, manifest sha256 {}).\n",
            args.run_id, rec.started_at, rec.user, rec.host, rec.manifest_sha256
        );
    }
    let apply = ApplyArgs {
        manifest: args.manifest,
        control: args.control,
        fail_fast: false,
        rollback_of: Some(args.run_id),
    };
    converge(session, &apply).await
}

/// The run-level events of `--json` (resource events come from the engine).
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum RunEvent {
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

pub async fn execute(args: ApplyArgs) -> anyhow::Result<u8> {
    if let Some(saved) = crate::plan::file::read(&args.manifest.path)? {
        return apply_saved(&args, saved).await;
    }
    args.control.check_json()?;
    let session = Session::open(&args.manifest).await?;
    converge(session, &args).await
}

/// Plan the session's manifest (and the deletion of what left it), show it, confirm,
/// and run it.
async fn converge(session: Session, args: &ApplyArgs) -> anyhow::Result<u8> {
    session.print_warnings();
    let lock = take_lock(&session, args)?;
    let started_at = crate::state::now();
    let options = session.run_options(args.control.run.parallelism, args.fail_fast);
    let plan = session.plan(Some(lock.store().as_ref()), &options).await?;
    if !args.control.json {
        render::plan(&plan.redacted())?;
    }
    if !plan.has_changes() && !plan.has_errors() {
        if args.control.json {
            return run(&session, &plan, args, options, &lock, &started_at).await;
        }
        // Recorded too: a converged run is evidence of compliance.
        remember_converged(&lock, &session, &plan, &started_at, args)?;
        return Ok(0);
    }
    if !args.control.yes && !confirm()? {
        println!("Apply cancelled; nothing was changed.");
        return Ok(EXIT_ERROR);
    }
    run(&session, &plan, args, options, &lock, &started_at).await
}

/// Take the state's run lock, then report what a killed run left half done.
fn take_lock(session: &Session, args: &ApplyArgs) -> anyhow::Result<RunLock> {
    let lock = RunLock::take(
        open_for(&args.manifest.location, &session.manifest)?,
        args.control.lock_timeout,
    )?;
    report_interrupted(&lock, session)?;
    Ok(lock)
}

/// Record a run in which nothing needed to change (forgotten resources still leave the
/// state).
fn remember_converged(
    lock: &RunLock,
    session: &Session,
    plan: &Plan,
    started_at: &str,
    args: &ApplyArgs,
) -> anyhow::Result<()> {
    remember(
        lock.store().as_ref(),
        &session.manifest,
        plan,
        &unchanged(plan),
        started_at,
        &std::collections::BTreeMap::new(),
        args.rollback_of,
    )?;
    Ok(())
}

/// Name what a killed run left half done (it is read again by this run's plan).
fn report_interrupted(lock: &RunLock, session: &Session) -> anyhow::Result<()> {
    let pending = recover(lock.store().as_ref(), &session.manifest)?;
    if !pending.is_empty() {
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
    Ok(())
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
                outcome: Outcome::Unchanged,
                duration: std::time::Duration::ZERO,
                state: r.current.clone(),
            })
            .collect(),
    }
}

async fn apply_saved(args: &ApplyArgs, plan: Plan) -> anyhow::Result<u8> {
    let manifest_args = ManifestArgs {
        path: plan.manifest.path.clone().into(),
        ..args.manifest.clone()
    };
    let session = Session::open(&manifest_args).await?;
    let lock = take_lock(&session, args)?;
    let started_at = crate::state::now();
    if session.manifest.sha256 != plan.manifest.sha256 {
        bail!(
            "refusing to apply a stale plan: the manifest {} (or its variables) changed since the plan was made \
             (plan: sha256 {}, now: sha256 {}); run `tenet plan` again",
            plan.manifest.path,
            plan.manifest.sha256,
            session.manifest.sha256
        );
    }
    let pins = session.pins();
    for (name, pin) in &plan.providers {
        match pins.get(name) {
            Some(now)
                if now.component_sha256 == pin.component_sha256 && now.granted == pin.granted => {}
            Some(now) if now.component_sha256 == pin.component_sha256 => bail!(
                "refusing to apply a stale plan: the grants of provider `{name}` changed since the plan was made \
                 (planned with: {}; now: {})",
                lines(&pin.granted),
                lines(&now.granted)
            ),
            Some(now) => bail!(
                "refusing to apply a stale plan: provider `{name}` changed since the plan was made \
                 (expected sha256 {}, found {} from {})",
                pin.component_sha256,
                now.component_sha256,
                now.source
            ),
            None => {
                bail!("refusing to apply a stale plan: provider `{name}` is no longer declared")
            }
        }
    }
    // The plan file is only compared, never applied: what runs is the plan the manifest
    // produces now (real sensitive values, today's provider provenance), and it must be
    // exactly what was reviewed — the system unchanged, and the file not edited.
    let options = session.run_options(args.control.run.parallelism, args.fail_fast);
    let fresh = session.plan(Some(lock.store().as_ref()), &options).await?;
    let mismatches = crate::plan::check_saved(&plan, &fresh);
    let (stale, altered): (Vec<_>, Vec<_>) = mismatches
        .iter()
        .partition(|m| matches!(m, crate::plan::Mismatch::Stale { .. }));
    let list = |ms: &[&crate::plan::Mismatch]| -> String {
        ms.iter()
            .map(|m| match m {
                crate::plan::Mismatch::Stale { id, reason } => format!("  {id}: {reason}"),
                crate::plan::Mismatch::Altered { id, what } => format!("  {id}: {what}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    if !altered.is_empty() {
        bail!(
            "refusing to apply {}: it is not what the manifest plans (the file was edited after it was made):\n{}\nrun `tenet plan` again and review it",
            args.manifest.path.display(),
            list(&altered)
        );
    }
    if !stale.is_empty() {
        bail!(
            "refusing to apply a stale plan: the system changed since the plan was made:\n{}\nrun `tenet plan` again",
            list(&stale)
        );
    }
    let plan = fresh;
    if !args.control.json {
        render::plan(&plan.redacted())?;
        if !plan.has_changes() && !plan.has_errors() {
            // Nothing to change on the system; forgotten resources still leave the state.
            remember_converged(&lock, &session, &plan, &started_at, args)?;
            return Ok(0);
        }
    }
    run(&session, &plan, args, options, &lock, &started_at).await
}

fn confirm() -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "apply needs confirmation and standard input is not a terminal: pass --yes to apply without asking"
        );
    }
    print!("\nDo you want to apply these changes? Only 'yes' is accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
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

async fn run(
    session: &Session,
    plan: &Plan,
    args: &ApplyArgs,
    options: RunOptions,
    lock: &RunLock,
    started_at: &str,
) -> anyhow::Result<u8> {
    let interrupts = watch_interrupts(options.cancel.clone());
    let started = Instant::now();
    if args.control.json {
        emit(&RunEvent::RunStarted {
            resources: plan.resources.len(),
            changes: plan.summary.changes(),
            parallelism: options.parallelism,
        });
    } else {
        println!();
    }
    let kinds = change_kinds(lock.store().as_ref(), plan)?;
    let mut progress = LiveProgress::new(plan.resources.len(), !args.control.json);
    let json = args.control.json;
    let label = |r: &ResourceResult| match r.outcome {
        Outcome::Created | Outcome::Updated | Outcome::Replaced | Outcome::Deleted => {
            kinds.get(&r.id).copied()
        }
        _ => None,
    };
    let journal = lock.store().clone();
    let index = super::history::RunIndex::new(&session.manifest, plan);
    let pid = std::process::id();
    let cancel = options.cancel.clone();
    let mut on_event = |e: Event| {
        // The journal first: an intent is on disk before its provider call starts, and
        // cleared once the resource is done, whatever happened.
        let written = match &e {
            Event::ResourceStarted {
                id,
                type_name,
                action,
            } => journal.journal_begin(&crate::state::JournalEntry {
                id: id.clone(),
                type_name: type_name.clone(),
                action: action.to_string(),
                pid,
                started_at: crate::state::now(),
                outcome: None,
            }),
            Event::ResourceFinished(r) => super::history::remember_one(journal.as_ref(), &index, r)
                .map_err(|e| match e.downcast::<crate::state::StateError>() {
                    Ok(e) => e,
                    Err(e) => crate::state::StateError::Database {
                        path: journal.location(),
                        message: format!("{e:#}"),
                    },
                }),
        };
        match written {
            Ok(()) => {}
            // Another run owns the state now: start nothing more (calls in flight end
            // within their deadlines); recording the run fails the same way.
            Err(err @ crate::state::StateError::LockLost { .. }) => {
                if !cancel.swap(true, Ordering::SeqCst) {
                    eprintln!("error: {err}");
                }
            }
            Err(err) => tracing::warn!("cannot write the run journal or state: {err}"),
        }
        if json {
            let mut value = serde_json::to_value(&e).unwrap_or_default();
            if let (Event::ResourceFinished(r), Some(map)) = (&e, value.as_object_mut())
                && let Some(k) = label(r)
            {
                map.insert("change".into(), k.into());
            }
            emit(&value);
            return;
        }
        match &e {
            Event::ResourceStarted { id, .. } => progress.started(id),
            Event::ResourceFinished(r) => {
                progress.finished(&r.id);
                if let Some(mut line) = render::result_line(r) {
                    if let Some(k) = label(r) {
                        line = format!("{} ({k})\n", line.trim_end());
                    }
                    progress.println(&line);
                }
            }
        }
    };
    let report = session.engine().apply(plan, &options, &mut on_event).await;
    progress.finish();
    interrupts.abort();
    let interrupted = options.cancel.load(Ordering::SeqCst);
    let recorded = remember(
        lock.store().as_ref(),
        &session.manifest,
        plan,
        &report,
        started_at,
        &kinds,
        args.rollback_of,
    );
    if args.control.json {
        emit(&RunEvent::RunFinished {
            succeeded: report.succeeded(),
            interrupted,
            duration_ms: crate::engine::millis(started.elapsed()),
            counts: report.counts(),
        });
    } else {
        let mut out = anstream::stdout();
        let mut text = format!("\n{}", render::apply_summary(&report));
        text.push_str(&render::slowest(
            &report.slowest(SLOWEST_SHOWN),
            started.elapsed(),
        ));
        if interrupted {
            text.push_str("Interrupted: resources marked not started were left as they were.\n");
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    // The system changed whatever the state says; a state that cannot be written is
    // reported after the run's own result.
    let run_id = recorded.context("the run finished but could not be recorded in the state")?;
    if !args.control.json {
        println!("Recorded as run #{run_id} (`tenet show {run_id}`).");
    }
    Ok(if report.succeeded() { 0 } else { EXIT_ERROR })
}
