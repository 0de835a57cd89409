//! The shared state backend: PostgreSQL (`--state postgres://user@host/db?schema=NAME`),
//! for teams that apply one state from CI runners or several operators' machines — the
//! shape of Terraform's `pg` backend: the state's tables in a schema of their own (default
//! `tenet`), and the run lock an advisory lock held by the store's connection, which the
//! server releases when that connection goes, however the process ended.
//!
//! [`StateStore`] is synchronous and called from anywhere (the CLI, the run layer's
//! blocking tasks, inside or outside the tokio runtime), so each store owns one
//! connection on a thread of its own and hands it closures: the blocking `postgres` client
//! never runs on a runtime thread.

use super::{
    Anchor, ChainBreak, ChainSummary, ChainedRun, GENESIS, Holder, JournalEntry, Pruned, Retention,
    RunRecord, StateError, StateStore, StoredResource, chain_hash, compact,
};
use postgres::{Client, IsolationLevel, NoTls, Transaction};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

/// The schema, one migration per version; append, never edit.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE lock (id integer PRIMARY KEY CHECK (id = 1), holder text NOT NULL);
     CREATE TABLE resources (id text PRIMARY KEY, record text NOT NULL);
     CREATE TABLE runs (seq bigint PRIMARY KEY, prev_hash text NOT NULL, hash text NOT NULL, record text NOT NULL);
     CREATE TABLE journal (id text PRIMARY KEY, entry text NOT NULL);
     CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
     CREATE TABLE blobs (sha256 text PRIMARY KEY, body bytea NOT NULL);",
];

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "tenet";
/// The first key of every advisory lock Tenet takes ("tene"): the keyspace is the whole
/// database's, shared with every other application in it.
pub(crate) const LOCK_NAMESPACE: i32 = 0x7465_6e65;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The `meta` key of the pruned history's [`Anchor`].
const ANCHOR: &str = "anchor";

/// Whether `location` names a PostgreSQL state.
pub fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            match user.split_once(':') {
                Some((name, _)) => format!("{}{name}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `url` split into what the client takes and Tenet's own `schema` parameter (`default`
/// when it names none).
pub(crate) fn split_schema(url: &str, default: &str) -> Result<(String, String), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), default.to_owned()));
    };
    let mut schema = default.to_owned();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", name)) => schema = name.to_owned(),
            _ => rest.push(pair),
        }
    }
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(format!(
            "`schema={schema}`: a schema name is 1–63 lowercase letters, digits and `_`, not starting with a digit"
        ));
    }
    let client = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((client, schema))
}

/// The second key of one of this schema's advisory locks.
pub(crate) fn lock_key(schema: &str, what: &str) -> i32 {
    let d = crate::digest::sha256_hex(format!("tenet:{schema}:{what}").as_bytes());
    i32::from_str_radix(&d[..7], 16).unwrap_or(0)
}

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// State in a PostgreSQL schema.
pub struct PgStore {
    /// The URL without its password.
    shown: String,
    schema: String,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    salt: std::sync::OnceLock<String>,
    held: Mutex<Held>,
    /// The advisory lock keys: the run lock, and appends to the history.
    run_key: i32,
    append_key: i32,
}

/// What this store's connection holds (advisory locks stack per session: never take one
/// twice).
#[derive(Default)]
struct Held {
    exclusive: bool,
    shared: bool,
    /// Set while this store holds the run lock.
    holder: Option<Holder>,
}

impl PgStore {
    /// Connect, create the schema if needed and migrate it to this build's version (under
    /// a transaction-level advisory lock, so two processes migrating at once is safe). A
    /// schema from a newer Tenet is refused.
    pub fn open(url: &str) -> Result<PgStore, StateError> {
        let shown = redact(url);
        let err = |message: String| StateError::Database {
            path: shown.clone(),
            message,
        };
        let (client_url, schema) = split_schema(url, DEFAULT_SCHEMA).map_err(err)?;
        let mut config: postgres::Config = client_url
            .parse()
            .map_err(|e| err(format!("not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("tenet");
        }
        let (jobs, receive) = mpsc::channel::<Job>();
        let (ready, connected) = mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("tenet-postgres".into())
            .spawn(move || {
                let mut client = match config.connect(NoTls) {
                    Ok(c) => {
                        let _ = ready.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                for job in receive {
                    job(&mut client);
                }
                // Released with the session anyway; said explicitly so a handle dropped
                // in this process frees its locks before `drop` returns.
                let _ = client.batch_execute("SELECT pg_advisory_unlock_all()");
            })
            .map_err(|e| err(format!("cannot start its connection thread: {e}")))?;
        connected
            .recv()
            .map_err(|_| err("the connection thread ended".into()))?
            .map_err(|e| err(format!("cannot connect: {e}")))?;
        let store = PgStore {
            run_key: lock_key(&schema, "run"),
            append_key: lock_key(&schema, "append"),
            shown,
            schema,
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            salt: std::sync::OnceLock::new(),
            held: Mutex::new(Held::default()),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StateError> {
        let schema = self.schema.clone();
        let key = lock_key(&schema, "migrate");
        let known = MIGRATIONS.len() as i64;
        let found: i64 = self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_NAMESPACE, &key],
            )?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                 SET LOCAL search_path TO \"{schema}\";
                 CREATE TABLE IF NOT EXISTS schema_migrations (
                     version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
            ))?;
            let found: i64 = tx
                .query_one(
                    "SELECT coalesce(max(version), 0)::bigint FROM schema_migrations",
                    &[],
                )?
                .get(0);
            if found <= known {
                for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                    tx.batch_execute(sql)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)",
                        &[&(i as i32 + 1)],
                    )?;
                }
                tx.commit()?;
            }
            Ok(found)
        })?;
        if found > known {
            return Err(StateError::TooNew {
                path: self.location(),
                found: found as usize,
                known: known as usize,
            });
        }
        // Every later statement of this connection works in the schema.
        let schema = self.schema.clone();
        self.call(move |c| c.batch_execute(&format!("SET search_path TO \"{schema}\"")))
    }

    fn json<T: serde::Serialize>(&self, value: &T) -> Result<String, StateError> {
        serde_json::to_string(value).map_err(|e| self.err(e))
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Database {
            path: self.location(),
            message: e.to_string(),
        }
    }

    /// Run `f` on the connection's thread and wait for it.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StateError> {
        self.call_state(move |c| f(c).map_err(Failure::Db))
    }

    /// Run `f` on the connection's thread; it may fail with a [`StateError`] of its own.
    fn call_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, StateError> {
        let (send, receive) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |c| {
            let _ = send.send(f(c));
        });
        let jobs = self.jobs.lock().map_err(|_| self.err("poisoned lock"))?;
        jobs.as_ref()
            .ok_or_else(|| self.err("the connection is closed"))?
            .send(job)
            .map_err(|_| self.err("the connection is gone"))?;
        drop(jobs);
        match receive.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Failure::Db(e))) => Err(self.err(describe(&e))),
            Ok(Err(Failure::Invalid(message))) => Err(self.err(message)),
            Ok(Err(Failure::State(e))) => Err(e),
            Err(_) => Err(self.err("the connection is gone")),
        }
    }

    fn held(&self) -> Result<std::sync::MutexGuard<'_, Held>, StateError> {
        self.held.lock().map_err(|_| self.err("poisoned lock"))
    }

    /// Before a write under the run lock: is it still ours?
    fn check_held(&self) -> Result<(), StateError> {
        let Some(me) = self.held()?.holder.clone() else {
            return Ok(());
        };
        let now = self.lock_holder()?;
        if now.as_ref() == Some(&me) {
            Ok(())
        } else {
            Err(StateError::LockLost {
                path: self.location(),
                holder: now,
            })
        }
    }

    /// Try the run lock's advisory lock once (exclusive or shared) unless already held.
    fn try_advisory(&self, exclusive: bool) -> Result<bool, StateError> {
        let mut held = self.held()?;
        // Held exclusively covers both; held shared covers a shared request.
        if held.exclusive || (!exclusive && held.shared) {
            return Ok(true);
        }
        let key = self.run_key;
        let sql = if exclusive {
            "SELECT pg_try_advisory_lock($1, $2)"
        } else {
            "SELECT pg_try_advisory_lock_shared($1, $2)"
        };
        let got: bool =
            self.call(move |c| Ok(c.query_one(sql, &[&LOCK_NAMESPACE, &key])?.get(0)))?;
        if got {
            if exclusive {
                held.exclusive = true;
            } else {
                held.shared = true;
            }
        }
        Ok(got)
    }

    /// Release what this store holds of the run lock's advisory lock.
    fn release_advisory(&self, held: &mut Held) -> Result<(), StateError> {
        let key = self.run_key;
        let (exclusive, shared) = (held.exclusive, held.shared);
        *held = Held::default();
        self.call(move |c| {
            if exclusive {
                c.execute(
                    "SELECT pg_advisory_unlock($1, $2)",
                    &[&LOCK_NAMESPACE, &key],
                )?;
            }
            if shared {
                c.execute(
                    "SELECT pg_advisory_unlock_shared($1, $2)",
                    &[&LOCK_NAMESPACE, &key],
                )?;
            }
            Ok(())
        })
    }

    /// Wait up to `timeout` for the advisory lock.
    fn wait_advisory(&self, timeout: Duration, exclusive: bool) -> Result<(), StateError> {
        let held = || {
            format!(
                "the advisory lock ({LOCK_NAMESPACE}, {}) of schema {}",
                self.run_key, self.schema
            )
        };
        super::wait_for_lock(self, timeout, held, || self.try_advisory(exclusive))
    }

    /// Every `(seq, prev_hash, hash, record)` of `sql` with `params`.
    fn rows(
        tx: &mut Transaction<'_>,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<compact::Row>, postgres::Error> {
        Ok(tx
            .query(sql, params)?
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2), r.get(3)))
            .collect())
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing the queue ends the thread, which releases the session's locks.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut thread) = self.thread.lock()
            && let Some(t) = thread.take()
        {
            let _ = t.join();
        }
    }
}

/// A failure inside a job: the database's, what it returned not being valid, or one of
/// the state's own.
enum Failure {
    Db(postgres::Error),
    Invalid(String),
    State(StateError),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure::Db(e)
    }
}

/// A database error with the server's message when there is one.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::Invalid(format!("{what} is not valid: {e}")))
}

/// A read-only transaction that sees one moment (REPEATABLE READ).
fn snapshot(c: &mut Client) -> Result<Transaction<'_>, postgres::Error> {
    c.build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
}

fn blob_in(tx: &mut Transaction<'_>, sha: &str) -> Result<Option<Vec<u8>>, postgres::Error> {
    Ok(tx
        .query_opt("SELECT body FROM blobs WHERE sha256 = $1", &[&sha])?
        .map(|r| r.get(0)))
}

fn anchor_in(tx: &mut Transaction<'_>) -> Result<Option<Anchor>, Failure> {
    tx.query_opt("SELECT value FROM meta WHERE key = $1", &[&ANCHOR])?
        .map(|r| decode("the pruned history's anchor", &r.get::<_, String>(0)))
        .transpose()
}

/// A blob source over a transaction (the compaction helpers take a shared closure);
/// its errors name the state at `location`.
fn blobs<'a, 'b>(
    tx: &'a std::cell::RefCell<&'a mut Transaction<'b>>,
    location: &'a str,
) -> impl Fn(&str) -> Result<Option<Vec<u8>>, StateError> + 'a {
    move |sha| {
        blob_in(&mut tx.borrow_mut(), sha).map_err(|e| StateError::Database {
            path: location.to_owned(),
            message: describe(&e),
        })
    }
}

impl StateStore for PgStore {
    fn location(&self) -> String {
        format!("{} (schema {})", self.shown, self.schema)
    }

    fn lock(&self, me: &Holder, timeout: Duration) -> Result<(), StateError> {
        // Holding the advisory lock means whoever the row names is gone (or is us).
        self.wait_advisory(timeout, true)?;
        let holder = self.json(me)?;
        self.call(move |c| {
            c.execute(
                "INSERT INTO lock (id, holder) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET holder = excluded.holder",
                &[&holder],
            )
            .map(drop)
        })?;
        self.held()?.holder = Some(me.clone());
        Ok(())
    }

    fn unlock(&self, me: &Holder) -> Result<(), StateError> {
        let holder = self.json(me)?;
        self.call(move |c| {
            c.execute("DELETE FROM lock WHERE id = 1 AND holder = $1", &[&holder])
                .map(drop)
        })?;
        let mut held = self.held()?;
        if held.holder.as_ref() == Some(me) {
            self.release_advisory(&mut held)?;
        }
        Ok(())
    }

    fn lock_shared(&self, timeout: Duration) -> Result<(), StateError> {
        self.wait_advisory(timeout, false)
    }

    fn unlock_shared(&self) {
        if let Ok(mut held) = self.held()
            && held.holder.is_none()
        {
            let _ = self.release_advisory(&mut held);
        }
    }

    fn force_unlock(&self) -> Result<Option<Holder>, StateError> {
        let holder = self.lock_holder()?;
        self.call(|c| c.execute("DELETE FROM lock WHERE id = 1", &[]).map(drop))?;
        let mut held = self.held()?;
        self.release_advisory(&mut held)?;
        Ok(holder)
    }

    fn lock_holder(&self) -> Result<Option<Holder>, StateError> {
        self.call_state(|c| {
            c.query_opt("SELECT holder FROM lock WHERE id = 1", &[])?
                .map(|r| decode("the lock holder", &r.get::<_, String>(0)))
                .transpose()
        })
    }

    fn resources(&self) -> Result<Vec<StoredResource>, StateError> {
        self.call_state(|c| {
            c.query(
                "SELECT record FROM resources ORDER BY id COLLATE \"C\"",
                &[],
            )?
            .iter()
            .map(|r| decode("a stored resource", &r.get::<_, String>(0)))
            .collect()
        })
    }

    fn resource(&self, id: &str) -> Result<Option<StoredResource>, StateError> {
        let id = id.to_owned();
        self.call_state(move |c| {
            c.query_opt("SELECT record FROM resources WHERE id = $1", &[&id])?
                .map(|r| decode("a stored resource", &r.get::<_, String>(0)))
                .transpose()
        })
    }

    fn put_resources(&self, resources: &[StoredResource]) -> Result<(), StateError> {
        self.check_held()?;
        let rows: Vec<(String, String)> = resources
            .iter()
            .map(|r| Ok((r.id.clone(), self.json(r)?)))
            .collect::<Result<_, StateError>>()?;
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let stmt = tx.prepare(
                "INSERT INTO resources (id, record) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            )?;
            for (id, record) in &rows {
                tx.execute(&stmt, &[id, record])?;
            }
            tx.commit()
        })
    }

    fn remove_resources(&self, ids: &[String]) -> Result<(), StateError> {
        self.check_held()?;
        let ids = ids.to_vec();
        self.call(move |c| {
            c.execute("DELETE FROM resources WHERE id = ANY($1)", &[&ids])
                .map(drop)
        })
    }

    fn append_run(&self, record: &RunRecord) -> Result<u64, StateError> {
        self.check_held()?;
        let (stored, blobs) = compact::compact(record);
        let text = self.json(&stored)?;
        let key = self.append_key;
        self.call(move |c| {
            let mut tx = c.transaction()?;
            // One appender at a time: each links to the one before.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_NAMESPACE, &key],
            )?;
            let last = tx.query_opt("SELECT seq, hash FROM runs ORDER BY seq DESC LIMIT 1", &[])?;
            let (seq, prev) = match last {
                Some(r) => (r.get::<_, i64>(0) as u64 + 1, r.get::<_, String>(1)),
                None => (1, GENESIS.to_owned()),
            };
            let hash = chain_hash(&prev, seq, &stored);
            for b in &blobs {
                tx.execute(
                    "INSERT INTO blobs (sha256, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&b.sha256, &b.body],
                )?;
            }
            tx.execute(
                "INSERT INTO runs (seq, prev_hash, hash, record) VALUES ($1, $2, $3, $4)",
                &[&(seq as i64), &prev, &hash, &text],
            )?;
            tx.commit()?;
            Ok(seq)
        })
    }

    fn runs(&self, limit: usize) -> Result<Vec<ChainedRun>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let location = self.location();
        self.call_state(move |c| {
            let mut tx = snapshot(c)?;
            let rows = PgStore::rows(
                &mut tx,
                "SELECT seq, prev_hash, hash, record FROM runs ORDER BY seq DESC LIMIT $1",
                &[&limit],
            )?;
            let cell = std::cell::RefCell::new(&mut tx);
            compact::stored_runs(rows, &location, &blobs(&cell, &location)).map_err(Failure::State)
        })
    }

    fn run(&self, seq: u64) -> Result<ChainedRun, StateError> {
        let location = self.location();
        self.call_state(move |c| {
            let mut tx = snapshot(c)?;
            let mut rows = PgStore::rows(
                &mut tx,
                "SELECT seq, prev_hash, hash, record FROM runs WHERE seq = $1",
                &[&(seq as i64)],
            )?;
            let anchor = anchor_in(&mut tx)?;
            let cell = std::cell::RefCell::new(&mut tx);
            compact::whole_run(
                seq,
                rows.pop(),
                || Ok(anchor),
                &location,
                &blobs(&cell, &location),
            )
            .map_err(Failure::State)
        })
    }

    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StateError> {
        let sha = sha256.to_owned();
        self.call(move |c| {
            Ok(
                c.query_opt("SELECT body FROM blobs WHERE sha256 = $1", &[&sha])?
                    .map(|r| r.get(0)),
            )
        })
    }

    fn verify(&self) -> Result<Result<ChainSummary, ChainBreak>, StateError> {
        // One snapshot: a prune or an append committing meanwhile is seen whole or not.
        let (rows, anchor, digests) = self.call_state(|c| {
            let mut tx = snapshot(c)?;
            let rows = PgStore::rows(
                &mut tx,
                "SELECT seq, prev_hash, hash, record FROM runs ORDER BY seq",
                &[],
            )?;
            let digests: std::collections::HashMap<String, String> = tx
                .query("SELECT sha256, body FROM blobs", &[])?
                .iter()
                .map(|r| (r.get(0), crate::digest::sha256_hex(r.get::<_, &[u8]>(1))))
                .collect();
            Ok((rows, anchor_in(&mut tx)?, digests))
        })?;
        Ok(super::verify_rows(rows, anchor.as_ref(), &digests))
    }

    fn prune(&self, keep: Retention, now: std::time::SystemTime) -> Result<Pruned, StateError> {
        self.check_held()?;
        let key = self.append_key;
        let pruned = self.call_state(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_NAMESPACE, &key],
            )?;
            let newest: Option<i64> = tx.query_one("SELECT max(seq) FROM runs", &[])?.get(0);
            let Some(newest) = newest else {
                return Ok(None);
            };
            let page = tx.prepare(
                "SELECT seq, record::jsonb->>'started_at' FROM runs
                 WHERE seq > $1 AND seq < $2 ORDER BY seq LIMIT 256",
            )?;
            let cut = super::prune_cut(newest as u64, keep, now, |after, newest| {
                Ok::<_, postgres::Error>(
                    tx.query(&page, &[&(after as i64), &(newest as i64)])?
                        .iter()
                        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                        .collect(),
                )
            })?;
            let Some(hash) = tx
                .query_opt("SELECT hash FROM runs WHERE seq = $1", &[&(cut as i64)])?
                .map(|r| r.get::<_, String>(0))
            else {
                return Ok(None);
            };
            let before: u64 = anchor_in(&mut tx)?.map_or(0, |a| a.pruned);
            let runs = tx.execute("DELETE FROM runs WHERE seq <= $1", &[&(cut as i64)])?;
            let anchor = Anchor {
                seq: cut,
                hash,
                pruned: before + runs,
                pruned_at: super::now(),
            };
            let text = serde_json::to_string(&anchor).unwrap_or_default();
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&ANCHOR, &text],
            )?;
            let blobs = tx.execute(
                "DELETE FROM blobs WHERE sha256 NOT IN (
                     SELECT record::jsonb->>'snapshot_sha256' FROM runs
                     WHERE record::jsonb ? 'snapshot_sha256'
                     UNION
                     SELECT record::jsonb->'steady'->>'sha256' FROM runs
                     WHERE record::jsonb ? 'steady'
                 )",
                &[],
            )?;
            tx.commit()?;
            Ok(Some(Pruned {
                runs,
                blobs,
                anchor: Some(anchor),
            }))
        })?;
        match pruned {
            Some(p) => Ok(p),
            None => {
                let anchor = self.call_state(|c| {
                    let mut tx = snapshot(c)?;
                    anchor_in(&mut tx)
                })?;
                Ok(Pruned {
                    anchor,
                    ..Pruned::default()
                })
            }
        }
    }

    fn journal_begin(&self, entry: &JournalEntry) -> Result<(), StateError> {
        self.check_held()?;
        let (id, text) = (entry.id.clone(), self.json(entry)?);
        self.call(move |c| {
            c.execute(
                "INSERT INTO journal (id, entry) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET entry = excluded.entry",
                &[&id, &text],
            )
            .map(drop)
        })
    }

    fn journal_finish(&self, id: &str, outcome: &str) -> Result<(), StateError> {
        self.check_held()?;
        let (id, outcome) = (id.to_owned(), outcome.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE journal SET entry = jsonb_set(entry::jsonb, '{outcome}', to_jsonb($2::text))::text
                 WHERE id = $1",
                &[&id, &outcome],
            )
            .map(drop)
        })
    }

    fn journal(&self) -> Result<Vec<JournalEntry>, StateError> {
        self.call_state(|c| {
            c.query("SELECT entry FROM journal ORDER BY id COLLATE \"C\"", &[])?
                .iter()
                .map(|r| decode("a journal entry", &r.get::<_, String>(0)))
                .collect()
        })
    }

    fn journal_clear(&self) -> Result<(), StateError> {
        self.check_held()?;
        self.call(|c| c.execute("DELETE FROM journal", &[]).map(drop))
    }

    fn salt(&self) -> Result<String, StateError> {
        if let Some(s) = self.salt.get() {
            return Ok(s.clone());
        }
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| self.err(format!("no randomness for the salt: {e}")))?;
        let fresh = hex::encode(fresh);
        let salt: String = self.call(move |c| {
            // The first caller's salt wins; every later one reads it.
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('salt', $1) ON CONFLICT DO NOTHING",
                &[&fresh],
            )?;
            Ok(
                c.query_one("SELECT value FROM meta WHERE key = 'salt'", &[])?
                    .get(0),
            )
        })?;
        Ok(self.salt.get_or_init(|| salt).clone())
    }
}

/// Test support: a PostgreSQL schema of its own for one test, dropped with the value.
/// The server is `TENET_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
/// unreachable, it fails the test under `CI`, and elsewhere is `None` with the reason
/// printed.
#[cfg(any(test, feature = "test-support"))]
pub struct TestSchema {
    base: String,
    pub name: String,
}

#[cfg(any(test, feature = "test-support"))]
impl TestSchema {
    pub fn new(tag: &str) -> Option<TestSchema> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::var("TENET_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        if let Err(e) = Client::connect(&base, NoTls) {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is not reachable at {base}: {e}"
            );
            eprintln!("SKIPPED ({tag}): PostgreSQL is not reachable at {base}: {e}");
            return None;
        }
        let name = format!(
            "tenet_test_{}_{}_{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Some(TestSchema { base, name })
    }

    /// The `--state` URL of this schema.
    pub fn url(&self) -> String {
        format!("{}?schema={}", self.base, self.name)
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.base, NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn passes_the_conformance_suite() {
        let Some(schema) = TestSchema::new("conformance") else {
            return;
        };
        let url = schema.url();
        let open = move || -> Arc<dyn StateStore> { Arc::new(PgStore::open(&url).expect("open")) };
        conformance::run_all(&open);
    }

    #[test]
    fn schemas_are_apart_and_a_newer_one_is_refused() {
        let (Some(a), Some(b)) = (TestSchema::new("a"), TestSchema::new("b")) else {
            return;
        };
        let one = PgStore::open(&a.url()).expect("open a");
        let other = PgStore::open(&b.url()).expect("open b");
        // Each schema has its own lock and its own history.
        let me = Holder::me();
        one.lock(&me, Duration::ZERO).expect("lock a");
        other
            .lock(&me, Duration::ZERO)
            .expect("lock b is another lock");
        one.append_run(&conformance::record("apply", "created"))
            .expect("append");
        assert_eq!(other.runs(10).expect("runs").len(), 0);
        assert!(one.location().contains(&a.name), "{}", one.location());
        drop((one, other));
        let mut raw = Client::connect(&a.base, NoTls).expect("raw");
        raw.execute(
            &format!(
                "INSERT INTO \"{}\".schema_migrations (version) VALUES (99)",
                a.name
            ),
            &[],
        )
        .expect("bump");
        match PgStore::open(&a.url()) {
            Err(StateError::TooNew { found: 99, .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
            Ok(_) => panic!("a newer schema must be refused"),
        }
    }

    /// What a database with forged content returns is caught, named, and never a
    /// panic: an edited shared snapshot, an unreadable record, a forged anchor.
    #[test]
    fn forged_content_in_the_database_is_named() {
        let Some(schema) = TestSchema::new("forged") else {
            return;
        };
        let s = PgStore::open(&schema.url()).expect("open");
        for _ in 0..3 {
            s.append_run(&conformance::record("apply", "created"))
                .expect("append");
        }
        let mut raw = Client::connect(&schema.base, NoTls).expect("raw");
        let t = |table: &str| format!("\"{}\".{table}", schema.name);
        raw.execute(
            &format!("UPDATE {} SET body = body || 'x'::bytea", t("blobs")),
            &[],
        )
        .expect("edit the blobs");
        match s.verify().expect("verify") {
            Err(ChainBreak::Blob {
                seq: 1, message, ..
            }) => {
                assert!(message.contains("does not match"), "{message}")
            }
            other => panic!("an edited blob: {other:?}"),
        }
        match s.run(2) {
            Err(StateError::Blob { seq: 2, .. }) => {}
            other => panic!("a run over an edited blob: {other:?}"),
        }
        raw.execute(
            &format!(
                "UPDATE {} SET record = '{{not json' WHERE seq = 3",
                t("runs")
            ),
            &[],
        )
        .expect("break a record");
        match s.runs(10) {
            Err(StateError::Database { path, message }) => {
                assert!(path.contains(&schema.name), "{path}");
                assert!(message.contains("run 3 is not valid"), "{message}");
            }
            other => panic!("an unreadable record: {other:?}"),
        }
        match s.verify().expect("verify") {
            Err(ChainBreak::Blob { .. }) | Err(ChainBreak::Unreadable { .. }) => {}
            other => panic!("verify over a broken record: {other:?}"),
        }
        raw.execute(
            &format!(
                "INSERT INTO {} (key, value) VALUES ('anchor', 'garbage')",
                t("meta")
            ),
            &[],
        )
        .expect("forge an anchor");
        match s.verify() {
            Err(StateError::Database { path, message }) => {
                assert!(path.contains(&schema.name), "{path}");
                assert!(message.contains("anchor is not valid"), "{message}");
            }
            other => panic!("a forged anchor: {other:?}"),
        }
    }

    #[test]
    fn a_wrong_url_is_a_clear_error() {
        match PgStore::open("postgres://nobody@127.0.0.1:1/none?schema=x") {
            Err(StateError::Database { message, .. }) => {
                assert!(message.contains("cannot connect"), "{message}")
            }
            Err(e) => panic!("unexpected: {e}"),
            Ok(_) => panic!("nothing listens on port 1"),
        }
        match PgStore::open("postgres://u:pw@h/db?schema=Bad-Name") {
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("schema name") && !text.contains("pw"),
                    "{text}"
                );
            }
            Ok(_) => panic!("an invalid schema name must be refused"),
        }
    }

    #[test]
    fn urls_are_split_and_shown_without_passwords() {
        assert_eq!(
            split_schema(
                "postgres://u@h/db?schema=team_a&sslmode=disable",
                DEFAULT_SCHEMA
            ),
            Ok((
                "postgres://u@h/db?sslmode=disable".to_owned(),
                "team_a".to_owned()
            ))
        );
        assert_eq!(
            split_schema("postgres://u@h/db", DEFAULT_SCHEMA).map(|(_, s)| s),
            Ok(DEFAULT_SCHEMA.to_owned())
        );
        for bad in ["x\"; DROP", "", "9lives", "UPPER"] {
            assert!(
                split_schema(&format!("postgres://h/db?schema={bad}"), DEFAULT_SCHEMA).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            redact("postgres://deploy:s3cret@db.example/tenet"),
            "postgres://deploy:***@db.example/tenet"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert!(is_url("postgresql://h/db") && !is_url("/var/lib/tenet/state.db"));
    }
}
