//! What Tenet remembers, on the command line: where the state lives, recording an apply
//! (resources and a chained run record), and the commands that read it back —
//! `tenet state list|show|forget|unlock`, `tenet history`, `tenet show RUN`,
//! `tenet audit verify`.

use super::args::{StateLocation, parse_timeout};
use crate::engine::{ApplyReport, Orphan, Outcome};
use crate::manifest::Manifest;
use crate::manifest::scrub;
use crate::plan::Plan;
use crate::state::RunLock;
use crate::state::{
    GitInfo, Holder, JournalEntry, ResourceOutcome, RunRecord, StateStore, StoredResource,
    seal_fields,
};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The manifest's files and variables: enough to plan it again later. Sensitive
/// variables are sealed; a rollback asks for them again. Sensitive values written
/// literally in the files are cut out (`redacted`: such a run cannot be rolled back to).
fn snapshot(m: &Manifest, salt: &str, plan: &Plan) -> Value {
    // By id, once: looked up per resource below (a scan each would be quadratic).
    let decls: BTreeMap<&str, &crate::manifest::ResourceDecl> =
        m.resources.iter().map(|d| (d.id.as_str(), d)).collect();
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
        let declared = decls.get(id).map_or(&[][..], |d| d.sensitive.as_slice());
        planned
            .get(id)
            .map(|r| r.sensitive.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|f| (f.clone(), declared.iter().any(|d| d == f || d == "*")))
            .collect()
    };
    let files: BTreeMap<String, String> = m
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
    json!({"files": files, "vars": vars, "sensitive_vars": m.sensitive_vars, "redacted": redacted})
}

fn outcome_name(o: &Outcome) -> String {
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
) -> anyhow::Result<BTreeMap<String, &'static str>> {
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
        git: None,
        user: holder.user,
        host: holder.host,
        started_at: started_at.to_owned(),
        finished_at: crate::state::now(),
        succeeded: true,
        resources: Vec::new(),
    }
}

/// What one finished resource means for the state.
enum Bookkeeping {
    Put(Box<StoredResource>),
    Remove(String),
    Nothing,
}

/// A run's manifest and plan with their resources by id, built once per run so that
/// recording each finished resource is a lookup, not a scan.
pub struct RunIndex<'a> {
    manifest: &'a Manifest,
    plan: &'a Plan,
    planned: BTreeMap<&'a str, &'a crate::plan::PlannedResource>,
    declared: BTreeMap<&'a str, &'a crate::manifest::ResourceDecl>,
}

impl<'a> RunIndex<'a> {
    pub fn new(manifest: &'a Manifest, plan: &'a Plan) -> Self {
        RunIndex {
            manifest,
            plan,
            planned: plan.resources.iter().map(|r| (r.id.as_str(), r)).collect(),
            declared: manifest
                .resources
                .iter()
                .map(|r| (r.id.as_str(), r))
                .collect(),
        }
    }
}

fn bookkeeping(
    previous: Option<StoredResource>,
    idx: &RunIndex<'_>,
    p: &crate::plan::PlannedResource,
    r: &crate::engine::ResourceResult,
    salt: &str,
    now: &str,
) -> anyhow::Result<Bookkeeping> {
    Ok(match &r.outcome {
        Outcome::Deleted => Bookkeeping::Remove(r.id.clone()),
        // An orphan that was already gone (or renamed): nothing to delete or remember.
        Outcome::Unchanged if p.orphan => Bookkeeping::Remove(r.id.clone()),
        Outcome::Created
        | Outcome::Updated
        | Outcome::Replaced
        | Outcome::Refreshed
        | Outcome::Unchanged => {
            let declared = idx.declared.get(r.id.as_str()).copied();
            let pin = idx.plan.providers.get(&p.provider);
            let changed = !matches!(r.outcome, Outcome::Unchanged);
            Bookkeeping::Put(Box::new(StoredResource {
                id: r.id.clone(),
                type_name: r.type_name.clone(),
                provider: p.provider.clone(),
                provider_version: pin.map(|p| p.version.clone()).unwrap_or_default(),
                component_sha256: pin.map(|p| p.component_sha256.clone()).unwrap_or_default(),
                desired: seal_fields(salt, &p.desired, &p.sensitive),
                observed: r
                    .state
                    .clone()
                    .or_else(|| p.current.clone())
                    .map(|o| seal_fields(salt, &o, &p.sensitive)),
                sensitive: p.sensitive.clone(),
                manifest: idx.manifest.path.display().to_string(),
                changed_at: match &previous {
                    Some(prev) if !changed => prev.changed_at.clone(),
                    _ => now.to_owned(),
                },
                prevent_destroy: declared
                    .map_or(previous.as_ref().is_some_and(|p| p.prevent_destroy), |d| {
                        d.prevent_destroy
                    }),
                forget_on_remove: declared
                    .map_or(previous.as_ref().is_some_and(|p| p.forget_on_remove), |d| {
                        d.forget_on_remove
                    }),
            }))
        }
        Outcome::Failed { .. } | Outcome::Skipped { .. } | Outcome::NotStarted { .. } => {
            Bookkeeping::Nothing
        }
    })
}

/// Write one finished resource's state right away (so a run killed later loses no
/// finished work), and mark its journal entry done with its outcome.
pub fn remember_one(
    store: &dyn StateStore,
    idx: &RunIndex<'_>,
    r: &crate::engine::ResourceResult,
) -> anyhow::Result<()> {
    if let Some(p) = idx.planned.get(r.id.as_str()) {
        let salt = store.salt()?;
        let previous = store.resource(&r.id)?;
        match bookkeeping(previous, idx, p, r, &salt, &crate::state::now())? {
            Bookkeeping::Put(s) => store.put_resources(std::slice::from_ref(&*s))?,
            Bookkeeping::Remove(id) => store.remove_resources(&[id])?,
            Bookkeeping::Nothing => {}
        }
    }
    store.journal_finish(&r.id, &outcome_name(&r.outcome))?;
    Ok(())
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
) -> anyhow::Result<u64> {
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
        });
        let Some(p) = p else { continue };
        let previous = known.remove(&r.id);
        match bookkeeping(previous.clone(), &idx, p, r, &salt, &now)? {
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
) -> anyhow::Result<u64> {
    let record = RunRecord {
        manifest_snapshot: snapshot(manifest, &store.salt()?, plan),
        git: GitInfo::of(&manifest.base_dir),
        succeeded: !plan.has_errors(),
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
            })
            .collect(),
        ..record_of("plan", manifest, started_at)
    };
    Ok(store.append_run(&record)?)
}

/// After taking the lock: if a previous run was killed in the middle of changes, say
/// which, record that run as interrupted in the history, and clear the journal. The plan
/// that follows reads every resource again, so the interrupted ones converge.
pub fn recover(store: &dyn StateStore, manifest: &Manifest) -> anyhow::Result<Vec<JournalEntry>> {
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
) -> anyhow::Result<(Vec<Orphan>, Vec<String>)> {
    let declared: std::collections::BTreeSet<&str> =
        manifest.resources.iter().map(|r| r.id.as_str()).collect();
    let mut delete = Vec::new();
    let mut forget = Vec::new();
    let this = manifest.path.display().to_string();
    for r in store.resources()? {
        if declared.contains(r.id.as_str()) || manifest.rejected_ids.contains(&r.id) {
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

/// The manifest argument of the state commands: only used to find the state.
#[derive(Debug, Args)]
pub struct Where {
    /// Manifest file or directory whose state to use.
    #[arg(long = "manifest", short = 'm', default_value = ".")]
    manifest: PathBuf,
    #[command(flatten)]
    location: StateLocation,
}

impl Where {
    fn open(&self) -> anyhow::Result<Arc<dyn StateStore>> {
        let path = self.location.path_for(&self.manifest);
        if !path.exists() {
            bail!(
                "no state at {}: nothing has been applied here yet (or pass --state FILE)",
                path.display()
            );
        }
        self.location.open(&self.manifest)
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
    /// Release the run lock of a crashed run (`--force` is required).
    Unlock {
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        at: Where,
    },
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
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &r.resources {
        *by.entry(o.outcome.as_str()).or_default() += 1;
    }
    by.iter()
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
            if rec.succeeded { "ok    " } else { "FAILED" },
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
    if let Some(to) = rec.rollback_of {
        writeln!(out, "  rollback to the desired state of run #{to}")?;
    }
    writeln!(
        out,
        "  result   {}",
        if rec.succeeded { "succeeded" } else { "failed" }
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
    print!("{out}");
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
            println!(
                "History intact: {} runs, chain head {} (note it down elsewhere to detect the removal of the newest runs).",
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

/// Context for errors opening the state of a manifest.
pub fn open_for(
    location: &StateLocation,
    manifest: &Manifest,
) -> anyhow::Result<Arc<dyn StateStore>> {
    let path = location.path_for(&manifest.path);
    location
        .open(&manifest.path)
        .with_context(|| format!("cannot open the state at {}", path.display()))
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
