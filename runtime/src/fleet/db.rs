//! The fleet database in PostgreSQL: its own schema (default `tenet_fleet`, chosen with
//! `?schema=` in the URL), migrated on first use under an advisory transaction lock.
//!
//! - `nodes`: enrolled nodes (name, the sha256 of their ingest token, labels).
//! - `node_status`: one row per node, the latest run (upserted per report): every
//!   status question (`fleet status`, `fleet nodes`) reads only this table.
//! - `runs`, `resource_events`: range-partitioned by day (`runs_pYYYYMMDD`), created as
//!   reports need them; retention drops whole partitions (no `DELETE`, no vacuum debt).
//!   `(node, run_seq)` is the idempotency key: a report sent twice is stored once.
//!
//! The async client (tokio-postgres) runs on the runtime with a small pool of
//! persistent connections: connecting per report costs several times the write itself.

use super::{Counts, Report};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "tenet_fleet";
/// Connections the pool keeps at most.
pub const POOL_SIZE: usize = 8;
/// How long one statement may run.
const STATEMENT_TIMEOUT_MS: u32 = 30_000; // as restored after seeding

/// The schema, one migration per version; append, never edit.
const MIGRATIONS: &[&str] = &["
CREATE TABLE nodes (
  node_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text UNIQUE NOT NULL,
  token_sha256 text UNIQUE,
  labels jsonb NOT NULL DEFAULT '{}',
  enrolled_at timestamptz NOT NULL DEFAULT now(),
  deactivated_at timestamptz);
CREATE TABLE node_status (
  node_id bigint PRIMARY KEY REFERENCES nodes ON DELETE CASCADE,
  run_seq bigint NOT NULL, command text NOT NULL,
  started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL,
  outcome text NOT NULL, last_success_at timestamptz,
  resources int NOT NULL, in_sync int NOT NULL, changed int NOT NULL,
  drifted int NOT NULL, failed int NOT NULL,
  artifact_digest text, artifact_reference text, facts jsonb NOT NULL DEFAULT '{}',
  chain_hash text NOT NULL, agent_version text NOT NULL, received_at timestamptz NOT NULL);
CREATE INDEX node_status_outcome ON node_status (outcome);
CREATE INDEX node_status_digest ON node_status (artifact_digest);
CREATE INDEX node_status_received ON node_status (received_at);
CREATE TABLE runs (
  node_id bigint NOT NULL, run_seq bigint NOT NULL,
  started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL,
  command text NOT NULL, outcome text NOT NULL,
  resources int NOT NULL, in_sync int NOT NULL, changed int NOT NULL, corrective int NOT NULL,
  drifted int NOT NULL, failed int NOT NULL,
  artifact_digest text, policy_denied text[] NOT NULL DEFAULT '{}',
  chain_hash text NOT NULL, received_at timestamptz NOT NULL,
  PRIMARY KEY (node_id, run_seq, started_at)
) PARTITION BY RANGE (started_at);
CREATE INDEX runs_failed ON runs (started_at) WHERE outcome = 'failed';
CREATE INDEX runs_digest ON runs (artifact_digest, started_at);
CREATE TABLE resource_events (
  node_id bigint NOT NULL, run_seq bigint NOT NULL, started_at timestamptz NOT NULL,
  resource_id text NOT NULL, type text NOT NULL, outcome text NOT NULL,
  corrective boolean NOT NULL, fields text NOT NULL DEFAULT '[]', error text
) PARTITION BY RANGE (started_at);
CREATE INDEX resource_events_at ON resource_events (started_at);
CREATE INDEX resource_events_node ON resource_events (node_id, run_seq);
", "
CREATE TABLE rollouts (
  rollout_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  channel text NOT NULL, plan jsonb NOT NULL, state text NOT NULL, step int NOT NULL,
  step_started_at timestamptz NOT NULL, reason text,
  started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE UNIQUE INDEX rollouts_one_per_channel ON rollouts (channel) WHERE state IN ('running', 'paused');
CREATE TABLE rollout_events (
  rollout_id bigint NOT NULL REFERENCES rollouts, at timestamptz NOT NULL DEFAULT clock_timestamp(),
  step int NOT NULL, event text NOT NULL, detail jsonb NOT NULL);
CREATE INDEX rollout_events_id ON rollout_events (rollout_id, at);
"];

/// The runs as [`RunRow`]s, for a `WHERE … ORDER BY … LIMIT` to follow.
const RUN_ROWS: &str = "SELECT n.name, r.run_seq, r.command, r.outcome, r.started_at::text,
   r.finished_at::text, r.resources, r.changed, r.corrective, r.drifted, r.failed,
   r.artifact_digest, r.policy_denied, r.chain_hash
 FROM runs r JOIN nodes n USING (node_id)";

/// The partitioned tables, each with a partition per day.
const PARTITIONED: &[&str] = &["runs", "resource_events"];

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet database {url}: {message}")]
    Db { url: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The fleet database.
pub struct FleetDb {
    pub schema: String,
    /// The URL without its password.
    pub shown: String,
    pub(super) config: tokio_postgres::Config,
    idle: Mutex<Vec<Client>>,
    permits: tokio::sync::Semaphore,
    /// Days whose partitions exist (`YYYYMMDD`).
    days: Mutex<HashSet<String>>,
    /// Reports older than this many days are not stored (their partitions are gone).
    pub keep_days: u32,
}

/// A pooled connection, back to the pool when dropped (unless it broke).
pub struct Conn<'a> {
    client: Option<Client>,
    db: &'a FleetDb,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("a pooled client")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("a pooled client")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take()
            && !c.is_closed()
            && let Ok(mut idle) = self.db.idle.lock()
        {
            idle.push(c);
        }
    }
}

/// What an ingest stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ingested {
    pub accepted: usize,
    /// Sent before (the same node and run): stored once.
    pub duplicates: usize,
    /// Older than the retention: not stored.
    pub expired: usize,
}

/// The fleet at a glance.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub nodes: i64,
    /// Nodes by the outcome of their last run (`never` for none yet).
    pub by_outcome: BTreeMap<String, i64>,
    /// Nodes whose last report is older than the staleness bound (or that never reported).
    pub not_reporting: i64,
    pub resources: i64,
    pub in_sync: i64,
    /// `in_sync / resources` over the nodes' last runs.
    pub compliance: f64,
    /// Nodes by the artifact digest they last applied (`none`: not from an artifact).
    pub by_artifact: BTreeMap<String, i64>,
}

/// A node and its last run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRow {
    pub name: String,
    pub outcome: Option<String>,
    pub run_seq: Option<i64>,
    pub finished_at: Option<String>,
    pub received_at: Option<String>,
    pub artifact_digest: Option<String>,
    pub resources: Option<i32>,
    pub in_sync: Option<i32>,
    pub drifted: Option<i32>,
    pub failed: Option<i32>,
    pub os_family: Option<String>,
    pub stale: bool,
}

/// Which nodes `nodes` lists.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub outcome: Option<String>,
    pub artifact: Option<String>,
    /// Only nodes not reporting within the staleness bound.
    pub stale_only: bool,
    pub limit: i64,
}

/// A resource that drifted on nodes of the fleet.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drifted {
    pub resource: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub nodes: i64,
    pub events: i64,
    pub last_at: String,
}

/// A run as the fleet stored it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    pub node: String,
    pub run_seq: i64,
    pub command: String,
    pub outcome: String,
    pub started_at: String,
    pub finished_at: String,
    pub resources: i32,
    pub changed: i32,
    pub corrective: i32,
    pub drifted: i32,
    pub failed: i32,
    pub artifact_digest: Option<String>,
    pub policy_denied: Vec<String>,
    pub chain_hash: String,
}

fn quote(ident: &str) -> String {
    format!("\"{ident}\"")
}

/// `YYYYMMDD` of an RFC 3339 time (UTC), and the next day's.
fn day_of(t: &str) -> Option<(String, String, String)> {
    let at = humantime::parse_rfc3339_weak(t)
        .ok()
        .or_else(|| humantime::parse_rfc3339(t).ok())?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    let day = secs / 86_400;
    let fmt = |d: u64| {
        let s = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(d * 86_400),
        )
        .to_string();
        s[..10].to_owned()
    };
    let (from, to) = (fmt(day), fmt(day + 1));
    Some((from.replace('-', ""), from, to))
}

fn seconds(d: Duration) -> String {
    format!("{} seconds", d.as_secs())
}

impl FleetDb {
    /// Connect (the schema is created and migrated on first use). `keep_days` bounds
    /// what ingest stores.
    pub async fn open(url: &str, keep_days: u32) -> Result<FleetDb, FleetError> {
        let shown = crate::state::postgres::redact(url);
        let (client_url, schema) = crate::state::postgres::split_schema(url, DEFAULT_SCHEMA)
            .map_err(|message| FleetError::Db {
                url: shown.clone(),
                message,
            })?;
        let mut config: tokio_postgres::Config =
            client_url.parse().map_err(|e| FleetError::Db {
                url: shown.clone(),
                message: format!("not a PostgreSQL URL: {e}"),
            })?;
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("tenet-fleet");
        let db = FleetDb {
            schema,
            shown,
            config,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(POOL_SIZE),
            days: Mutex::new(HashSet::new()),
            keep_days,
        };
        db.migrate().await?;
        Ok(db)
    }

    pub(super) fn err(&self, e: impl std::fmt::Display) -> FleetError {
        FleetError::Db {
            url: self.shown.clone(),
            message: e.to_string(),
        }
    }

    pub(super) fn pg(&self, e: tokio_postgres::Error) -> FleetError {
        let message = match e.as_db_error() {
            Some(d) => format!("{}: {}", d.code().code(), d.message()),
            None => {
                let mut m = e.to_string();
                if let Some(s) = std::error::Error::source(&e) {
                    m.push_str(&format!(": {s}"));
                }
                m
            }
        };
        self.err(message)
    }

    /// Serialise with every other holder of this schema's lock `what` until the
    /// transaction ends.
    async fn xact_lock(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        what: &str,
    ) -> Result<(), FleetError> {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[
                &crate::state::postgres::LOCK_NAMESPACE,
                &crate::state::postgres::lock_key(&self.schema, what),
            ],
        )
        .await
        .map_err(|e| self.pg(e))?;
        Ok(())
    }

    /// A connection from the pool (at most [`POOL_SIZE`] at once).
    pub async fn conn(&self) -> Result<Conn<'_>, FleetError> {
        let permit = self.permits.acquire().await.map_err(|e| self.err(e))?;
        let pooled = self.idle.lock().ok().and_then(|mut i| i.pop());
        let client = match pooled {
            Some(c) => c,
            None => {
                let (client, connection) =
                    self.config.connect(NoTls).await.map_err(|e| self.pg(e))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("fleet database connection ended: {e}");
                    }
                });
                client
                    .batch_execute(&format!(
                        "SET search_path TO {}; SET statement_timeout = {STATEMENT_TIMEOUT_MS}",
                        quote(&self.schema)
                    ))
                    .await
                    .map_err(|e| self.pg(e))?;
                client
            }
        };
        Ok(Conn {
            client: Some(client),
            db: self,
            _permit: permit,
        })
    }

    async fn migrate(&self) -> Result<(), FleetError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(|e| self.pg(e))?;
        self.xact_lock(&tx, "migrate").await?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
            s = quote(&self.schema)
        ))
        .await
        .map_err(|e| self.pg(e))?;
        let row = tx
            .query_one("SELECT coalesce(max(version), 0) FROM migrations", &[])
            .await
            .map_err(|e| self.pg(e))?;
        let version: i32 = row.get(0);
        let known = MIGRATIONS.len() as i32;
        if version > known {
            return Err(self.err(format!(
                "schema `{}` is at version {version}, newer than this Tenet knows ({known}): upgrade Tenet",
                self.schema
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(m).await.map_err(|e| self.pg(e))?;
            tx.execute(
                "INSERT INTO migrations (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .await
            .map_err(|e| self.pg(e))?;
        }
        tx.commit().await.map_err(|e| self.pg(e))
    }

    /// Enrol `name` (or re-enrol it: a new token, reactivated): the token it reports
    /// with, shown once; only its sha256 is stored.
    pub async fn enroll(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, FleetError> {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(FleetError::Invalid(format!(
                "`{name}` is not a node name (1–255 printable characters)"
            )));
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| self.err(format!("no randomness: {e}")))?;
        let token = format!("tnt_{}", hex::encode(raw));
        let labels = serde_json::to_string(labels).map_err(|e| self.err(e))?;
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO nodes (name, token_sha256, labels) VALUES ($1, $2, $3::text::jsonb)
             ON CONFLICT (name) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256,
               labels = EXCLUDED.labels, deactivated_at = NULL",
            &[&name, &crate::digest::sha256_hex(token.as_bytes()), &labels],
        )
        .await
        .map_err(|e| self.pg(e))?;
        Ok(token)
    }

    /// Deactivate `name`: its token stops working and it leaves the fleet's figures.
    pub async fn deactivate(&self, name: &str) -> Result<bool, FleetError> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE nodes SET deactivated_at = now(), token_sha256 = NULL WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.pg(e))?;
        Ok(n == 1)
    }

    /// The active node a token belongs to: (id, name).
    pub async fn authenticate(&self, token: &str) -> Result<Option<(i64, String)>, FleetError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT node_id, name FROM nodes WHERE token_sha256 = $1 AND deactivated_at IS NULL",
                &[&crate::digest::sha256_hex(token.as_bytes())],
            )
            .await
            .map_err(|e| self.pg(e))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// The first day kept (`YYYY-MM-DD`, UTC).
    fn oldest_kept(&self) -> String {
        let now = std::time::SystemTime::now();
        let t = now - Duration::from_secs(u64::from(self.keep_days) * 86_400);
        humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
    }

    /// Make sure the day partitions of `(YYYYMMDD, from, to)` exist.
    async fn ensure_day(&self, day: &(String, String, String)) -> Result<(), FleetError> {
        if self.days.lock().is_ok_and(|d| d.contains(&day.0)) {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(|e| self.pg(e))?;
        self.xact_lock(&tx, "partitions").await?;
        for table in PARTITIONED {
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table}_p{d} PARTITION OF {table}
                 FOR VALUES FROM ('{from} 00:00:00+00') TO ('{to} 00:00:00+00')",
                d = day.0,
                from = day.1,
                to = day.2
            ))
            .await
            .map_err(|e| self.pg(e))?;
        }
        tx.commit().await.map_err(|e| self.pg(e))?;
        if let Ok(mut d) = self.days.lock() {
            d.insert(day.0.clone());
        }
        Ok(())
    }

    /// Store `reports` of node `node_id` (already authenticated and checked): each run
    /// once, its events, and the node's latest status. One transaction per report.
    pub async fn ingest(&self, node_id: i64, reports: &[Report]) -> Result<Ingested, FleetError> {
        let mut out = Ingested::default();
        let oldest = self.oldest_kept();
        for r in reports {
            let Some(day) = day_of(&r.started_at) else {
                return Err(FleetError::Invalid(format!(
                    "run {}: `started_at` `{}` is not a time",
                    r.seq, r.started_at
                )));
            };
            if day.1 < oldest {
                out.expired += 1;
                continue;
            }
            self.ensure_day(&day).await?;
            if self.store_one(node_id, r).await? {
                out.accepted += 1;
            } else {
                out.duplicates += 1;
            }
        }
        Ok(out)
    }

    async fn store_one(&self, node_id: i64, r: &Report) -> Result<bool, FleetError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(|e| self.pg(e))?;
        let Counts {
            resources,
            in_sync,
            changed,
            corrective,
            drifted,
            failed,
        } = r.counts;
        let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let seq = r.seq as i64;
        let digest = r.artifact.as_ref().map(|a| a.digest.clone());
        let inserted = tx
            .execute(
                "INSERT INTO runs (node_id, run_seq, started_at, finished_at, command, outcome,
                   resources, in_sync, changed, corrective, drifted, failed, artifact_digest,
                   policy_denied, chain_hash, received_at)
                 VALUES ($1, $2, $3::text::timestamptz, $4::text::timestamptz, $5, $6, $7, $8,
                   $9, $10, $11, $12, $13, $14, $15, now())
                 ON CONFLICT DO NOTHING",
                &[
                    &node_id,
                    &seq,
                    &r.started_at,
                    &r.finished_at,
                    &r.command,
                    &r.outcome,
                    &n(resources),
                    &n(in_sync),
                    &n(changed),
                    &n(corrective),
                    &n(drifted),
                    &n(failed),
                    &digest,
                    &r.policy.denied,
                    &r.hash,
                ],
            )
            .await
            .map_err(|e| self.pg(e))?;
        if inserted == 0 {
            return Ok(false);
        }
        if !r.events.is_empty() {
            let ids: Vec<&str> = r.events.iter().map(|e| e.id.as_str()).collect();
            let types: Vec<&str> = r.events.iter().map(|e| e.type_name.as_str()).collect();
            let outcomes: Vec<&str> = r.events.iter().map(|e| e.outcome.as_str()).collect();
            let corrective: Vec<bool> = r.events.iter().map(|e| e.corrective).collect();
            let fields: Vec<String> = r
                .events
                .iter()
                .map(|e| serde_json::to_string(&e.fields).unwrap_or_default())
                .collect();
            let errors: Vec<Option<&str>> = r.events.iter().map(|e| e.error.as_deref()).collect();
            tx.execute(
                "INSERT INTO resource_events (node_id, run_seq, started_at, resource_id, type,
                   outcome, corrective, fields, error)
                 SELECT $1, $2, $3::text::timestamptz, * FROM
                   unnest($4::text[], $5::text[], $6::text[], $7::bool[], $8::text[], $9::text[])",
                &[
                    &node_id,
                    &seq,
                    &r.started_at,
                    &ids,
                    &types,
                    &outcomes,
                    &corrective,
                    &fields,
                    &errors,
                ],
            )
            .await
            .map_err(|e| self.pg(e))?;
        }
        let facts = serde_json::to_string(&r.facts).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "INSERT INTO node_status (node_id, run_seq, command, started_at, finished_at, outcome,
               last_success_at, resources, in_sync, changed, drifted, failed, artifact_digest,
               artifact_reference, facts, chain_hash, agent_version, received_at)
             VALUES ($1, $2, $3, $4::text::timestamptz, $5::text::timestamptz, $6,
               CASE WHEN $6 IN ('converged', 'changed', 'drifted') THEN $5::text::timestamptz END,
               $7, $8, $9, $10, $11, $12, $13, $14::text::jsonb, $15, $16, now())
             ON CONFLICT (node_id) DO UPDATE SET run_seq = EXCLUDED.run_seq,
               command = EXCLUDED.command, started_at = EXCLUDED.started_at,
               finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome,
               last_success_at = coalesce(EXCLUDED.last_success_at, node_status.last_success_at),
               resources = EXCLUDED.resources, in_sync = EXCLUDED.in_sync,
               changed = EXCLUDED.changed, drifted = EXCLUDED.drifted, failed = EXCLUDED.failed,
               artifact_digest = EXCLUDED.artifact_digest,
               artifact_reference = EXCLUDED.artifact_reference, facts = EXCLUDED.facts,
               chain_hash = EXCLUDED.chain_hash, agent_version = EXCLUDED.agent_version,
               received_at = EXCLUDED.received_at
             WHERE node_status.finished_at <= EXCLUDED.finished_at",
            &[
                &node_id,
                &seq,
                &r.command,
                &r.started_at,
                &r.finished_at,
                &r.outcome,
                &n(resources),
                &n(in_sync),
                &n(changed),
                &n(drifted),
                &n(failed),
                &digest,
                &r.artifact.as_ref().map(|a| a.reference.clone()),
                &facts,
                &r.hash,
                &r.agent_version,
            ],
        )
        .await
        .map_err(|e| self.pg(e))?;
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(true)
    }

    /// Partitions for today and the next two days; drop the whole days older than the
    /// retention. One maintainer at a time (advisory lock). Returns the tables dropped.
    pub async fn maintain(&self) -> Result<Vec<String>, FleetError> {
        for ahead in 0..3u64 {
            let t = std::time::SystemTime::now() + Duration::from_secs(ahead * 86_400);
            let s = humantime::format_rfc3339_seconds(t).to_string();
            if let Some(day) = day_of(&s) {
                self.ensure_day(&day).await?;
            }
        }
        let oldest = self.oldest_kept().replace('-', "");
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(|e| self.pg(e))?;
        self.xact_lock(&tx, "partitions").await?;
        tx.execute("SET LOCAL lock_timeout = '5s'", &[])
            .await
            .map_err(|e| self.pg(e))?;
        let rows = tx
            .query(
                "SELECT c.relname, p.relname FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid
                   JOIN pg_class p ON p.oid = i.inhparent
                   JOIN pg_namespace n ON n.oid = p.relnamespace
                 WHERE n.nspname = $1 AND p.relname = ANY($2)
                 ORDER BY 1",
                &[&self.schema, &PARTITIONED],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let mut dropped = Vec::new();
        for row in rows {
            let (part, parent): (String, String) = (row.get(0), row.get(1));
            let Some(day) = part.rsplit("_p").next() else {
                continue;
            };
            if day.len() == 8 && day < oldest.as_str() {
                tx.batch_execute(&format!(
                    "ALTER TABLE {parent} DETACH PARTITION {part}; DROP TABLE {part}"
                ))
                .await
                .map_err(|e| self.pg(e))?;
                if let Ok(mut d) = self.days.lock() {
                    d.remove(day);
                }
                dropped.push(part);
            }
        }
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(dropped)
    }

    /// The fleet at a glance, from `node_status` only.
    pub async fn status(&self, stale: Duration) -> Result<Status, FleetError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT coalesce(s.outcome, 'never'), count(*),
                   coalesce(sum(s.resources), 0)::bigint, coalesce(sum(s.in_sync), 0)::bigint,
                   count(*) FILTER (WHERE s.node_id IS NULL OR s.received_at < now() - $1::text::interval)
                 FROM nodes n LEFT JOIN node_status s USING (node_id)
                 WHERE n.deactivated_at IS NULL GROUP BY 1",
                &[&seconds(stale)],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let mut st = Status::default();
        for r in rows {
            let (outcome, n, res, sync, stale): (String, i64, i64, i64, i64) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            st.nodes += n;
            st.resources += res;
            st.in_sync += sync;
            st.not_reporting += stale;
            st.by_outcome.insert(outcome, n);
        }
        st.compliance = if st.resources > 0 {
            st.in_sync as f64 / st.resources as f64
        } else {
            1.0
        };
        let rows = c
            .query(
                "SELECT coalesce(s.artifact_digest, 'none'), count(*)
                 FROM node_status s JOIN nodes n USING (node_id)
                 WHERE n.deactivated_at IS NULL GROUP BY 1",
                &[],
            )
            .await
            .map_err(|e| self.pg(e))?;
        for r in rows {
            st.by_artifact.insert(r.get(0), r.get(1));
        }
        Ok(st)
    }

    /// Nodes and their last run, by name.
    pub async fn nodes(&self, f: &NodeFilter, stale: Duration) -> Result<Vec<NodeRow>, FleetError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT n.name, s.outcome, s.run_seq, s.finished_at::text, s.received_at::text,
                   s.artifact_digest, s.resources, s.in_sync, s.drifted, s.failed,
                   s.facts->>'os_family',
                   (s.node_id IS NULL OR s.received_at < now() - $1::text::interval)
                 FROM nodes n LEFT JOIN node_status s USING (node_id)
                 WHERE n.deactivated_at IS NULL
                   AND ($2::text IS NULL OR s.outcome = $2)
                   AND ($3::text IS NULL OR s.artifact_digest = $3)
                   AND (NOT $4 OR s.node_id IS NULL OR s.received_at < now() - $1::text::interval)
                 ORDER BY n.name LIMIT $5",
                &[
                    &seconds(stale),
                    &f.outcome,
                    &f.artifact,
                    &f.stale_only,
                    &f.limit,
                ],
            )
            .await
            .map_err(|e| self.pg(e))?;
        Ok(rows
            .into_iter()
            .map(|r| NodeRow {
                name: r.get(0),
                outcome: r.get(1),
                run_seq: r.get(2),
                finished_at: r.get(3),
                received_at: r.get(4),
                artifact_digest: r.get(5),
                resources: r.get(6),
                in_sync: r.get(7),
                drifted: r.get(8),
                failed: r.get(9),
                os_family: r.get(10),
                stale: r.get(11),
            })
            .collect())
    }

    /// The resources found drifted (or put back by a corrective change) on the most
    /// nodes within `since`.
    pub async fn drift(&self, since: Duration, limit: i64) -> Result<Vec<Drifted>, FleetError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT e.resource_id, e.type, count(DISTINCT e.node_id), count(*),
                   max(e.started_at)::text
                 FROM resource_events e JOIN nodes n USING (node_id)
                 WHERE e.started_at > now() - $1::text::interval
                   AND (e.outcome IN ('drifted', 'missing') OR e.corrective)
                   AND n.deactivated_at IS NULL
                 GROUP BY 1, 2 ORDER BY 3 DESC, 4 DESC, 1 LIMIT $2",
                &[&seconds(since), &limit],
            )
            .await
            .map_err(|e| self.pg(e))?;
        Ok(rows
            .into_iter()
            .map(|r| Drifted {
                resource: r.get(0),
                type_name: r.get(1),
                nodes: r.get(2),
                events: r.get(3),
                last_at: r.get(4),
            })
            .collect())
    }

    /// [`RUN_ROWS`]' rows.
    fn run_rows(rows: Vec<tokio_postgres::Row>) -> Vec<RunRow> {
        rows.into_iter()
            .map(|r| RunRow {
                node: r.get(0),
                run_seq: r.get(1),
                command: r.get(2),
                outcome: r.get(3),
                started_at: r.get(4),
                finished_at: r.get(5),
                resources: r.get(6),
                changed: r.get(7),
                corrective: r.get(8),
                drifted: r.get(9),
                failed: r.get(10),
                artifact_digest: r.get(11),
                policy_denied: r.get(12),
                chain_hash: r.get(13),
            })
            .collect()
    }

    /// Failed runs within `since`, newest first.
    pub async fn failures(&self, since: Duration, limit: i64) -> Result<Vec<RunRow>, FleetError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "{RUN_ROWS} WHERE r.outcome = 'failed' AND r.started_at > now() - $1::text::interval
                     ORDER BY r.started_at DESC LIMIT $2"
                ),
                &[&seconds(since), &limit],
            )
            .await
            .map_err(|e| self.pg(e))?;
        Ok(Self::run_rows(rows))
    }

    /// A node's runs, newest first.
    pub async fn runs(&self, node: &str, limit: i64) -> Result<Vec<RunRow>, FleetError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("{RUN_ROWS} WHERE n.name = $1 ORDER BY r.run_seq DESC LIMIT $2"),
                &[&node, &limit],
            )
            .await
            .map_err(|e| self.pg(e))?;
        Ok(Self::run_rows(rows))
    }
}

impl FleetDb {
    /// Generate `per_node` runs for every node over the last 30 days (1% failed, 5%
    /// changed with one event each), and each node's status from its last one — in SQL,
    /// for `tenet fleet simulate`.
    pub async fn seed(&self, per_node: u64, resources: u32) -> Result<(), FleetError> {
        let now = std::time::SystemTime::now();
        for back in 0..=31u64 {
            let t = now - Duration::from_secs(back * 86_400);
            if let Some(day) = day_of(&humantime::format_rfc3339_seconds(t).to_string()) {
                self.ensure_day(&day).await?;
            }
        }
        let c = self.conn().await?;
        c.batch_execute("SET statement_timeout = 0")
            .await
            .map_err(|e| self.pg(e))?;
        let n = per_node as i64;
        let res = i32::try_from(resources).unwrap_or(i32::MAX);
        c.execute(
            "INSERT INTO runs (node_id, run_seq, started_at, finished_at, command, outcome,
               resources, in_sync, changed, corrective, drifted, failed, chain_hash, received_at)
             SELECT node_id, g, t, t + interval '2 seconds', 'apply',
               CASE WHEN r < 0.01 THEN 'failed' WHEN r < 0.06 THEN 'changed' ELSE 'converged' END,
               $2, CASE WHEN r < 0.01 THEN $2 - 1 ELSE $2 END,
               CASE WHEN r >= 0.01 AND r < 0.06 THEN 1 ELSE 0 END,
               CASE WHEN r >= 0.01 AND r < 0.06 THEN 1 ELSE 0 END,
               0, CASE WHEN r < 0.01 THEN 1 ELSE 0 END,
               md5(node_id::text || ':' || g::text), now()
             FROM (SELECT n.node_id, g,
                     now() - interval '30 days' + (interval '30 days' * (g::float8 / $1::float8)) - interval '5 seconds' AS t,
                     random() AS r
                   FROM nodes n CROSS JOIN generate_series(1::bigint, $1::bigint) g
                   WHERE n.deactivated_at IS NULL) x",
            &[&n, &res],
        )
        .await
        .map_err(|e| self.pg(e))?;
        c.batch_execute(
            "INSERT INTO resource_events (node_id, run_seq, started_at, resource_id, type, outcome, corrective, fields, error)
             SELECT node_id, run_seq, started_at,
               CASE WHEN outcome = 'failed' THEN 'service-app' ELSE 'file-' || (run_seq % 50)::text END,
               CASE WHEN outcome = 'failed' THEN 'service.service' ELSE 'file.file' END,
               CASE WHEN outcome = 'failed' THEN 'failed' ELSE 'updated' END,
               outcome = 'changed', '[]', NULL
             FROM runs WHERE outcome <> 'converged';
             INSERT INTO node_status (node_id, run_seq, command, started_at, finished_at, outcome,
               last_success_at, resources, in_sync, changed, drifted, failed, facts, chain_hash,
               agent_version, received_at)
             SELECT DISTINCT ON (node_id) node_id, run_seq, command, started_at, finished_at, outcome,
               finished_at, resources, in_sync, changed, drifted, failed, '{}', chain_hash, 'seed', now()
             FROM runs ORDER BY node_id, run_seq DESC
             ON CONFLICT (node_id) DO NOTHING;
             ANALYZE runs; ANALYZE resource_events; ANALYZE node_status;
             SET statement_timeout = 30000;",
        )
        .await
        .map_err(|e| self.pg(e))?;
        Ok(())
    }

    /// Runs stored, bytes of the `runs` partitions (with indexes), bytes of the schema.
    pub async fn sizes(&self) -> Result<(i64, i64, i64), FleetError> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM runs),
                   (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                      JOIN pg_class p ON p.oid = i.inhparent
                      JOIN pg_namespace n ON n.oid = p.relnamespace
                     WHERE n.nspname = $1 AND p.relname = 'runs'),
                   (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind = 'r')",
                &[&self.schema],
            )
            .await
            .map_err(|e| self.pg(e))?;
        Ok((row.get(0), row.get(1), row.get(2)))
    }
}

/// A handle shared by the ingest service's connections.
pub type Shared = Arc<FleetDb>;
