//! `tenet agent`: a continuous reconcile loop, the second caller of the `run/` use cases
//! (after the CLI): [`crate::run::apply`] in `enforce` mode, [`crate::run::drift`] in
//! `detect` mode, with an approval rule (approve what the policies allow) instead of a
//! terminal and metrics instead of a progress line.
//!
//! The loop is **level-triggered, single-flight and coalescing** (controller-runtime's
//! rule): whatever wakes it — a wall-clock slot ([`schedule`]), a file event on a
//! managed path ([`watch`]), a changed manifest, a signal, `POST /run`, a retry — it
//! runs the *whole* graph, one run at a time; triggers that arrive during a run fold
//! into one follow-up run. Events only decide *when*.
//!
//! - Its own writes do not wake it: events on paths its run changed are dropped during
//!   the run and for a short window after (apply is idempotent, so one that slipped
//!   through would cost a no-op run, never a loop); events on other managed paths seen
//!   during a run wake a follow-up run.
//! - A failed run is retried with exponential backoff and jitter up to a cap (the
//!   interval), reset by a success; slots keep firing regardless. A run has a deadline.
//! - The manifest's files are watched too: a changed manifest is loaded and validated
//!   and, if valid, is the desired state from the next run on (SIGHUP does the same);
//!   an invalid one is reported and the last good one kept.
//! - Stop (SIGTERM/SIGINT) lets the run in flight finish within a grace period, then
//!   starts nothing new; a second stop cancels at once.
//! - With `--source`, the manifest comes from a signed artifact in a registry
//!   ([`source`]): a new digest behind the reference is pulled, verified and unpacked,
//!   and runs from then on record it; anything refused leaves the last good in force.
//! - Two agents never manage one state: the first holds a lock file beside the state
//!   for its lifetime.

pub mod metrics;
pub mod schedule;
mod serve;
pub mod source;
pub mod watch;

use crate::run::{self, ApplyOutcome, AutoApprove, Drift, RunContext, RunError};
use crate::session::{Session, SessionOptions};
use crate::state::report::Tally;
use crate::state::{Retention, RunRecord, StateStore};
use hyper::StatusCode;
use metrics::{Metrics, labels};
use schedule::{Backoff, Schedule};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;
use watch::{FsEvent, Watch};

/// How long after a run events on the paths it wrote are compared with what it wrote
/// (an event is the agent's own when the path is still exactly as the run left it).
const OWN_WRITE_WINDOW: Duration = Duration::from_secs(5);
/// How often the agent proves it is alive to systemd's watchdog (at most).
const TICK: Duration = Duration::from_secs(1);

/// What the agent does on each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan and apply: put back what drifted, converge what changed.
    Enforce,
    /// Check for drift and report it; never change anything (Puppet's noop agent).
    Detect,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Detect => "detect",
        }
    }
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub session: SessionOptions,
    pub mode: Mode,
    pub interval: Duration,
    /// Share of the interval each slot may move by (0.1 = ±10%).
    pub jitter: f64,
    /// One run, then exit (cron, CI).
    pub once: bool,
    /// How long a burst of file events is collected before the run it wakes.
    pub debounce: Duration,
    pub run_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Where to serve `/metrics`, `/healthz`, `/readyz` and `POST /run`.
    pub listen: Option<SocketAddr>,
    /// Watch managed paths and the manifest's files.
    pub watch: bool,
    /// Seeds the schedule's phase and jitter.
    pub node_id: String,
    /// The first retry delay after a failed run.
    pub retry_base: Duration,
    pub parallelism: usize,
    /// How much history to keep, applied after each recorded run.
    pub keep: Retention,
    /// Take the manifest from a signed artifact in a registry (`--source`).
    pub source: Option<source::SourceOptions>,
    /// Report every run to a fleet's ingest service (`--report`).
    pub report: Option<crate::fleet::deliver::Target>,
}

/// What the agent is told from outside (signals, by the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Finish the run in flight (within the grace period) and exit; a second one
    /// cancels the run at once.
    Stop,
    /// Load the manifest again (between runs), then run.
    Reload,
    /// Run now.
    RunNow,
}

/// What woke the agent (a metric label: a small fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    Startup,
    Schedule,
    Event,
    Manifest,
    Signal,
    Http,
    Retry,
    /// `--source` names a new artifact.
    Source,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Schedule => "schedule",
            Trigger::Event => "event",
            Trigger::Manifest => "manifest",
            Trigger::Signal => "signal",
            Trigger::Http => "http",
            Trigger::Retry => "retry",
            Trigger::Source => "source",
        }
    }
}

/// What `/healthz` and `/readyz` report.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub completed_runs: u64,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    pub last_run_at: Option<String>,
    /// The run in flight must be done by then.
    pub deadline: Option<SystemTime>,
    /// Problems that do not stop the agent (a directory it cannot watch).
    pub degraded: Vec<String>,
}

impl Health {
    /// Alive: no run is past its deadline.
    pub fn liveness(&self) -> (StatusCode, serde_json::Value) {
        if self.deadline.is_some_and(|d| SystemTime::now() > d) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "a run is past its deadline"}),
            );
        }
        let status = if self.degraded.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        (
            StatusCode::OK,
            json!({"status": status, "problems": self.degraded}),
        )
    }

    /// Ready: a run has completed.
    pub fn readiness(&self) -> (StatusCode, serde_json::Value) {
        let body = json!({
            "ready": self.completed_runs > 0,
            "runs": self.completed_runs,
            "last_outcome": self.last_outcome,
            "last_run_at": self.last_run_at,
            "last_error": self.last_error,
        });
        if self.completed_runs > 0 {
            (StatusCode::OK, body)
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, body)
        }
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("another agent manages this state: {0}")]
    Locked(String),
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error("{0}")]
    Io(String),
    #[error("no desired state to apply: {0}")]
    Source(crate::distribution::artifact::ArtifactError),
}

/// How the last run ended (a metric label: a small fixed set), and the exit code it
/// maps to for `--once`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Converged,
    Changed,
    Drifted,
    Failed,
    Denied,
    Skipped,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::Changed => "changed",
            Outcome::Drifted => "drifted",
            Outcome::Failed => "failed",
            Outcome::Denied => "denied",
            Outcome::Skipped => "skipped",
        }
    }

    fn ok(self) -> bool {
        matches!(
            self,
            Outcome::Converged | Outcome::Changed | Outcome::Drifted
        )
    }
}

/// How the agent ended.
#[derive(Debug)]
pub struct Ended {
    /// The last run's outcome (none if it never ran).
    pub last: Option<Outcome>,
    pub runs: u64,
}

/// Where the agent tells it started (the bound metrics address, if any).
pub type Started = Box<dyn FnOnce(Option<SocketAddr>) + Send>;

/// The lock file that keeps a second agent off a state, held while the agent lives.
struct AgentLock {
    _file: std::fs::File,
}

fn take_agent_lock(state: &Path) -> Result<AgentLock, AgentError> {
    use std::io::{Read, Seek, Write};
    let path = state.with_extension("agent.lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| AgentError::Io(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| AgentError::Io(format!("cannot open {}: {e}", path.display())))?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(AgentError::Locked(format!(
            "{} is held by {} (stop that agent first)",
            path.display(),
            holder.trim()
        )));
    }
    let me = crate::state::Holder::me();
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(
        file,
        "pid {} on {} (user {}, since {})",
        me.pid, me.host, me.user, me.since
    );
    Ok(AgentLock { _file: file })
}

/// The paths a session manages (every resource's absolute `path` property) and the
/// files its manifest was loaded from.
struct Scope {
    managed: HashSet<PathBuf>,
    /// Managed paths and the directories that hold them (an event on a directory of a
    /// managed path, its removal say, concerns it).
    relevant: HashSet<PathBuf>,
    manifest_files: HashSet<PathBuf>,
    manifest_dirs: HashSet<PathBuf>,
    /// Resource id → its path.
    paths: BTreeMap<String, PathBuf>,
}

fn path_of(props: &serde_json::Value) -> Option<PathBuf> {
    let p = Path::new(props.get("path")?.as_str()?);
    p.is_absolute().then(|| p.to_path_buf())
}

impl Scope {
    fn of(session: &Session) -> Scope {
        let m = &session.manifest;
        let mut paths = BTreeMap::new();
        for r in &m.resources {
            if let Some(p) = path_of(&r.properties) {
                paths.insert(r.id.clone(), p);
            }
        }
        let managed: HashSet<PathBuf> = paths.values().cloned().collect();
        let mut relevant = managed.clone();
        for p in &managed {
            relevant.extend(p.parent().map(Path::to_path_buf));
        }
        let mut manifest_files: HashSet<PathBuf> = m.files.iter().cloned().collect();
        manifest_files.extend(m.module_files.keys().map(|k| m.base_dir.join(k)));
        manifest_files.extend(m.template_files.keys().map(|k| m.base_dir.join(k)));
        let mut manifest_dirs: HashSet<PathBuf> = manifest_files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        manifest_dirs.insert(m.base_dir.clone());
        if let Some(policy) = &m.policy {
            manifest_dirs.extend(policy.paths.iter().filter(|p| p.is_dir()).cloned());
        }
        Scope {
            managed,
            relevant,
            manifest_files,
            manifest_dirs,
            paths,
        }
    }

    /// The directories to watch.
    fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs: BTreeSet<PathBuf> = self
            .managed
            .iter()
            .filter_map(|p| watch::directory_for(p))
            .collect();
        // A managed directory: its own entries are not managed, but a file of it that is
        // managed is covered by the line above; its removal is seen from its parent.
        dirs.extend(self.manifest_dirs.iter().filter(|d| d.is_dir()).cloned());
        dirs
    }

    fn is_manifest(&self, p: &Path) -> bool {
        if self.manifest_files.contains(p) {
            return true;
        }
        let in_dir = p.parent().is_some_and(|d| self.manifest_dirs.contains(d));
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        in_dir
            && !self.managed.contains(p)
            && matches!(ext, "yaml" | "yml" | "json" | "rego" | "j2" | "jinja")
    }
}

/// Where the loop is when an event arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting: a relevant event wakes a run (after the debounce).
    Idle,
    /// A run is starting: what was queued before it is covered by it (it reads
    /// everything afresh), so a burst's backlog does not wake more runs.
    Starting,
    /// A run is in flight: events are kept, and those that were not its own writes
    /// wake one follow-up run.
    Running,
}

/// The bookkeeping of the loop.
struct Loop {
    opts: AgentOptions,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
    pending: BTreeSet<Trigger>,
    /// A burst of events runs at this instant.
    debounce_at: Option<Instant>,
    retry_at: Option<Instant>,
    next_slot: Instant,
    schedule: Schedule,
    backoff: Backoff,
    reload: bool,
    stopping: bool,
    /// Paths events were seen on during the run in flight.
    seen_during_run: Vec<PathBuf>,
    /// Paths the last run wrote: how it left each, until when.
    own: BTreeMap<PathBuf, (Left, Instant)>,
    tally: Tally,
    /// The state, opened at the first run that reads a record back.
    store: Option<Arc<dyn StateStore>>,
    runs: u64,
    last: Option<Outcome>,
    /// Wakes the delivery of reports (`--report`) after each recorded run.
    report: Option<Arc<tokio::sync::Notify>>,
}

/// What a path looks like, to tell the agent's own write from a later one: inode,
/// size, modification and change times (nanoseconds); for a directory, inode, mode and
/// owner.
type Fingerprint = (u64, u64, i64, i64, i64, i64);

fn fingerprint(p: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).ok()?;
    if m.is_dir() {
        // Its times change with every entry written inside: who owns it and how.
        return Some((
            m.ino(),
            u64::from(m.mode()),
            m.uid().into(),
            m.gid().into(),
            0,
            0,
        ));
    }
    Some((
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// How a run left a path: its fingerprint (none: absent) the moment the change
/// finished, and — when the provider reported them after its change — the content's
/// size and sha256. The content settles what the fingerprint cannot: a write by hand
/// between the provider's last read and that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Left {
    fingerprint: Option<Fingerprint>,
    content: Option<(u64, String)>,
}

impl Left {
    fn of(p: &Path, state: Option<&serde_json::Value>) -> Left {
        let content = state.and_then(|s| {
            Some((
                s.get("size")?.as_u64()?,
                s.get("content_sha256")?.as_str()?.to_owned(),
            ))
        });
        Left {
            fingerprint: fingerprint(p),
            content,
        }
    }

    /// Whether `p` is still as left.
    fn still(&self, p: &Path) -> bool {
        if self.fingerprint != fingerprint(p) {
            return false;
        }
        match &self.content {
            None => true,
            Some((size, sha)) => content_sha256(p, *size).as_deref() == Some(sha.as_str()),
        }
    }
}

/// The sha256 of the file at `p` if it is `size` bytes long.
fn content_sha256(p: &Path, size: u64) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(p).ok()?;
    if f.metadata().ok()?.len() != size {
        return None;
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex::encode(h.finalize()))
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn instant_of(t: SystemTime) -> Instant {
    let now = SystemTime::now();
    Instant::now() + t.duration_since(now).unwrap_or(Duration::ZERO)
}

impl Loop {
    fn new(opts: AgentOptions, metrics: Arc<Metrics>, health: Arc<Mutex<Health>>) -> Loop {
        Loop {
            backoff: Backoff::new(opts.retry_base, opts.interval),
            schedule: Schedule::new(&opts.node_id, opts.interval, opts.jitter),
            metrics,
            health,
            pending: BTreeSet::new(),
            debounce_at: None,
            retry_at: None,
            next_slot: Instant::now(),
            reload: false,
            stopping: false,
            seen_during_run: Vec::new(),
            own: BTreeMap::new(),
            tally: Tally::default(),
            store: None,
            runs: 0,
            last: None,
            report: None,
            opts,
        }
    }

    fn trigger(&mut self, t: Trigger, running: bool) {
        self.metrics
            .triggers
            .get_or_create(&labels([("trigger", t.name())]))
            .inc();
        if running || !self.pending.is_empty() {
            self.metrics.coalesced.inc();
        }
        self.pending.insert(t);
    }

    fn plan_next_slot(&mut self) {
        let at = self.schedule.next_after(SystemTime::now());
        self.metrics.next_run.set(unix(at));
        self.next_slot = instant_of(at);
    }

    /// Events on `paths`: wake a run (debounced), or note them for after the run.
    fn on_paths(&mut self, scope: &Scope, paths: Vec<PathBuf>, phase: Phase) {
        let running = phase != Phase::Idle;
        let now = Instant::now();
        self.own.retain(|_, (_, until)| *until > now);
        let mut wake = false;
        for p in paths {
            if scope.is_manifest(&p) {
                self.reload = true;
                wake = true;
                continue;
            }
            if !scope.relevant.contains(&p) || phase == Phase::Starting {
                continue;
            }
            if !running && self.is_own(&p) {
                continue;
            }
            if running {
                self.seen_during_run.push(p);
            } else {
                wake = true;
            }
        }
        if wake && self.debounce_at.is_none() {
            self.debounce_at = Some(now + self.opts.debounce);
        }
    }

    /// Whether `p` is still exactly as the agent's last run left it (its events are
    /// the run's own writes). A path that changed since is forgotten: it is not ours.
    fn is_own(&mut self, p: &Path) -> bool {
        match self.own.get(p) {
            Some((left, _)) if left.still(p) => true,
            Some(_) => {
                self.own.remove(p);
                false
            }
            None => false,
        }
    }

    fn on_fs(&mut self, scope: &Scope, ev: FsEvent, phase: Phase) {
        let running = phase != Phase::Idle;
        match ev {
            FsEvent::Changed(paths) => self.on_paths(scope, paths, phase),
            FsEvent::Rescan => {
                self.metrics
                    .watch_errors
                    .get_or_create(&labels([("reason", "overflow")]))
                    .inc();
                tracing::warn!("file events were lost (queue overflow): running in full");
                if phase != Phase::Starting {
                    self.trigger(Trigger::Event, running);
                }
            }
            FsEvent::Error(e) => {
                self.metrics
                    .watch_errors
                    .get_or_create(&labels([("reason", "io")]))
                    .inc();
                tracing::warn!("file watch: {e}");
            }
        }
    }

    fn on_control(&mut self, c: Option<Control>, running: bool, cancel: Option<&AtomicBool>) {
        match c {
            Some(Control::Stop) | None => {
                if self.stopping
                    && let Some(cancel) = cancel
                {
                    // A second stop: start nothing more in this run.
                    cancel.store(true, Ordering::SeqCst);
                }
                self.stopping = true;
            }
            Some(Control::Reload) => {
                self.reload = true;
                self.trigger(Trigger::Signal, running);
            }
            Some(Control::RunNow) => self.trigger(Trigger::Signal, running),
        }
    }
}

/// Run the agent until told to stop (or after one run with `once`).
pub async fn run(
    mut opts: AgentOptions,
    mut control: UnboundedReceiver<Control>,
    started: Started,
) -> Result<Ended, AgentError> {
    let state_path = opts.session.state.local_for(&opts.session.path);
    let _lock = take_agent_lock(&state_path)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Mutex::new(Health::default()));
    let mut source = opts
        .source
        .clone()
        .map(|s| source::Source::new(s, &opts.node_id));
    if let Some(src) = source.as_mut() {
        // The registry first; what is unpacked here already if it cannot answer.
        if let Err(e) = src.poll().await {
            source_failed(&metrics, &health, &e);
            if src.current().is_none() {
                return Err(AgentError::Source(e));
            }
        }
        use_source(&mut opts.session, src, &metrics);
    }
    let mut session = Session::open(&opts.session).await?;
    let mut scope = Scope::of(&session);
    let (wake_tx, mut wake_rx): (UnboundedSender<Trigger>, _) = unbounded_channel();
    let bound = match opts.listen {
        Some(addr) => Some(
            serve::serve(
                addr,
                serve::Shared {
                    metrics: metrics.clone(),
                    health: health.clone(),
                    wake: wake_tx.clone(),
                },
            )
            .await
            .map_err(|e| AgentError::Io(format!("cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    let (fs_tx, mut fs_rx) = unbounded_channel();
    let mut watcher = if opts.watch && !opts.once {
        Some(Watch::new(fs_tx).map_err(|e| AgentError::Io(format!("cannot watch files: {e}")))?)
    } else {
        drop(fs_tx);
        None
    };
    let source_every = source
        .as_ref()
        .filter(|s| s.opts.reference.digest().is_none())
        .map(|s| s.opts.interval);
    let mut source_at = source_every.map(|d| Instant::now() + d);
    let report = match opts.report.clone() {
        Some(target) => {
            let delivery = crate::fleet::deliver::Delivery::new(target, &state_path)
                .map_err(|e| AgentError::Io(e.to_string()))?;
            let wake = Arc::new(tokio::sync::Notify::new());
            tokio::spawn(deliver_reports(
                delivery,
                opts.session.state.clone(),
                opts.session.path.clone(),
                metrics.clone(),
                wake.clone(),
            ));
            Some(wake)
        }
        None => None,
    };
    let mut lp = Loop::new(opts, metrics.clone(), health.clone());
    lp.report = report;
    lp.plan_next_slot();
    refresh_watch(&mut lp, watcher.as_mut(), &scope);
    lp.trigger(Trigger::Startup, false);
    systemd(&[sd_notify::NotifyState::Ready]);
    started(bound);
    let mut watchdog_usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut watchdog_usec) {
        // systemd wants a ping at least every WATCHDOG_USEC: twice as often, while the
        // agent is healthy (no run stuck past its deadline: then systemd restarts it).
        let every =
            TICK.min(Duration::from_micros(watchdog_usec / 2).max(Duration::from_millis(10)));
        let health = health.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let stuck = health
                    .lock()
                    .map(|h| h.deadline.is_some_and(|d| SystemTime::now() > d))
                    .unwrap_or(true);
                if !stuck {
                    systemd(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        });
    }

    loop {
        if lp.stopping {
            break;
        }
        if lp.reload {
            lp.reload = false;
            systemd(&[sd_notify::NotifyState::Reloading, monotonic_now()]);
            match Session::open(&lp.opts.session).await {
                Ok(s) => {
                    tracing::info!(manifest = %s.manifest.path.display(), "manifest reloaded");
                    session = s;
                    scope = Scope::of(&session);
                    refresh_watch(&mut lp, watcher.as_mut(), &scope);
                    lp.metrics
                        .reloads
                        .get_or_create(&labels([("result", "ok")]))
                        .inc();
                    if let Ok(mut h) = lp.health.lock() {
                        h.last_error = None;
                    }
                }
                Err(e) => {
                    let msg = format!(
                        "the manifest was not reloaded (the last valid one stays in force): {e}"
                    );
                    tracing::error!("{msg}");
                    eprintln!("error: {msg}");
                    lp.metrics
                        .reloads
                        .get_or_create(&labels([("result", "invalid")]))
                        .inc();
                    if let Ok(mut h) = lp.health.lock() {
                        h.last_error = Some(msg);
                    }
                }
            }
            systemd(&[sd_notify::NotifyState::Ready]);
        }
        if !lp.pending.is_empty() {
            let triggers = std::mem::take(&mut lp.pending);
            lp.debounce_at = None;
            let outcome = run_once(
                &mut lp,
                &session,
                &scope,
                &triggers,
                &mut fs_rx,
                &mut wake_rx,
                &mut control,
            )
            .await;
            lp.last = Some(outcome);
            lp.runs += 1;
            refresh_watch(&mut lp, watcher.as_mut(), &scope);
            if lp.opts.once {
                break;
            }
            continue;
        }
        let retry_at = lp.retry_at;
        let debounce_at = lp.debounce_at;
        tokio::select! {
            _ = tokio::time::sleep_until(lp.next_slot) => {
                lp.trigger(Trigger::Schedule, false);
                lp.plan_next_slot();
            }
            _ = sleep_opt(source_at) => {
                source_at = source_every.map(|d| Instant::now() + d);
                if let Some(src) = source.as_mut() {
                    match src.poll().await {
                        Ok(true) => {
                            use_source(&mut lp.opts.session, src, &lp.metrics);
                            lp.reload = true;
                            lp.trigger(Trigger::Source, false);
                        }
                        Ok(false) => {}
                        Err(e) => source_failed(&lp.metrics, &lp.health, &e),
                    }
                }
            }
            _ = sleep_opt(retry_at) => {
                lp.retry_at = None;
                lp.trigger(Trigger::Retry, false);
            }
            _ = sleep_opt(debounce_at) => {
                lp.debounce_at = None;
                let t = if lp.reload { Trigger::Manifest } else { Trigger::Event };
                lp.trigger(t, false);
            }
            Some(ev) = fs_rx.recv() => lp.on_fs(&scope, ev, Phase::Idle),
            Some(t) = wake_rx.recv() => lp.trigger(t, false),
            c = control.recv() => lp.on_control(c, false, None),
        }
    }
    systemd(&[sd_notify::NotifyState::Stopping]);
    if let Some(target) = lp.opts.report.clone() {
        flush_reports(
            target,
            lp.store.clone(),
            &lp.opts.session,
            &state_path,
            lp.opts.shutdown_grace,
        )
        .await;
    }
    Ok(Ended {
        last: lp.last,
        runs: lp.runs,
    })
}

/// The first delay before delivering reports again after a failure, and the most.
const REPORT_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Deliver the history's runs to the fleet (`--report`) whenever a run is recorded, and
/// again with backoff (doubling, half jittered) while the service cannot take them: a
/// task of its own, so a slow or absent service never holds a run up.
async fn deliver_reports(
    delivery: crate::fleet::deliver::Delivery,
    location: crate::state::Location,
    manifest: PathBuf,
    metrics: Arc<Metrics>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut store: Option<Arc<dyn StateStore>> = None;
    let mut delay = REPORT_RETRY.0;
    // The first run wakes it (and sends what an earlier life of the agent did not).
    let mut retry_at = None;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = sleep_opt(retry_at) => {}
        }
        retry_at = None;
        let s = match &store {
            Some(s) => s.clone(),
            None => {
                let (l, m) = (location.clone(), manifest.clone());
                match tokio::task::spawn_blocking(move || l.open(&m)).await {
                    Ok(Ok(s)) => {
                        store = Some(s.clone());
                        s
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("reports: cannot open the state: {e}");
                        retry_at = Some(Instant::now() + delay);
                        continue;
                    }
                    Err(_) => return,
                }
            }
        };
        match delivery.deliver(s.clone()).await {
            Ok(sent) => {
                metrics.reports_sent.inc_by(sent.sent as u64);
                metrics.report_pending.set(0);
                delay = REPORT_RETRY.0;
            }
            Err(e) => {
                metrics.report_failures.inc();
                let pending = delivery.pending(&*s).unwrap_or(0);
                metrics.report_pending.set(pending as i64);
                let wait = delay / 2 + delay.mul_f64(schedule::random() / 2.0);
                tracing::warn!(
                    pending,
                    "{e}; retrying in {}",
                    humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                );
                retry_at = Some(Instant::now() + wait);
                delay = (delay * 2).min(REPORT_RETRY.1);
            }
        }
    }
}

/// One last delivery before the agent exits (after `--once`, or a stop), within
/// `grace` (at most 10 s): what it cannot deliver now the next start sends.
async fn flush_reports(
    target: crate::fleet::deliver::Target,
    store: Option<Arc<dyn StateStore>>,
    session: &SessionOptions,
    state_path: &Path,
    grace: Duration,
) {
    let Ok(delivery) = crate::fleet::deliver::Delivery::new(target, state_path) else {
        return;
    };
    // The state the runs were read back from, or (none was recorded) opened now.
    let store = match store {
        Some(s) => s,
        None => {
            let (l, m) = (session.state.clone(), session.path.clone());
            let Ok(Ok(s)) = tokio::task::spawn_blocking(move || l.open(&m)).await else {
                return;
            };
            s
        }
    };
    match tokio::time::timeout(grace.min(Duration::from_secs(10)), delivery.deliver(store)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!("{e}; the runs not delivered are sent by the next start");
            eprintln!("warning: {e}; the runs not delivered are sent by the next start");
        }
        Err(_) => tracing::warn!("reports not delivered in time; the next start sends them"),
    }
}

/// Make the source's current artifact the manifest (its directory, recorded with runs).
fn use_source(session: &mut SessionOptions, src: &source::Source, metrics: &Metrics) {
    let Some((current, dir)) = src.current() else {
        return;
    };
    tracing::info!(
        reference = %current.reference,
        digest = %current.digest,
        signed_by = %current.signed_by,
        "desired state from the registry"
    );
    session.path = dir.clone();
    session.artifact = Some(crate::manifest::Artifact {
        reference: current.reference.clone(),
        digest: current.digest.clone(),
    });
    metrics.artifact.clear();
    metrics
        .artifact
        .get_or_create(&labels([("digest", current.digest.as_str())]))
        .set(1);
}

/// An artifact not taken: counted, shown in `/readyz`, logged; the last good stays.
fn source_failed(
    metrics: &Metrics,
    health: &Mutex<Health>,
    e: &crate::distribution::artifact::ArtifactError,
) {
    metrics
        .source_failures
        .get_or_create(&labels([("reason", e.reason())]))
        .inc();
    let msg = format!("--source: {e} (the last good desired state stays in force)");
    tracing::error!("{msg}");
    eprintln!("error: {msg}");
    if let Ok(mut h) = health.lock() {
        h.last_error = Some(msg);
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn monotonic_now() -> sd_notify::NotifyState<'static> {
    sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::MonotonicUsec(0))
}

/// Tell systemd (when started by it: `NOTIFY_SOCKET` is set); otherwise nothing.
fn systemd(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(false, states)
    {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

fn refresh_watch(lp: &mut Loop, watcher: Option<&mut Watch>, scope: &Scope) {
    let Some(w) = watcher else { return };
    let problems = w.set(&scope.watch_dirs());
    for p in &problems {
        tracing::warn!("{p}");
        let reason = if p.contains("No space left") || p.contains("limit") {
            "limit"
        } else {
            "io"
        };
        lp.metrics
            .watch_errors
            .get_or_create(&labels([("reason", reason)]))
            .inc();
    }
    lp.metrics.watch_paths.set(w.len() as i64);
    if let Ok(mut h) = lp.health.lock() {
        h.degraded = problems;
    }
}

/// How each path the run changed looked the moment its change finished: an event on
/// it is the run's own while it still looks so (a hand edit after that moment changes
/// its times, and is not taken for the run's write).
struct Written<'a> {
    scope: &'a Scope,
    left: Vec<(PathBuf, Left)>,
}

impl run::RunEvents for Written<'_> {
    fn event(&mut self, event: run::RunEvent<'_>) -> Result<(), run::EventError> {
        if let run::RunEvent::Resource {
            event: crate::engine::Event::ResourceFinished(r),
            ..
        } = event
            && matches!(
                r.outcome,
                crate::engine::Outcome::Created
                    | crate::engine::Outcome::Updated
                    | crate::engine::Outcome::Replaced
                    | crate::engine::Outcome::Deleted
                    | crate::engine::Outcome::Refreshed
            )
            && let Some(p) = self.scope.paths.get(&r.id)
        {
            self.left.push((p.clone(), Left::of(p, r.state.as_ref())));
        }
        Ok(())
    }
}

/// What a finished run reports to the loop.
struct Done {
    outcome: Outcome,
    error: Option<String>,
    /// The recorded run.
    run: Option<u64>,
}

/// One run, with the loop still listening: triggers coalesce, a stop waits for the
/// run within the grace period, the deadline cancels it.
async fn run_once(
    lp: &mut Loop,
    session: &Session,
    scope: &Scope,
    triggers: &BTreeSet<Trigger>,
    fs_rx: &mut UnboundedReceiver<FsEvent>,
    wake_rx: &mut UnboundedReceiver<Trigger>,
    control: &mut UnboundedReceiver<Control>,
) -> Outcome {
    let mode = lp.opts.mode;
    let trigger = triggers.iter().next().copied().unwrap_or(Trigger::Schedule);
    let started = Instant::now();
    let deadline = started + lp.opts.run_timeout;
    if let Ok(mut h) = lp.health.lock() {
        h.deadline = Some(SystemTime::now() + lp.opts.run_timeout);
    }
    lp.metrics.run_in_progress.set(1);
    lp.seen_during_run.clear();
    while let Ok(ev) = fs_rx.try_recv() {
        lp.on_fs(scope, ev, Phase::Starting);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let settings = run::Settings {
        parallelism: lp.opts.parallelism,
        cancel: cancel.clone(),
        ..run::Settings::default()
    };
    let state = lp.opts.session.state.clone();
    let mut written = Written {
        scope,
        left: Vec::new(),
    };
    let mut timed_out = false;
    let mut done = {
        let work = async {
            let mut approve = AutoApprove;
            let events = &mut written;
            let mut cx = RunContext {
                session,
                state,
                settings,
                approve: &mut approve,
                events,
            };
            match mode {
                Mode::Enforce => done_of_apply(run::apply(&mut cx, None).await),
                Mode::Detect => done_of_drift(run::drift(&mut cx).await),
            }
        };
        tokio::pin!(work);
        let mut grace_at: Option<Instant> = None;
        loop {
            let grace = grace_at;
            tokio::select! {
                d = &mut work => break d,
                Some(ev) = fs_rx.recv() => lp.on_fs(scope, ev, Phase::Running),
                Some(t) = wake_rx.recv() => lp.trigger(t, true),
                c = control.recv() => {
                    let was = lp.stopping;
                    lp.on_control(c, true, Some(&cancel));
                    if lp.stopping && !was {
                        grace_at = Some(Instant::now() + lp.opts.shutdown_grace);
                    }
                }
                _ = tokio::time::sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    tracing::error!("the run passed its deadline ({:?}): starting nothing more", lp.opts.run_timeout);
                    cancel.store(true, Ordering::SeqCst);
                }
                _ = sleep_opt(grace) => {
                    grace_at = None;
                    tracing::warn!("the shutdown grace period is over: starting nothing more");
                    cancel.store(true, Ordering::SeqCst);
                }
            }
        }
    };
    if timed_out {
        done.outcome = Outcome::Failed;
        done.error = Some(format!(
            "the run passed its deadline of {}",
            humantime::format_duration(lp.opts.run_timeout)
        ));
    }
    let elapsed = started.elapsed();
    let finished = SystemTime::now();
    lp.metrics.run_in_progress.set(0);
    lp.metrics
        .runs
        .get_or_create(&labels([
            ("mode", mode.name()),
            ("trigger", trigger.name()),
            ("outcome", done.outcome.name()),
        ]))
        .inc();
    lp.metrics
        .run_duration
        .get_or_create(&labels([("mode", mode.name())]))
        .observe(elapsed.as_secs_f64());
    lp.metrics.last_run.set(unix(finished));
    if done.outcome == Outcome::Denied {
        lp.metrics.policy_denials.inc();
    }
    if done.outcome == Outcome::Skipped {
        lp.metrics
            .skipped
            .get_or_create(&labels([("reason", "locked")]))
            .inc();
    }
    // The recorded run feeds the figures `tenet report` computes the same way.
    let record = match done.run {
        Some(seq) => read_record(lp, seq).await,
        None => None,
    };
    if let Some(rec) = &record {
        account(lp, rec);
        prune(lp).await;
    }
    if done.run.is_some()
        && let Some(wake) = &lp.report
    {
        wake.notify_one();
    }
    // Own writes are not events; others seen during the run wake a follow-up run.
    let until = Instant::now() + OWN_WRITE_WINDOW + lp.opts.debounce;
    for (p, left) in written.left {
        lp.own.insert(p, (left, until));
    }
    let seen = std::mem::take(&mut lp.seen_during_run);
    let mut others = false;
    for p in seen {
        others |= !lp.is_own(&p);
    }
    if others {
        // Through the debounce too: a burst that outlasts runs makes one run per
        // window, not one per run's length.
        lp.metrics.coalesced.inc();
        lp.debounce_at = Some(Instant::now() + lp.opts.debounce);
    }
    if done.outcome.ok() {
        lp.backoff.succeeded();
        lp.retry_at = None;
        lp.metrics.last_success.set(unix(finished));
    } else if !lp.stopping {
        let delay = lp.backoff.failed(schedule::random());
        tracing::warn!(
            "run {}: retrying in {}",
            done.outcome.name(),
            humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
        );
        lp.retry_at = Some(Instant::now() + delay);
    }
    lp.metrics
        .consecutive_failures
        .set(lp.backoff.failures() as i64);
    let status = format!(
        "last run {} ({}), {} run(s)",
        done.outcome.name(),
        humantime::format_rfc3339_seconds(finished),
        lp.runs + 1
    );
    systemd(&[sd_notify::NotifyState::Status(&status)]);
    if let Ok(mut h) = lp.health.lock() {
        h.deadline = None;
        h.completed_runs += 1;
        h.last_outcome = Some(done.outcome.name().to_owned());
        h.last_run_at = Some(humantime::format_rfc3339_seconds(finished).to_string());
        h.last_error = done.error.clone();
    }
    match &done.error {
        Some(e) => tracing::warn!(outcome = done.outcome.name(), "run: {e}"),
        None => tracing::info!(
            outcome = done.outcome.name(),
            ms = elapsed.as_secs_f64() * 1e3,
            "run"
        ),
    }
    done.outcome
}

/// Apply the retention after a recorded run. A run holding the lock (a `tenet apply` by
/// hand) only postpones it to the next run.
async fn prune(lp: &mut Loop) {
    let (keep, Some(store)) = (lp.opts.keep, lp.store.clone()) else {
        return;
    };
    if !keep.is_set() {
        return;
    }
    let pruned = tokio::task::spawn_blocking(move || {
        crate::run::record::prune(store, keep, PRUNE_LOCK_WAIT)
    })
    .await;
    match pruned {
        Ok(Ok(p)) if p.runs > 0 => {
            lp.metrics.pruned.inc_by(p.runs);
            tracing::info!(runs = p.runs, blobs = p.blobs, "pruned the history");
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("cannot prune the history now: {e}"),
        Err(e) => tracing::warn!("cannot prune the history now: {e}"),
    }
}

/// How long a prune waits for the run lock before leaving it to the next run.
const PRUNE_LOCK_WAIT: Duration = Duration::from_secs(1);

/// Run `seq` as recorded, from the state opened once for the agent's life.
async fn read_record(lp: &mut Loop, seq: u64) -> Option<RunRecord> {
    let (state, path, opened) = (
        lp.opts.session.state.clone(),
        lp.opts.session.path.clone(),
        lp.store.clone(),
    );
    let got = tokio::task::spawn_blocking(
        move || -> Result<(Arc<dyn StateStore>, RunRecord), String> {
            let store = match opened {
                Some(s) => s,
                None => state.open(&path).map_err(|e| e.to_string())?,
            };
            let record = store.run(seq).map_err(|e| e.to_string())?.record;
            Ok((store, record))
        },
    )
    .await;
    match got {
        Ok(Ok((store, r))) => {
            lp.store = Some(store);
            Some(r)
        }
        Ok(Err(e)) => {
            tracing::warn!("cannot read run #{seq} back: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Count a recorded run into the metrics, by `tenet report`'s definitions.
fn account(lp: &mut Loop, rec: &RunRecord) {
    let (events, repairs) = (lp.tally.drift_events, lp.tally.repairs.len());
    lp.tally.add(rec);
    lp.metrics
        .drift_events
        .inc_by((lp.tally.drift_events - events) as u64);
    for r in &lp.tally.repairs[repairs..] {
        lp.metrics.repair.observe(*r);
    }
    // Only the newest repairs are needed again: keep the list short in a long life.
    if lp.tally.repairs.len() > 1024 {
        lp.tally.repairs.clear();
    }
    if let Some(rate) = lp.tally.compliance_rate() {
        lp.metrics.compliance.set(rate);
    }
    let (mut in_sync, mut drifted, mut failed) = (0i64, 0i64, 0i64);
    for o in &rec.resources {
        match (o.outcome.as_str(), o.change.as_deref()) {
            ("drifted" | "missing", _) => drifted += 1,
            ("failed" | "interrupted" | "skipped" | "error", _) => failed += 1,
            _ => in_sync += 1,
        }
        if let Some(kind) = o.change.as_deref() {
            let result = if o.outcome == "failed" {
                "failed"
            } else {
                "ok"
            };
            let kind = if kind == "corrective" {
                "corrective"
            } else {
                "intentional"
            };
            lp.metrics
                .changes
                .get_or_create(&labels([("kind", kind), ("result", result)]))
                .inc();
        }
    }
    for (state, n) in [
        ("in_sync", in_sync),
        ("drifted", drifted),
        ("failed", failed),
    ] {
        lp.metrics
            .resources
            .get_or_create(&labels([("state", state)]))
            .set(n);
    }
}

fn failed(e: RunError) -> Done {
    let locked = matches!(
        &e,
        RunError::State(s) if matches!(**s, crate::state::StateError::Locked { .. } | crate::state::StateError::Busy { .. })
    );
    Done {
        outcome: if locked {
            Outcome::Skipped
        } else {
            Outcome::Failed
        },
        error: Some(crate::diag::terminal_text(
            &format!("{:#}", anyhow::Error::from(e)),
            "",
        )),
        run: None,
    }
}

fn done_of_apply(r: Result<ApplyOutcome, RunError>) -> Done {
    match r {
        Err(e) => failed(e),
        Ok(ApplyOutcome::Declined) => Done {
            outcome: Outcome::Skipped,
            error: Some("the plan was not approved".into()),
            run: None,
        },
        Ok(ApplyOutcome::Denied { run, .. }) => Done {
            outcome: Outcome::Denied,
            error: Some(format!(
                "refused by policy (run #{run}): nothing was changed"
            )),
            run: Some(run),
        },
        Ok(ApplyOutcome::Converged { run, .. }) => Done {
            outcome: Outcome::Converged,
            error: None,
            run: Some(run),
        },
        Ok(ApplyOutcome::Applied(a)) => {
            let ok = a.succeeded() && !a.interrupted;
            let failures: Vec<String> = a
                .report
                .results
                .iter()
                .filter_map(|r| match &r.outcome {
                    crate::engine::Outcome::Failed { error } => Some(format!("{}: {error}", r.id)),
                    _ => None,
                })
                .take(5)
                .collect();
            Done {
                outcome: if ok {
                    Outcome::Changed
                } else {
                    Outcome::Failed
                },
                error: (!ok).then(|| {
                    if a.interrupted {
                        "the run was interrupted".to_owned()
                    } else {
                        format!("failed: {}", failures.join("; "))
                    }
                }),
                run: a.recorded.ok(),
            }
        }
    }
}

fn done_of_drift(r: Result<Drift, RunError>) -> Done {
    match r {
        Err(e) => failed(e),
        Ok(Drift::NoState { .. }) => Done {
            outcome: Outcome::Converged,
            error: None,
            run: None,
        },
        Ok(Drift::Checked {
            drifted,
            errors,
            run,
            ..
        }) => Done {
            outcome: if errors > 0 {
                Outcome::Failed
            } else if drifted > 0 {
                Outcome::Drifted
            } else {
                Outcome::Converged
            },
            error: (errors > 0).then(|| format!("{errors} resource(s) could not be checked")),
            run: Some(run),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> AgentOptions {
        AgentOptions {
            session: SessionOptions::default(),
            mode: Mode::Enforce,
            interval: Duration::from_secs(1800),
            jitter: 0.1,
            once: false,
            debounce: Duration::from_millis(200),
            run_timeout: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(60),
            listen: None,
            watch: true,
            node_id: "n".into(),
            retry_base: Duration::from_secs(30),
            parallelism: 1,
            keep: Retention::default(),
            source: None,
            report: None,
        }
    }

    fn scope(managed: &[&str]) -> Scope {
        let managed: HashSet<PathBuf> = managed.iter().map(PathBuf::from).collect();
        let mut relevant = managed.clone();
        relevant.extend(
            managed
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf)),
        );
        Scope {
            managed,
            relevant,
            manifest_files: HashSet::from([PathBuf::from("/m/tenet.yaml")]),
            manifest_dirs: HashSet::from([PathBuf::from("/m")]),
            paths: BTreeMap::new(),
        }
    }

    #[test]
    fn events_decide_when_and_lost_events_mean_a_full_run() {
        let mut lp = Loop::new(options(), Arc::new(Metrics::new()), Arc::default());
        let sc = scope(&["/srv/app.conf"]);
        // An unmanaged file beside a managed one: nothing.
        lp.on_fs(
            &sc,
            FsEvent::Changed(vec!["/srv/notes.txt".into()]),
            Phase::Idle,
        );
        assert!(lp.debounce_at.is_none() && lp.pending.is_empty());
        // A managed one: a run after the debounce.
        lp.on_fs(
            &sc,
            FsEvent::Changed(vec!["/srv/app.conf".into()]),
            Phase::Idle,
        );
        assert!(lp.debounce_at.is_some());
        // Queued before a run started: covered by it.
        lp.debounce_at = None;
        lp.on_fs(
            &sc,
            FsEvent::Changed(vec!["/srv/app.conf".into()]),
            Phase::Starting,
        );
        assert!(lp.debounce_at.is_none() && lp.seen_during_run.is_empty());
        // During a run: kept for after it.
        lp.on_fs(
            &sc,
            FsEvent::Changed(vec!["/srv/app.conf".into()]),
            Phase::Running,
        );
        assert_eq!(lp.seen_during_run, [PathBuf::from("/srv/app.conf")]);
        // The manifest: a reload.
        lp.on_fs(
            &sc,
            FsEvent::Changed(vec!["/m/tenet.yaml".into()]),
            Phase::Idle,
        );
        assert!(lp.reload && lp.debounce_at.is_some());
        // Lost events (queue overflow): a full run now, counted.
        lp.on_fs(&sc, FsEvent::Rescan, Phase::Idle);
        assert!(lp.pending.contains(&Trigger::Event));
        assert!(
            lp.metrics
                .encode_prometheus()
                .contains("tenet_agent_watch_errors_total{reason=\"overflow\"} 1")
        );
    }

    #[test]
    fn a_path_is_the_runs_own_only_while_it_is_as_the_run_left_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("app.conf");
        std::fs::write(&p, "port = 80\n").expect("write");
        let ours = content_sha256(&p, 10).expect("sha");
        let state = json!({"size": 10, "content_sha256": ours});
        let left = Left::of(&p, Some(&state));
        assert!(left.still(&p), "untouched since the run");

        // Written by hand after the run: the times differ.
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write(&p, "port = 81\n").expect("edit");
        assert!(!left.still(&p), "an edit after the run is not the run's");

        // Written by hand between the provider's last read and the moment the run
        // looked: the fingerprint taken then includes the edit, the content does not.
        let raced = Left::of(&p, Some(&state));
        assert!(
            !raced.still(&p),
            "the content the provider reported decides"
        );

        // Without reported content (a directory, another provider), the fingerprint.
        let plain = Left::of(&p, None);
        assert!(plain.still(&p));
        std::fs::remove_file(&p).expect("rm");
        assert!(!plain.still(&p), "removed since");
        assert!(Left::of(&p, None).still(&p), "absent, and still absent");
    }
}
