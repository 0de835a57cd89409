//! Delivering a node's runs to the fleet's ingest service (`tenet agent --report URL`).
//!
//! The node's history is the outbox: nothing is queued beside it. A cursor file beside
//! the state (`STATE.reported`) holds the sequence number of the last run the service
//! acknowledged; each delivery sends the runs after it, oldest first, in batches of
//! [`super::MAX_BATCH`], and moves the cursor only past what was acknowledged. A run is
//! in the history before it is reported, so a crash, a restart or a day offline loses
//! nothing; a report sent twice (acknowledged but the cursor not yet written) is stored
//! once by the service (idempotent on node and run). Runs pruned from the history before
//! they were delivered are skipped.

use super::{MAX_BATCH, Report};
use crate::state::{StateError, StateStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where and as whom a node reports.
#[derive(Debug, Clone)]
pub struct Target {
    /// The service's base URL (`http://fleet.example:8080`).
    pub url: String,
    pub token: String,
    /// The node's name (the token's node).
    pub node: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("reporting to {url}: {message}")]
    Send { url: String, message: String },
    #[error("reporting to {url}: the service refused the reports ({status}): {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{path}: {message}")]
    Cursor { path: String, message: String },
}

/// What one delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Reports acknowledged.
    pub sent: usize,
    /// Runs still after the cursor.
    pub pending: usize,
}

/// A node's delivery: the target, an HTTP client and the cursor.
pub struct Delivery {
    pub target: Target,
    client: reqwest::Client,
    cursor: PathBuf,
}

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Delivery {
    /// A delivery for the state whose local stand-in is `state` (its cursor beside it).
    pub fn new(target: Target, state: &Path) -> Result<Delivery, DeliverError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| DeliverError::Send {
                url: target.url.clone(),
                message: e.to_string(),
            })?;
        Ok(Delivery {
            target,
            client,
            cursor: state.with_extension("reported"),
        })
    }

    /// The last run acknowledged (0: none).
    pub fn cursor(&self) -> u64 {
        std::fs::read_to_string(&self.cursor)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn set_cursor(&self, seq: u64) -> Result<(), DeliverError> {
        crate::atomic::write(&self.cursor, format!("{seq}\n").as_bytes()).map_err(|e| {
            DeliverError::Cursor {
                path: self.cursor.display().to_string(),
                message: e.to_string(),
            }
        })
    }

    /// Send every run after the cursor, oldest first, in batches; the cursor moves past
    /// each acknowledged batch. The runs are read once, as stored (a run's steady
    /// resources are a count there: what a report needs), off the runtime.
    pub async fn deliver(&self, store: Arc<dyn StateStore>) -> Result<Sent, DeliverError> {
        let mut from = self.cursor();
        let node = self.target.node.clone();
        let (reports, newest) = tokio::task::spawn_blocking(move || after(&*store, &node, from))
            .await
            .map_err(|e| DeliverError::Send {
                url: self.target.url.clone(),
                message: e.to_string(),
            })??;
        if newest < from {
            // A new state (its runs start again at 1): what it holds is all unsent.
            from = 0;
            self.set_cursor(0)?;
        }
        let mut sent = 0;
        for batch in reports.chunks(MAX_BATCH) {
            self.post(batch).await?;
            sent += batch.len();
            if let Some(last) = batch.last() {
                self.set_cursor(last.seq)?;
            }
        }
        if newest > from {
            // Runs pruned before delivery leave nothing to send: the cursor passes them.
            self.set_cursor(newest)?;
        }
        Ok(Sent { sent, pending: 0 })
    }

    /// How many runs are after the cursor.
    pub fn pending(&self, store: &dyn StateStore) -> Result<usize, DeliverError> {
        let newest = store.runs(1)?.first().map_or(0, |r| r.seq);
        Ok(newest.saturating_sub(self.cursor()) as usize)
    }

    async fn post(&self, reports: &[Report]) -> Result<(), DeliverError> {
        let url = format!("{}/v1/reports", self.target.url.trim_end_matches('/'));
        let send = |message: String| DeliverError::Send {
            url: self.target.url.clone(),
            message,
        };
        let resp = self
            .client
            .post(&url)
            .bearer_auth(&self.target.token)
            .json(reports)
            .send()
            .await
            .map_err(|e| send(crate::diag::error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        if status.is_server_error() {
            return Err(send(format!("HTTP {status}: {message}")));
        }
        Err(DeliverError::Refused {
            url: self.target.url.clone(),
            status: status.as_u16(),
            message,
        })
    }
}

/// The reports of the runs after `from` (every run when the history's newest is older
/// than `from`: a new state), oldest first, and the newest run's number.
fn after(store: &dyn StateStore, node: &str, from: u64) -> Result<(Vec<Report>, u64), StateError> {
    let newest = store.runs(1)?.first().map_or(0, |r| r.seq);
    let from = if newest < from { 0 } else { from };
    let pending = usize::try_from(newest - from).unwrap_or(usize::MAX);
    let mut runs = if pending == 0 {
        Vec::new()
    } else {
        store.runs(pending)?
    };
    runs.retain(|r| r.seq > from);
    runs.reverse();
    Ok((runs.iter().map(|r| Report::of(node, r)).collect(), newest))
}
