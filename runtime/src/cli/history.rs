//! What Tenet remembers, on the command line: the commands that read it back —
//! `tenet state list|show|forget|prune|unlock`, `tenet history`, `tenet show RUN`,
//! `tenet audit verify`, `tenet report` (recording is [`crate::run::record`]).

use super::args::{StateLocation, parse_timeout};
use crate::state::{RunLock, RunRecord, StateStore};
use anyhow::bail;
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The manifest argument of the commands that read or edit the state, taken as `plan`,
/// `apply` and `drift` take it: only used to find the state.
#[derive(Debug, Args)]
pub struct Where {
    /// Manifest file or directory whose state to use.
    #[arg(default_value = ".")]
    manifest: PathBuf,
    /// The same as the positional PATH (the form earlier versions needed).
    #[arg(
        long = "manifest",
        short = 'm',
        value_name = "PATH",
        hide = true,
        conflicts_with = "manifest"
    )]
    manifest_option: Option<PathBuf>,
    #[command(flatten)]
    location: StateLocation,
}

impl Where {
    fn manifest(&self) -> &std::path::Path {
        self.manifest_option.as_deref().unwrap_or(&self.manifest)
    }

    fn open(&self) -> anyhow::Result<Arc<dyn StateStore>> {
        let manifest = self.manifest();
        let location = self.location.location();
        if !location.exists_for(manifest) {
            bail!(
                "no state at {}: nothing has been applied here yet (or pass --state FILE)",
                location.describe(manifest)
            );
        }
        self.location.open(manifest)
    }
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(subcommand)]
    command: StateCommand,
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// List the resources Tenet manages.
    List {
        #[command(flatten)]
        at: Where,
    },
    /// Show one managed resource: desired properties, observed state, provider.
    Show {
        id: String,
        #[command(flatten)]
        at: Where,
    },
    /// Drop a resource from the state without touching the system.
    Forget {
        id: String,
        #[command(flatten)]
        at: Where,
    },
    /// Remove the oldest runs from the history, keeping the audit chain verifiable (an
    /// anchor records the hash of the last run removed), and the content only they
    /// referred to. The newest run is always kept.
    Prune {
        #[command(flatten)]
        keep: Keep,
        /// How long to wait for a run holding the state's lock.
        #[arg(long, default_value = "0s", value_parser = parse_timeout)]
        lock_timeout: Duration,
        #[command(flatten)]
        at: Where,
    },
    /// Release the run lock of a crashed run (`--force` is required).
    Unlock {
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        at: Where,
    },
}

/// How much history to keep: `tenet state prune`, and the agent after each run.
#[derive(Debug, Clone, Args)]
pub struct Keep {
    /// Keep at most this many runs (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_runs: Option<u64>,
    /// Keep the runs started in the last N days.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub keep_days: Option<u64>,
}

impl Keep {
    pub fn retention(&self) -> crate::state::Retention {
        crate::state::Retention {
            runs: self.keep_runs,
            age: self.keep_days.map(|d| Duration::from_secs(d * 86_400)),
        }
    }
}

/// One line saying what a prune did.
pub fn pruned_text(p: &crate::state::Pruned) -> String {
    // A prune that removed runs always leaves an anchor.
    match p.anchor.as_ref().filter(|_| p.runs > 0) {
        None => "Nothing to prune.".to_owned(),
        Some(a) => format!(
            "Pruned {} run{} (the history now starts after run #{}, anchored at {}) and {} stored blob{} no run refers to.",
            p.runs,
            if p.runs == 1 { "" } else { "s" },
            a.seq,
            a.hash,
            p.blobs,
            if p.blobs == 1 { "" } else { "s" },
        ),
    }
}

pub fn state(args: StateArgs) -> anyhow::Result<u8> {
    let mut out = String::new();
    match args.command {
        StateCommand::List { at } => {
            let store = at.open()?;
            let all = store.resources()?;
            if all.is_empty() {
                writeln!(out, "No resources in the state ({}).", store.location())?;
            }
            let width = all.iter().map(|r| r.id.len()).max().unwrap_or(0);
            for r in all {
                writeln!(
                    out,
                    "{:width$}  {}  (changed {})",
                    r.id, r.type_name, r.changed_at
                )?;
            }
        }
        StateCommand::Show { id, at } => {
            let store = at.open()?;
            let r = store
                .resource(&id)?
                .ok_or_else(|| crate::state::StateError::NoSuchResource(id.clone()))?;
            out.push_str(&serde_json::to_string_pretty(&r)?);
            out.push('\n');
        }
        StateCommand::Forget { id, at } => {
            let store = at.open()?;
            let lock = RunLock::take(store, Duration::ZERO)?;
            if lock.store().resource(&id)?.is_none() {
                bail!(crate::state::StateError::NoSuchResource(id));
            }
            lock.store().remove_resources(std::slice::from_ref(&id))?;
            writeln!(
                out,
                "Forgot `{id}`: Tenet no longer manages it; the system was not touched."
            )?;
        }
        StateCommand::Prune {
            keep,
            lock_timeout,
            at,
        } => {
            let keep = keep.retention();
            if !keep.is_set() {
                bail!("say how much history to keep: --keep-runs N and/or --keep-days DAYS");
            }
            let pruned = crate::run::record::prune(at.open()?, keep, lock_timeout)?;
            writeln!(out, "{}", pruned_text(&pruned))?;
        }
        StateCommand::Unlock { force, at } => {
            if !force {
                bail!("unlocking can let two runs interleave: pass --force if the holder is gone");
            }
            let store = at.open()?;
            match store.force_unlock()? {
                Some(h) => writeln!(
                    out,
                    "Released the lock held by pid {} on {} (user {}) since {}.",
                    h.pid, h.host, h.user, h.since
                )?,
                None => writeln!(out, "The state was not locked.")?,
            }
        }
    }
    print!("{out}");
    Ok(0)
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many runs to show, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Where,
}

fn counts(r: &RunRecord) -> String {
    crate::state::compact::outcome_counts(r)
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn history(args: HistoryArgs) -> anyhow::Result<u8> {
    let store = args.at.open()?;
    let runs = store.runs(args.limit)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(0);
    }
    let mut out = String::new();
    if runs.is_empty() {
        writeln!(out, "No runs recorded yet.")?;
    }
    for r in &runs {
        let rec = &r.record;
        let git = rec.git.as_ref().map_or(String::new(), |g| {
            format!(
                "  git {}{}",
                g.commit.get(..12).unwrap_or(&g.commit),
                if g.dirty { "+dirty" } else { "" }
            )
        });
        writeln!(
            out,
            "#{:<4} {}  {:<6} {}  {}@{}{git}\n      {}",
            r.seq,
            rec.started_at,
            rec.command,
            match (
                rec.succeeded,
                rec.policy.iter().any(crate::policy::Decision::blocked)
            ) {
                (_, true) => "REFUSED",
                (true, false) => "ok    ",
                (false, false) => "FAILED",
            },
            rec.user,
            rec.host,
            counts(rec)
        )?;
    }
    print!("{out}");
    Ok(0)
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run's number (from `tenet history`).
    run: u64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Where,
}

pub fn show(args: ShowArgs) -> anyhow::Result<u8> {
    let store = args.at.open()?;
    let r = store.run(args.run)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    let rec = &r.record;
    let mut out = String::new();
    writeln!(
        out,
        "Run #{} — {} by {}@{}",
        r.seq, rec.command, rec.user, rec.host
    )?;
    writeln!(
        out,
        "  started  {}\n  finished {}",
        rec.started_at, rec.finished_at
    )?;
    writeln!(
        out,
        "  manifest {} (sha256 {})",
        rec.manifest_path, rec.manifest_sha256
    )?;
    if let Some(g) = &rec.git {
        writeln!(
            out,
            "  git      {}{}",
            g.commit,
            if g.dirty { " (dirty)" } else { "" }
        )?;
    }
    if let Some(a) = &rec.artifact {
        writeln!(out, "  artifact {} ({})", a.digest, a.reference)?;
    }
    if let Some(to) = rec.rollback_of {
        writeln!(out, "  rollback to the desired state of run #{to}")?;
    }
    let refused = rec.policy.iter().any(crate::policy::Decision::blocked);
    writeln!(
        out,
        "  result   {}",
        match (rec.succeeded, refused) {
            (_, true) => "refused by policy",
            (true, false) => "succeeded",
            (false, false) => "failed",
        }
    )?;
    writeln!(out, "  hash     {}", r.hash)?;
    for o in &rec.resources {
        let mut line = format!("  {:<10} {} ({})", o.outcome, o.id, o.type_name);
        if let Some(k) = &o.change {
            write!(line, " [{k}]")?;
        }
        if !o.changed_fields.is_empty() {
            write!(line, " {}", o.changed_fields.join(", "))?;
        }
        if let Some(e) = &o.error {
            write!(line, ": {e}")?;
        }
        writeln!(out, "{line}")?;
    }
    out.push_str(&super::render::policy_text(&rec.policy));
    // Through anstream: the policy lines' colours only on a terminal.
    let mut stdout = anstream::stdout();
    std::io::Write::write_all(&mut stdout, out.as_bytes())?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain of the history; exit 1 naming the first record that was
    /// edited, inserted or deleted.
    Verify {
        #[command(flatten)]
        at: Where,
    },
}

pub fn audit(args: AuditArgs) -> anyhow::Result<u8> {
    let AuditCommand::Verify { at } = args.command;
    let store = at.open()?;
    match store.verify()? {
        Ok(s) => {
            let from = s.anchor.as_ref().map_or(String::new(), |a| {
                format!(
                    " after {} pruned (runs up to #{}, whose hash {} the first remaining run links to; last pruned {})",
                    a.pruned, a.seq, a.hash, a.pruned_at
                )
            });
            println!(
                "History intact: {} runs{from}, chain head {} (note it down elsewhere to detect the removal of the newest runs).",
                s.records, s.head
            );
            Ok(0)
        }
        Err(b) => {
            eprintln!(
                "error: the history at {} was tampered with: {b}",
                store.location()
            );
            Ok(super::EXIT_ERROR)
        }
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The window, back from now (e.g. `7d`, `30d`, `12h`).
    #[arg(long, default_value = "30d", value_parser = parse_timeout)]
    since: Duration,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Where,
}

/// `tenet report`: compliance metrics from the history (definitions in
/// [`crate::state::report`] and the README).
pub fn report(args: ReportArgs) -> anyhow::Result<u8> {
    let store = args.at.open()?;
    // Oldest first.
    let runs: Vec<RunRecord> = store
        .runs(usize::MAX)?
        .into_iter()
        .rev()
        .map(|r| r.record)
        .collect();
    let now = std::time::SystemTime::now();
    let since = now.checked_sub(args.since).unwrap_or(std::time::UNIX_EPOCH);
    let r = crate::state::report::compute(&runs, store.resources()?.len(), since, now);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    let pct = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{:.1}%", v * 100.0));
    let mut out = String::new();
    writeln!(
        out,
        "Report from {} to {} ({} runs)",
        r.since, r.until, r.runs
    )?;
    writeln!(
        out,
        "  compliance rate       {}{}",
        pct(r.compliance_rate),
        r.checked_at
            .as_ref()
            .map_or(String::new(), |t| format!(" (last check {t})"))
    )?;
    writeln!(
        out,
        "  drift frequency       {:.3} drift events per resource per day ({} events)",
        r.drift_frequency, r.drift_events
    )?;
    writeln!(
        out,
        "  mean time to repair   {}",
        r.mttr_seconds
            .map_or("n/a (nothing repaired)".to_owned(), |s| format!(
                "{} ({} repairs)",
                humantime::format_duration(Duration::from_secs(s.round() as u64)),
                r.repairs
            ))
    )?;
    writeln!(
        out,
        "  change failure rate   {} ({} of {} changes failed)",
        pct(r.change_failure_rate),
        r.failed_changes,
        r.changes
    )?;
    writeln!(out, "  provisioning time     (median per change)")?;
    for (kind, ms) in &r.provisioning_ms {
        writeln!(out, "    {kind:<24} {ms:.1} ms")?;
    }
    print!("{out}");
    Ok(0)
}
