//! State: what Tenet remembers between runs — the resources it manages (last applied
//! desired properties, last observed state, the provider that manages them), every run
//! (who, when, which manifest, what happened to each resource) as a hash-chained,
//! tamper-evident history, and the run lock that keeps two applies from interleaving.
//!
//! [`StateStore`] is the interface every backend implements; [`sqlite::SqliteStore`] is
//! the embedded default (`.tenet/state.db` beside the manifest). Backends are checked by
//! one conformance suite (`conformance`, feature `test-support`) so a PostgreSQL backend
//! can be added later without changing the engine or the CLI.

pub mod compact;
pub mod location;
pub mod lock;
pub mod postgres;
pub mod report;
pub mod sqlite;

pub use compact::Steady;
pub use location::Location;
pub use lock::{ReadLock, RunLock};

/// The state file, relative to the manifest's directory.
pub const STATE_FILE: &str = ".tenet/state.db";

/// Where the state of the manifest at `manifest` (a file or a directory) lives: `explicit`
/// (`--state`, `TENET_STATE`) if given, else [`STATE_FILE`] beside the manifest.
pub fn path_for(
    manifest: &std::path::Path,
    explicit: Option<&std::path::Path>,
) -> std::path::PathBuf {
    match explicit {
        Some(p) => p.to_path_buf(),
        None => crate::manifest::dir_of(manifest).join(STATE_FILE),
    }
}

/// Test support: a backend's contract, for this crate's tests and (feature
/// `test-support`) for backends elsewhere.
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Why a state operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error(
        "the state at {path} is locked by pid {} on {} (user {}) since {}; wait for that run, or if it crashed run `tenet state unlock --force`",
        holder.pid, holder.host, holder.user, holder.since
    )]
    Locked { path: String, holder: Holder },
    #[error(
        "the state at {path} is in use by another tenet process (it holds {lock_file}): a drift check reading it, or a run whose lock was removed with `tenet state unlock --force` finishing its current call; wait for it (`--lock-timeout`)"
    )]
    Busy { path: String, lock_file: String },
    #[error(
        "lost the run lock on the state at {path}{}: the run stops before writing anything more (resources already changed are on the system; the next apply reads them again)",
        match holder { Some(h) => format!(" (now held by pid {} on {})", h.pid, h.host), None => " (it was removed with `tenet state unlock --force`)".to_owned() }
    )]
    LockLost {
        path: String,
        holder: Option<Holder>,
    },
    #[error("state database {path}: {message}")]
    Database { path: String, message: String },
    #[error(
        "state database {path} has schema version {found}; this Tenet knows up to {known}: upgrade Tenet"
    )]
    TooNew {
        path: String,
        found: usize,
        known: usize,
    },
    #[error("no run {0} in the history")]
    NoSuchRun(u64),
    #[error(
        "no run {seq} in the history: runs up to {pruned_through} were pruned (`tenet state prune`, the agent's --keep-runs/--keep-days)"
    )]
    Pruned { seq: u64, pruned_through: u64 },
    #[error("run {seq} refers to stored content sha256:{sha256}, but {message}")]
    Blob {
        seq: u64,
        sha256: String,
        message: String,
    },
    #[error("no resource `{0}` in the state")]
    NoSuchResource(String),
}

/// Who holds the run lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub user: String,
    /// RFC 3339, UTC.
    pub since: String,
}

impl Holder {
    /// This process.
    pub fn me() -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            user: username(),
            since: now(),
        }
    }
}

/// The current time as RFC 3339 (UTC, milliseconds).
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Who runs this process: `$USER`/`$LOGNAME`, else the account of its uid in
/// /etc/passwd (services and containers often set neither variable), else `uid N`.
fn username() -> String {
    let uid = rustix::process::getuid().as_raw();
    let var = |name| std::env::var(name).ok().filter(|u: &String| !u.is_empty());
    var("USER")
        .or_else(|| var("LOGNAME"))
        .or_else(|| {
            let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
            account_of(&passwd, uid)
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The name of `uid` in an /etc/passwd text (`name:password:uid:…`).
fn account_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let uid_field = fields.nth(1)?;
        (uid_field.parse() == Ok(uid) && !name.is_empty()).then(|| name.to_owned())
    })
}

/// A resource Tenet manages, as last applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResource {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub provider: String,
    pub provider_version: String,
    pub component_sha256: String,
    /// The desired properties last applied.
    pub desired: Value,
    /// The state the provider reported after the last run.
    pub observed: Option<Value>,
    /// When it last changed (RFC 3339).
    pub changed_at: String,
    /// `lifecycle.prevent_destroy`, remembered: leaving the manifest does not delete it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prevent_destroy: bool,
    /// `on_remove: forget`, remembered: leaving the manifest only drops it from the state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forget_on_remove: bool,
    /// Top-level properties stored only as salted hashes ([`seal`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
    /// The manifest (file or directory) that declares it: only that manifest's runs
    /// delete it when it is no longer declared.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest: String,
}

/// A sensitive value as stored: `sha256:` + hex of sha256(salt, canonical JSON). Enough
/// to tell whether a value changed; useless to recover it (the salt defeats lookup
/// tables of common values).
pub fn seal(salt: &str, value: &Value) -> Value {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b"\n");
    h.update(crate::plan::canonical(value).as_bytes());
    Value::String(format!("sha256:{}", hex::encode(h.finalize())))
}

/// `doc` with the top-level `fields` sealed.
pub fn seal_fields(salt: &str, doc: &Value, fields: &[String]) -> Value {
    let mut doc = doc.clone();
    if let Some(map) = doc.as_object_mut() {
        for f in fields {
            if let Some(v) = map.get_mut(f) {
                *v = seal(salt, v);
            }
        }
    }
    doc
}

/// The git commit a manifest was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitInfo {
    pub commit: String,
    /// Uncommitted changes in the work tree.
    pub dirty: bool,
}

impl GitInfo {
    /// The commit of the repository containing `dir`, if it is one and `git` is present.
    pub fn of(dir: &std::path::Path) -> Option<GitInfo> {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let commit = git(&["rev-parse", "HEAD"])?;
        let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
        Some(GitInfo { commit, dirty })
    }
}

/// What happened to one resource in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceOutcome {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// `created`, `updated`, `refreshed`, `replaced`, `deleted`, `unchanged`, `failed`,
    /// `skipped`, `not_started`.
    pub outcome: String,
    /// The fields that changed (JSON pointers), for changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
    /// For a change made by apply: `corrective` (the desired state had not changed since
    /// the last apply: the system drifted and was put back) or `intentional` (the
    /// manifest asked for something new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    /// How many times its provider was asked, when a transient failure was tried again
    /// (`retry:`); absent for one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<usize>,
    /// The errors of the attempts that were tried again, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<String>,
}

/// One run, as recorded in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `apply`, `drift`, `rollback`.
    pub command: String,
    /// For a rollback: the run whose desired state it restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    pub manifest_path: String,
    pub manifest_sha256: String,
    /// The manifest's files (name → text) and variables, enough to plan it again. As
    /// stored, only the facts: the rest is kept once per digest ([`compact`]).
    pub manifest_snapshot: Value,
    /// As stored: the digest of the rest of the snapshot ([`compact`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    pub user: String,
    pub host: String,
    pub started_at: String,
    pub finished_at: String,
    pub succeeded: bool,
    pub resources: Vec<ResourceOutcome>,
    /// As stored: the resources found as desired, counted ([`compact`]); the others are
    /// in `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady: Option<Steady>,
    /// What the policies decided about the run (absent when there are none, so older
    /// records hash as they did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<crate::plan::policy::Decision>,
    /// The signed desired-state artifact the manifest came from (absent for a manifest
    /// read from disk, so older records hash as they did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<crate::manifest::Artifact>,
}

/// A run in the history: its sequence number and place in the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainedRun {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub record: RunRecord,
}

/// The hash of the chain before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// sha256 over the previous record's hash, the sequence number and the record's
/// canonical JSON (keys sorted): editing, inserting or removing a record changes it.
pub fn chain_hash(prev_hash: &str, seq: u64, record: &RunRecord) -> String {
    let canonical = serde_json::to_value(record)
        .map(|v| crate::plan::canonical(&v))
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Where the chain is broken, naming the first bad record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("run {seq} was edited: its content does not match its hash")]
    Edited { seq: u64 },
    #[error(
        "the history before run {seq} was changed: its link to the previous record does not match (a record was deleted, inserted or edited before it)"
    )]
    Relinked { seq: u64 },
    #[error("run {seq} cannot be read: {message}")]
    Unreadable { seq: u64, message: String },
    #[error(
        "run {seq} refers to stored content sha256:{sha256} that {message} (it was removed or edited)"
    )]
    Blob {
        seq: u64,
        sha256: String,
        message: String,
    },
}

impl ChainBreak {
    /// The first record that does not verify.
    pub fn seq(&self) -> u64 {
        match self {
            ChainBreak::Edited { seq }
            | ChainBreak::Relinked { seq }
            | ChainBreak::Unreadable { seq, .. }
            | ChainBreak::Blob { seq, .. } => *seq,
        }
    }
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub records: u64,
    /// The hash of the last record (the chain head), to note down outside the database.
    pub head: String,
    /// Where the chain starts when older runs were pruned.
    pub anchor: Option<Anchor>,
}

/// What is left of the runs pruned from the front of the history: the last one's
/// sequence number and hash, which the first remaining run must link to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The last pruned run.
    pub seq: u64,
    pub hash: String,
    /// How many runs were pruned in all, and when last (RFC 3339).
    pub pruned: u64,
    pub pruned_at: String,
}

/// How much history to keep ([`StateStore::prune`]): runs beyond either bound go, oldest
/// first, but never the newest run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many runs.
    pub runs: Option<u64>,
    /// Keep runs started within this long before now.
    pub age: Option<Duration>,
}

impl Retention {
    /// Whether it bounds anything.
    pub fn is_set(&self) -> bool {
        self.runs.is_some() || self.age.is_some()
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub blobs: u64,
    /// The anchor after it (unchanged when nothing was pruned).
    pub anchor: Option<Anchor>,
}

/// A stored run as read for verification: its number, links, and record (or why it
/// cannot be read).
pub type StoredRun = (u64, String, String, Result<RunRecord, String>);

/// Verify runs as a backend read them (seq, prev_hash, hash, record JSON; in sequence
/// order) with what each stored blob's content hashes to, as of one moment.
pub fn verify_rows(
    rows: Vec<compact::Row>,
    anchor: Option<&Anchor>,
    digests: &std::collections::HashMap<String, String>,
) -> Result<ChainSummary, ChainBreak> {
    let decoded: Vec<StoredRun> = rows
        .into_iter()
        .map(|(seq, prev, hash, record)| {
            let parsed = serde_json::from_str::<RunRecord>(&record).map_err(|e| e.to_string());
            (seq, prev, hash, parsed)
        })
        .collect();
    let check = |sha: &str| match digests.get(sha) {
        Some(found) if found == sha => Ok(()),
        Some(_) => Err("does not match its digest".to_owned()),
        None => Err("is missing".to_owned()),
    };
    verify_chain(&decoded, anchor, &check)
}

/// The last run a prune removes (0: none) when the newest is `newest`: every run beyond
/// `keep.runs`, and from the front every run started before `keep.age` back from `now`
/// (a prefix only, so what is left stays one chain; never the newest). `page(after,
/// newest)` lists the (seq, started_at) of some runs after `after` and before `newest`,
/// in order (empty: none left).
pub fn prune_cut<E>(
    newest: u64,
    keep: Retention,
    now: std::time::SystemTime,
    mut page: impl FnMut(u64, u64) -> Result<Vec<(u64, Option<String>)>, E>,
) -> Result<u64, E> {
    let mut cut = keep.runs.map_or(0, |n| newest.saturating_sub(n.max(1)));
    let Some(age) = keep.age else {
        return Ok(cut);
    };
    let before = now.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
    loop {
        let runs = page(cut, newest)?;
        if runs.is_empty() {
            return Ok(cut);
        }
        for (seq, started) in runs {
            let old = started
                .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
                .is_some_and(|t| t < before);
            if !old {
                return Ok(cut);
            }
            cut = seq;
        }
    }
}

/// Check stored records given in sequence order, starting from `anchor` if runs were
/// pruned; `blob` checks that the content behind a digest is there and matches it.
pub fn verify_chain(
    runs: &[StoredRun],
    anchor: Option<&Anchor>,
    blob: &dyn Fn(&str) -> Result<(), String>,
) -> Result<ChainSummary, ChainBreak> {
    let mut prev = anchor.map_or_else(|| GENESIS.to_owned(), |a| a.hash.clone());
    let mut checked = std::collections::HashSet::new();
    let mut first_after_anchor = anchor.map(|a| a.seq + 1);
    for (seq, prev_hash, hash, record) in runs {
        let record = record.as_ref().map_err(|message| ChainBreak::Unreadable {
            seq: *seq,
            message: message.clone(),
        })?;
        if chain_hash(prev_hash, *seq, record) != *hash {
            return Err(ChainBreak::Edited { seq: *seq });
        }
        // After pruning, the first run left must be the one after the anchor.
        if *prev_hash != prev || first_after_anchor.take().is_some_and(|s| s != *seq) {
            return Err(ChainBreak::Relinked { seq: *seq });
        }
        for sha in compact::references(record) {
            if checked.insert(sha.to_owned()) {
                blob(sha).map_err(|message| ChainBreak::Blob {
                    seq: *seq,
                    sha256: sha.to_owned(),
                    message,
                })?;
            }
        }
        prev = hash.clone();
    }
    Ok(ChainSummary {
        records: runs.len() as u64,
        head: prev,
        anchor: anchor.cloned(),
    })
}

/// A change in flight: written before a mutating provider call, removed after it. Entries
/// left behind name what a killed run was in the middle of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// `create`, `update`, `replace`, `delete`, or `refresh`.
    pub action: String,
    pub pid: u32,
    pub started_at: String,
    /// Set when the change finished: kept until the run is recorded, so a run killed
    /// after it still reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// How long to wait for the run lock, polling.
pub const LOCK_POLL: Duration = Duration::from_millis(100);

/// A backend's wait for the run lock's liveness half (an flock, an advisory lock):
/// `try_take` until it succeeds or `timeout` passes; then [`StateError::Locked`] naming
/// the holder `store`'s lock row names, or [`StateError::Busy`] naming what is held
/// (`held`) when no row says who.
pub fn wait_for_lock(
    store: &dyn StateStore,
    timeout: Duration,
    held: impl Fn() -> String,
    mut try_take: impl FnMut() -> Result<bool, StateError>,
) -> Result<(), StateError> {
    let start = std::time::Instant::now();
    loop {
        if try_take()? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(match store.lock_holder()? {
                Some(holder) => StateError::Locked {
                    path: store.location(),
                    holder,
                },
                None => StateError::Busy {
                    path: store.location(),
                    lock_file: held(),
                },
            });
        }
        std::thread::sleep(LOCK_POLL.min(timeout.saturating_sub(start.elapsed())));
    }
}

/// What every state backend provides. Methods are synchronous: a run makes a handful of
/// calls, each a short transaction.
pub trait StateStore: Send + Sync {
    /// Where the state lives, for messages.
    fn location(&self) -> String;

    /// Take the run lock, waiting up to `timeout`; a holder whose process is gone is
    /// replaced (however alike two processes look: same pid in two containers). Fails
    /// naming the holder. While held, every write first checks that it still is, and
    /// fails with [`StateError::LockLost`] once another took it or it was forced away.
    fn lock(&self, me: &Holder, timeout: Duration) -> Result<(), StateError>;
    /// Release the lock if `me` holds it.
    fn unlock(&self, me: &Holder) -> Result<(), StateError>;
    /// Take a shared lock for reading the system against the state (drift): any number
    /// of readers, never while a run holds the lock. Released by [`Self::unlock_shared`].
    fn lock_shared(&self, timeout: Duration) -> Result<(), StateError>;
    fn unlock_shared(&self);
    /// Release the lock whoever holds it; returns the holder it removed. A live holder
    /// notices at its next write and stops.
    fn force_unlock(&self) -> Result<Option<Holder>, StateError>;
    fn lock_holder(&self) -> Result<Option<Holder>, StateError>;

    /// Every managed resource, by id.
    fn resources(&self) -> Result<Vec<StoredResource>, StateError>;
    fn resource(&self, id: &str) -> Result<Option<StoredResource>, StateError>;
    /// Insert or replace resources, in one transaction.
    fn put_resources(&self, resources: &[StoredResource]) -> Result<(), StateError>;
    /// Remove resources from the state (deleted, or forgotten), in one transaction.
    fn remove_resources(&self, ids: &[String]) -> Result<(), StateError>;

    /// Append a finished run to the chained history, stored [`compact`]ly; returns its
    /// sequence number.
    fn append_run(&self, record: &RunRecord) -> Result<u64, StateError>;
    /// The last `limit` runs, newest first, as stored ([`compact`]: the steady
    /// resources as a count with their ids loaded, the snapshot by digest), each list
    /// read as of one moment.
    fn runs(&self, limit: usize) -> Result<Vec<ChainedRun>, StateError>;
    /// One run, whole, as it was appended ([`compact::expand`]); its hash is that of
    /// the stored form. A pruned one is [`StateError::Pruned`].
    fn run(&self, seq: u64) -> Result<ChainedRun, StateError>;
    /// Content a stored run refers to, by hex sha256.
    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Walk the whole chain (from the anchor, if pruned), checking every blob.
    fn verify(&self) -> Result<Result<ChainSummary, ChainBreak>, StateError>;
    /// Remove the oldest runs beyond `keep` (never the newest) and the blobs no run
    /// refers to any more, leaving an [`Anchor`] so the rest still verifies. Needs the
    /// run lock. `now` is the time `keep.age` counts back from.
    fn prune(&self, keep: Retention, now: std::time::SystemTime) -> Result<Pruned, StateError>;

    /// Journal the intent to change a resource (before the provider call).
    fn journal_begin(&self, entry: &JournalEntry) -> Result<(), StateError>;
    /// The change finished with `outcome` (the entry stays until the run is recorded).
    fn journal_finish(&self, id: &str, outcome: &str) -> Result<(), StateError>;
    /// The journal of a run not yet recorded, by id.
    fn journal(&self) -> Result<Vec<JournalEntry>, StateError>;
    fn journal_clear(&self) -> Result<(), StateError>;

    /// This state's random salt for [`seal`], created with the state.
    fn salt(&self) -> Result<String, StateError>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_uid_is_named_by_its_account() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\ndeploy:x:1001:1001::/home/deploy:/bin/sh\n";
        assert_eq!(super::account_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(super::account_of(passwd, 1001).as_deref(), Some("deploy"));
        assert_eq!(super::account_of(passwd, 7), None);
    }
}
