//! The embedded state backend: one SQLite database (bundled SQLite, WAL journal) with a
//! versioned schema migrated on open. Needs no set-up: the file and its directory are
//! created on first use.

use super::{
    Anchor, ChainBreak, ChainSummary, ChainedRun, GENESIS, Holder, JournalEntry, Pruned, Retention,
    RunRecord, StateError, StateStore, StoredResource, chain_hash, compact,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The schema, one migration per version; append, never edit.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE lock (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             holder TEXT NOT NULL
         );
         CREATE TABLE resources (
             id TEXT PRIMARY KEY,
             record TEXT NOT NULL
         );
         CREATE TABLE runs (
             seq INTEGER PRIMARY KEY,
             prev_hash TEXT NOT NULL,
             hash TEXT NOT NULL,
             record TEXT NOT NULL
         );",
        ),
        M::up(
            "CREATE TABLE journal (
                 id TEXT PRIMARY KEY,
                 entry TEXT NOT NULL
             );",
        ),
        M::up(
            "CREATE TABLE meta (
                 key TEXT PRIMARY KEY,
                 value TEXT NOT NULL
             );",
        ),
        // Content stored once per digest (state::compact).
        M::up(
            "CREATE TABLE blobs (
                 sha256 TEXT PRIMARY KEY,
                 body BLOB NOT NULL
             );",
        ),
    ])
}

/// The number of migrations this build knows.
const SCHEMA_VERSION: usize = 4;
/// The `meta` key of the pruned history's [`Anchor`].
const ANCHOR: &str = "anchor";
/// How long one statement waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// State in a SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// The salt, once read (it never changes).
    salt: std::sync::OnceLock<String>,
    /// The run lock this store holds, if any.
    held: Mutex<Held>,
}

/// The run lock's two halves. The `lock` row says who holds it (for messages, and so a
/// forced unlock is noticed); an `flock` on `STATE.lock`, held by the open file for as
/// long as the run lasts, says whether that holder is still alive: the kernel drops it
/// when the process dies, whatever its pid or host name look like.
#[derive(Default)]
struct Held {
    file: Option<std::fs::File>,
    /// Set while this store holds the run lock exclusively.
    holder: Option<Holder>,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and migrate it to this build's
    /// schema. A database from a newer Tenet is refused, not downgraded.
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        let err = |message: String| StateError::Database {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Two processes opening a new (or older) state at once must not both set it up:
        // switching a new database to WAL can fail at once with "database is locked"
        // (SQLite does not wait for that), and in WAL two deferred transactions that both
        // read the old schema version cannot both write. Setting up happens under a lock
        // file of its own, one opener at a time; the others then find it done.
        let lock_path = {
            let mut name = path.as_os_str().to_owned();
            name.push(".migrate.lock");
            PathBuf::from(name)
        };
        let setup_lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(format!("cannot open {}: {e}", lock_path.display())))?;
        rustix::fs::flock(&setup_lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| err(format!("cannot lock {}: {e}", lock_path.display())))?;
        let mut conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| err(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err(e.to_string()))?;
        // WAL with synchronous=NORMAL: every commit survives the process being killed
        // (the journal's whole point) without an fsync per journal entry; a power cut may
        // lose the newest commits but never corrupts the database.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| err(e.to_string()))?;
        let found: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| err(e.to_string()))?;
        if found > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                path: path.display().to_string(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            migrations()
                .to_latest(&mut conn)
                .map_err(|e| err(format!("cannot migrate the schema: {e}")))?;
        }
        drop(setup_lock);
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            salt: std::sync::OnceLock::new(),
            held: Mutex::new(Held::default()),
        })
    }

    /// The file whose `flock` tells a live run lock from a dead one.
    pub fn lock_file(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Try once to take the lock file's `flock` without waiting.
    fn try_flock(&self, held: &mut Held, exclusive: bool) -> Result<bool, StateError> {
        use rustix::fs::FlockOperation;
        let file = match &mut held.file {
            Some(f) => f,
            slot => {
                let path = self.lock_file();
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| self.err(format!("cannot open {}: {e}", path.display())))?;
                slot.insert(f)
            }
        };
        let op = if exclusive {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::NonBlockingLockShared
        };
        match rustix::fs::flock(&*file, op) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(self.err(format!("cannot lock {}: {e}", self.lock_file().display()))),
        }
    }

    fn held(&self) -> Result<std::sync::MutexGuard<'_, Held>, StateError> {
        self.held.lock().map_err(|_| self.err("poisoned lock"))
    }

    /// Before a write under the run lock: is it still ours?
    fn check_held(&self) -> Result<(), StateError> {
        let held = self.held()?;
        let Some(me) = &held.holder else {
            return Ok(());
        };
        let now = self.lock_holder()?;
        if now.as_ref() == Some(me) {
            Ok(())
        } else {
            Err(StateError::LockLost {
                path: self.location(),
                holder: now,
            })
        }
    }

    /// Wait up to `timeout` for the lock file's `flock`.
    fn wait_flock(&self, timeout: Duration, exclusive: bool) -> Result<(), StateError> {
        let held = || self.lock_file().display().to_string();
        super::wait_for_lock(self, timeout, held, || {
            self.try_flock(&mut *self.held()?, exclusive)
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Database {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn.lock().map_err(|_| self.err("poisoned lock"))?;
        f(&mut conn).map_err(|e| self.err(e))
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        text: &str,
    ) -> Result<T, StateError> {
        serde_json::from_str(text).map_err(|e| self.err(format!("{what} is not valid: {e}")))
    }

    /// Where the history starts, if runs were pruned.
    fn anchor(&self) -> Result<Option<Anchor>, StateError> {
        self.read(|tx| self.anchor_in(tx))
    }

    fn anchor_in(&self, c: &Connection) -> Result<Option<Anchor>, StateError> {
        let text: Option<String> = c
            .query_row("SELECT value FROM meta WHERE key = ?1", [ANCHOR], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        text.map(|t| self.decode("the pruned history's anchor", &t))
            .transpose()
    }

    fn blob_in(&self, c: &Connection, sha256: &str) -> Result<Option<Vec<u8>>, StateError> {
        c.query_row("SELECT body FROM blobs WHERE sha256 = ?1", [sha256], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Reads that see one state of the database: one deferred transaction, so whatever
    /// commits meanwhile (an append, a prune) is seen whole or not at all.
    fn read<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn.lock().map_err(|_| self.err("poisoned lock"))?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        f(&tx)
    }

    /// The JSON record `sql` selects with `param`, if any, decoded.
    fn record<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        param: impl rusqlite::ToSql,
    ) -> Result<Option<T>, StateError> {
        let text: Option<String> =
            self.with(|c| c.query_row(sql, [param], |r| r.get(0)).optional())?;
        text.map(|t| self.decode(what, &t)).transpose()
    }

    /// Every JSON record `sql` selects, decoded.
    fn records<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
    ) -> Result<Vec<T>, StateError> {
        let rows: Vec<String> = self.with(|c| {
            let mut stmt = c.prepare(sql)?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })?;
        rows.iter().map(|t| self.decode(what, t)).collect()
    }
}

fn json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

impl StateStore for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn lock(&self, me: &Holder, timeout: Duration) -> Result<(), StateError> {
        // Holding the flock means whoever the row names is gone (or is us): take over.
        self.wait_flock(timeout, true)?;
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO lock (id, holder) VALUES (1, ?1)",
                params![json(me)?],
            )
            .map(drop)
        })?;
        self.held()?.holder = Some(me.clone());
        Ok(())
    }

    fn unlock(&self, me: &Holder) -> Result<(), StateError> {
        // Only if still ours, in one statement: a lock taken over meanwhile stays.
        self.with(|c| {
            c.execute("DELETE FROM lock WHERE id = 1 AND holder = ?1", [json(me)?])
                .map(drop)
        })?;
        let mut held = self.held()?;
        if held.holder.as_ref() == Some(me) {
            *held = Held::default();
        }
        Ok(())
    }

    fn lock_shared(&self, timeout: Duration) -> Result<(), StateError> {
        self.wait_flock(timeout, false)
    }

    fn unlock_shared(&self) {
        if let Ok(mut held) = self.held()
            && held.holder.is_none()
        {
            held.file = None;
        }
    }

    fn force_unlock(&self) -> Result<Option<Holder>, StateError> {
        let holder = self.lock_holder()?;
        self.with(|c| c.execute("DELETE FROM lock WHERE id = 1", []).map(drop))?;
        *self.held()? = Held::default();
        Ok(holder)
    }

    fn lock_holder(&self) -> Result<Option<Holder>, StateError> {
        self.record(
            "the lock holder",
            "SELECT holder FROM lock WHERE id = ?1",
            1,
        )
    }

    fn resources(&self) -> Result<Vec<StoredResource>, StateError> {
        self.records(
            "a stored resource",
            "SELECT record FROM resources ORDER BY id",
        )
    }

    fn resource(&self, id: &str) -> Result<Option<StoredResource>, StateError> {
        self.record(
            "a stored resource",
            "SELECT record FROM resources WHERE id = ?1",
            id,
        )
    }

    fn put_resources(&self, resources: &[StoredResource]) -> Result<(), StateError> {
        self.check_held()?;
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt =
                    tx.prepare("INSERT OR REPLACE INTO resources (id, record) VALUES (?1, ?2)")?;
                for r in resources {
                    stmt.execute(params![r.id, json(r)?])?;
                }
            }
            tx.commit()
        })
    }

    fn remove_resources(&self, ids: &[String]) -> Result<(), StateError> {
        self.check_held()?;
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare("DELETE FROM resources WHERE id = ?1")?;
                for id in ids {
                    stmt.execute([id])?;
                }
            }
            tx.commit()
        })
    }

    fn append_run(&self, record: &RunRecord) -> Result<u64, StateError> {
        self.check_held()?;
        let (stored, blobs) = compact::compact(record);
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let last: Option<(u64, String)> = tx
                .query_row(
                    "SELECT seq, hash FROM runs ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (seq, prev) = match last {
                Some((s, h)) => (s + 1, h),
                None => (1, GENESIS.to_owned()),
            };
            let hash = chain_hash(&prev, seq, &stored);
            {
                let mut put =
                    tx.prepare("INSERT OR IGNORE INTO blobs (sha256, body) VALUES (?1, ?2)")?;
                for b in &blobs {
                    put.execute(params![b.sha256, b.body])?;
                }
            }
            tx.execute(
                "INSERT INTO runs (seq, prev_hash, hash, record) VALUES (?1, ?2, ?3, ?4)",
                params![seq, prev, hash, json(&stored)?],
            )?;
            tx.commit()?;
            Ok(seq)
        })
    }

    fn runs(&self, limit: usize) -> Result<Vec<ChainedRun>, StateError> {
        self.read(|tx| {
            let rows: Vec<compact::Row> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT seq, prev_hash, hash, record FROM runs ORDER BY seq DESC LIMIT ?1",
                    )
                    .map_err(|e| self.err(e))?;
                stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .and_then(Iterator::collect)
                .map_err(|e| self.err(e))?
            };
            compact::stored_runs(rows, &self.location(), &|sha| self.blob_in(tx, sha))
        })
    }

    fn run(&self, seq: u64) -> Result<ChainedRun, StateError> {
        self.read(|tx| {
            let row: Option<compact::Row> = tx
                .query_row(
                    "SELECT seq, prev_hash, hash, record FROM runs WHERE seq = ?1",
                    [seq],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            compact::whole_run(seq, row, || self.anchor_in(tx), &self.location(), &|sha| {
                self.blob_in(tx, sha)
            })
        })
    }

    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.read(|tx| self.blob_in(tx, sha256))
    }

    fn prune(&self, keep: Retention, now: std::time::SystemTime) -> Result<Pruned, StateError> {
        self.check_held()?;
        let pruned = self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before_now: Option<u64> = tx
                .query_row(
                    "SELECT json_extract(value, '$.pruned') FROM meta WHERE key = ?1",
                    [ANCHOR],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let newest: Option<u64> =
                tx.query_row("SELECT max(seq) FROM runs", [], |r| r.get(0))?;
            let Some(newest) = newest else {
                return Ok(None);
            };
            let cut = {
                let mut stmt = tx.prepare(
                    "SELECT seq, json_extract(record, '$.started_at') FROM runs
                     WHERE seq > ?1 AND seq < ?2 ORDER BY seq LIMIT 256",
                )?;
                super::prune_cut(newest, keep, now, |after, newest| {
                    stmt.query_map(params![after, newest], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })?
            };
            let hash: Option<String> = tx
                .query_row("SELECT hash FROM runs WHERE seq = ?1", [cut], |r| r.get(0))
                .optional()?;
            let Some(hash) = hash else {
                return Ok(None);
            };
            let runs = tx.execute("DELETE FROM runs WHERE seq <= ?1", [cut])? as u64;
            let anchor = Anchor {
                seq: cut,
                hash,
                pruned: before_now.unwrap_or(0) + runs,
                pruned_at: super::now(),
            };
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![ANCHOR, json(&anchor)?],
            )?;
            let blobs = tx.execute(
                "DELETE FROM blobs WHERE sha256 NOT IN (
                     SELECT json_extract(record, '$.snapshot_sha256') FROM runs
                     WHERE json_extract(record, '$.snapshot_sha256') IS NOT NULL
                     UNION
                     SELECT json_extract(record, '$.steady.sha256') FROM runs
                     WHERE json_extract(record, '$.steady.sha256') IS NOT NULL
                 )",
                [],
            )? as u64;
            tx.commit()?;
            Ok(Some(Pruned {
                runs,
                blobs,
                anchor: Some(anchor),
            }))
        })?;
        match pruned {
            Some(p) => Ok(p),
            None => Ok(Pruned {
                anchor: self.anchor()?,
                ..Pruned::default()
            }),
        }
    }

    fn journal_begin(&self, entry: &JournalEntry) -> Result<(), StateError> {
        self.check_held()?;
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO journal (id, entry) VALUES (?1, ?2)",
                params![entry.id, json(entry)?],
            )
            .map(drop)
        })
    }

    fn journal_finish(&self, id: &str, outcome: &str) -> Result<(), StateError> {
        self.check_held()?;
        // One statement (SQLite's JSON functions): this runs once per finished resource.
        self.with(|c| {
            c.execute(
                "UPDATE journal SET entry = json_set(entry, '$.outcome', ?2) WHERE id = ?1",
                params![id, outcome],
            )
            .map(drop)
        })
    }

    fn journal(&self) -> Result<Vec<JournalEntry>, StateError> {
        self.records("a journal entry", "SELECT entry FROM journal ORDER BY id")
    }

    fn journal_clear(&self) -> Result<(), StateError> {
        self.check_held()?;
        self.with(|c| c.execute("DELETE FROM journal", []).map(drop))
    }

    fn salt(&self) -> Result<String, StateError> {
        if let Some(s) = self.salt.get() {
            return Ok(s.clone());
        }
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| self.err(format!("no randomness for the salt: {e}")))?;
        let fresh = hex::encode(fresh);
        self.with(|c| {
            // The first caller's salt wins; every later one reads it.
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('salt', ?1)",
                [&fresh],
            )?;
            c.query_row("SELECT value FROM meta WHERE key = 'salt'", [], |r| {
                r.get(0)
            })
        })
        .map(|s: String| self.salt.get_or_init(|| s).clone())
    }

    fn verify(&self) -> Result<Result<ChainSummary, ChainBreak>, StateError> {
        // One read transaction: a prune or an append committing meanwhile is seen whole
        // or not at all (never a pruned prefix with the old anchor, or a collected blob).
        let (rows, anchor, digests) = self.read(|tx| {
            let q = |e| self.err(e);
            let rows: Vec<compact::Row> = {
                let mut stmt = tx
                    .prepare("SELECT seq, prev_hash, hash, record FROM runs ORDER BY seq")
                    .map_err(q)?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .and_then(Iterator::collect)
                    .map_err(q)?
            };
            // What each stored blob's content hashes to (GC leaves only referenced ones).
            let digests: std::collections::HashMap<String, String> = {
                let mut stmt = tx.prepare("SELECT sha256, body FROM blobs").map_err(q)?;
                stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        crate::digest::sha256_hex(&r.get::<_, Vec<u8>>(1)?),
                    ))
                })
                .and_then(Iterator::collect)
                .map_err(q)?
            };
            Ok((rows, self.anchor_in(tx)?, digests))
        })?;
        Ok(super::verify_rows(rows, anchor.as_ref(), &digests))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, assert_break, record};
    use super::*;
    use std::sync::Arc;

    #[test]
    fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("nested/state.db");
        let open =
            move || -> Arc<dyn StateStore> { Arc::new(SqliteStore::open(&path).expect("open")) };
        conformance::run_all(&open);
    }

    /// Regression: an agent's report task and its first run opened a new state at the
    /// same moment, and one of them failed to migrate ("table lock already exists").
    #[test]
    fn a_new_state_opened_by_many_at_once_is_migrated_once() {
        for round in 0..5 {
            let dir = tempfile::tempdir().expect("tmp");
            let path = Arc::new(dir.path().join(format!("s{round}/state.db")));
            let start = Arc::new(std::sync::Barrier::new(8));
            let opened: Vec<_> = (0..8)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        SqliteStore::open(&path).map(|_| ())
                    })
                })
                .collect();
            for t in opened {
                t.join().expect("thread").expect("every opener succeeds");
            }
            let s = SqliteStore::open(&path).expect("open");
            assert!(s.runs(1).expect("runs").is_empty());
        }
    }

    #[test]
    fn tampering_is_detected_naming_the_first_bad_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.db");
        let s = SqliteStore::open(&path).expect("open");
        for outcome in ["created", "updated", "unchanged", "deleted"] {
            s.append_run(&record("apply", outcome)).expect("append");
        }
        assert_eq!(s.verify().expect("verify").map(|c| c.records), Ok(4));
        let raw = Connection::open(&path).expect("raw");

        // Edit a record's content in place.
        raw.execute(
            "UPDATE runs SET record = replace(record, '\"updated\"', '\"created\"') WHERE seq = 2",
            [],
        )
        .expect("edit");
        assert_break(s.verify().expect("verify"), ChainBreak::Edited { seq: 2 });
        raw.execute(
            "UPDATE runs SET record = replace(record, '\"created\"', '\"updated\"') WHERE seq = 2",
            [],
        )
        .expect("undo");
        // (Both resources of record 2 now say "updated" again, as appended.)
        assert_eq!(s.verify().expect("verify").map(|c| c.records), Ok(4));

        // Delete a record: the next one no longer links to its predecessor.
        raw.execute("DELETE FROM runs WHERE seq = 2", [])
            .expect("delete");
        assert_break(s.verify().expect("verify"), ChainBreak::Relinked { seq: 3 });

        // Insert a forged record, hashed correctly on its own but not linked.
        let forged = record("apply", "created");
        let prev = s.run(1).expect("run 1").hash;
        let wrong_prev = GENESIS.to_owned();
        raw.execute(
            "INSERT INTO runs (seq, prev_hash, hash, record) VALUES (2, ?1, ?2, ?3)",
            params![
                wrong_prev,
                chain_hash(&wrong_prev, 2, &forged),
                serde_json::to_string(&forged).expect("json")
            ],
        )
        .expect("insert");
        assert_ne!(prev, wrong_prev);
        assert_break(s.verify().expect("verify"), ChainBreak::Relinked { seq: 2 });
    }

    #[test]
    fn stored_content_and_the_anchor_are_covered_by_the_chain() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.db");
        let s = SqliteStore::open(&path).expect("open");
        for _ in 0..4 {
            s.append_run(&record("apply", "created")).expect("append");
        }
        let sha = s.runs(1).expect("runs")[0]
            .record
            .snapshot_sha256
            .clone()
            .expect("by digest");
        let raw = Connection::open(&path).expect("raw");
        let body: Vec<u8> = raw
            .query_row("SELECT body FROM blobs WHERE sha256 = ?1", [&sha], |r| {
                r.get(0)
            })
            .expect("blob");
        let text = String::from_utf8(body.clone()).expect("json");
        assert!(text.contains("resources: []"), "{text}");

        // The manifest every run shares, edited: the first run referring to it is named.
        let forged = text.replace("resources: []", "resources: [evil]");
        raw.execute(
            "UPDATE blobs SET body = ?1 WHERE sha256 = ?2",
            params![forged.as_bytes(), sha],
        )
        .expect("edit");
        match s.verify().expect("verify") {
            Err(ChainBreak::Blob {
                seq: 1,
                sha256,
                message,
            }) => {
                assert_eq!(sha256, sha);
                assert!(message.contains("does not match"), "{message}");
            }
            other => panic!("an edited blob: {other:?}"),
        }
        raw.execute("DELETE FROM blobs WHERE sha256 = ?1", [&sha])
            .expect("delete");
        match s.verify().expect("verify") {
            Err(ChainBreak::Blob {
                seq: 1, message, ..
            }) => {
                assert!(message.contains("missing"), "{message}")
            }
            other => panic!("a deleted blob: {other:?}"),
        }
        match s.run(2) {
            Err(StateError::Blob { seq: 2, .. }) => {}
            other => panic!("reading a run without its blob: {other:?}"),
        }
        raw.execute(
            "INSERT INTO blobs (sha256, body) VALUES (?1, ?2)",
            params![sha, body],
        )
        .expect("restore");
        assert_eq!(s.verify().expect("verify").map(|c| c.records), Ok(4));

        // Pruned to an anchor: forging the anchor, or deleting the first run left, breaks
        // the link of the first run left.
        let keep = crate::state::Retention {
            runs: Some(2),
            age: None,
        };
        s.prune(keep, std::time::SystemTime::now()).expect("prune");
        assert_eq!(s.verify().expect("verify").map(|c| c.records), Ok(2));
        let anchor: String = raw
            .query_row("SELECT value FROM meta WHERE key = 'anchor'", [], |r| {
                r.get(0)
            })
            .expect("anchor");
        let run2 = s.runs(10).expect("runs").pop().expect("run 3").prev_hash;
        raw.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'anchor'",
            [anchor.replace(&run2, GENESIS)],
        )
        .expect("forge");
        assert_break(s.verify().expect("verify"), ChainBreak::Relinked { seq: 3 });
        // An anchor claiming fewer runs pruned than were: the first run left is not the
        // one after it.
        raw.execute(
            "UPDATE meta SET value = json_set(value, '$.seq', 1) WHERE key = 'anchor'",
            [],
        )
        .expect("forge");
        assert_break(s.verify().expect("verify"), ChainBreak::Relinked { seq: 3 });
        raw.execute("UPDATE meta SET value = ?1 WHERE key = 'anchor'", [&anchor])
            .expect("restore");
        assert_eq!(s.verify().expect("verify").map(|c| c.records), Ok(2));
        raw.execute("DELETE FROM runs WHERE seq = 3", [])
            .expect("delete");
        assert_break(s.verify().expect("verify"), ChainBreak::Relinked { seq: 4 });
    }

    #[test]
    fn a_state_from_before_compaction_still_verifies_and_prunes() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.db");
        // Schema 3, with two records as they were stored then: whole.
        let mut raw = Connection::open(&path).expect("raw");
        migrations().to_version(&mut raw, 3).expect("schema 3");
        let mut prev = GENESIS.to_owned();
        for seq in 1..=2u64 {
            let mut old = record("apply", "unchanged");
            old.resources[0].changed_fields.clear();
            old.resources[0].change = None;
            let hash = chain_hash(&prev, seq, &old);
            raw.execute(
                "INSERT INTO runs (seq, prev_hash, hash, record) VALUES (?1, ?2, ?3, ?4)",
                params![seq, prev, hash, serde_json::to_string(&old).expect("json")],
            )
            .expect("old record");
            prev = hash;
        }
        let s = SqliteStore::open(&path).expect("migrates");
        assert_eq!(s.verify().expect("verify").map(|c| c.records), Ok(2));
        let whole = s.run(1).expect("run 1").record;
        assert_eq!(whole.resources.len(), 1, "read as written");
        assert!(whole.steady.is_none() && whole.snapshot_sha256.is_none());
        s.append_run(&record("apply", "unchanged")).expect("append");
        let newest = &s.runs(1).expect("runs")[0].record;
        assert!(
            newest.snapshot_sha256.is_some(),
            "new runs are stored compactly"
        );
        let keep = crate::state::Retention {
            runs: Some(1),
            age: None,
        };
        let pruned = s.prune(keep, std::time::SystemTime::now()).expect("prune");
        assert_eq!(pruned.runs, 2);
        assert_eq!(s.verify().expect("verify").map(|c| c.records), Ok(1));
    }

    #[test]
    fn pruning_by_age_walks_past_one_page_of_runs() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        // 600 runs a minute apart from 2026-12-01, then one a week later.
        let start = humantime::parse_rfc3339("2026-12-01T00:00:00Z").expect("time");
        let at = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        for i in 0..600u64 {
            let mut r = record("apply", "created");
            r.started_at = at(start + Duration::from_secs(60 * i));
            s.append_run(&r).expect("append");
        }
        let mut last = record("apply", "created");
        last.started_at = at(start + Duration::from_secs(7 * 86_400));
        s.append_run(&last).expect("append");
        // Keep a day back from a week after the start: only the last run.
        let keep = crate::state::Retention {
            runs: None,
            age: Some(Duration::from_secs(86_400)),
        };
        let now = start + Duration::from_secs(7 * 86_400);
        let pruned = s.prune(keep, now).expect("prune");
        assert_eq!(
            (pruned.runs, pruned.anchor.map(|a| a.seq)),
            (600, Some(600))
        );
        assert_eq!(s.verify().expect("verify").map(|c| c.records), Ok(1));
    }

    #[test]
    fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.db");
        SqliteStore::open(&path)
            .expect("open")
            .append_run(&record("apply", "created"))
            .expect("append");
        let again = SqliteStore::open(&path).expect("reopen");
        assert_eq!(again.runs(10).expect("runs").len(), 1);
        drop(again);
        Connection::open(&path)
            .expect("raw")
            .pragma_update(None, "user_version", 99)
            .expect("bump");
        match SqliteStore::open(&path) {
            Err(StateError::TooNew { found: 99, .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
            Ok(_) => panic!("a newer schema must be refused"),
        }
    }
}
