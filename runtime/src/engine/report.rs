//! What an apply reports: each resource's outcome and duration, the counts, the events
//! in the order things happen.

use crate::provider::Action;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// What happened to one resource during apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Updated,
    /// Unchanged itself, applied again because a resource that notifies it changed.
    Refreshed,
    Replaced,
    Deleted,
    Unchanged,
    /// A health gate that passed (`http.check`): not a change.
    Checked,
    /// A failure handler (`on_failure:`) whose watched resources did not fail: not run.
    NotTriggered {
        reason: String,
    },
    Failed {
        error: String,
    },
    /// Not run because a resource it depends on failed.
    Skipped {
        upstream: String,
    },
    /// Not run because the run stopped first (fail-fast or interruption); counted as
    /// skipped.
    NotStarted {
        reason: String,
    },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        !matches!(
            self,
            Outcome::Failed { .. } | Outcome::Skipped { .. } | Outcome::NotStarted { .. }
        )
    }
}

/// The result for one resource.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceResult {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
    /// The state after the change (none when absent or unknown).
    #[serde(skip)]
    pub state: Option<Value>,
    /// The failed attempts that were tried again (`retry:`), in order; empty when the
    /// first attempt settled it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<Retried>,
}

impl ResourceResult {
    /// How many times its provider was asked (1 without retries).
    pub fn attempts(&self) -> usize {
        self.retried.len() + 1
    }
}

/// One failed attempt that was tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retried {
    /// 1 for the first attempt.
    pub attempt: usize,
    pub error: String,
    /// How long it waited before the next attempt.
    pub wait_ms: u64,
}

/// A duration in milliseconds with microsecond precision, as runs report them.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(millis(*d))
}

/// The result of an apply, in plan order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub results: Vec<ResourceResult>,
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub created: usize,
    pub updated: usize,
    pub refreshed: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Resources that needed more than one attempt (`retry:`), and their attempts.
    #[serde(skip_serializing_if = "is_zero")]
    pub retried: usize,
    #[serde(skip_serializing_if = "is_zero")]
    pub attempts: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ApplyReport {
    pub fn counts(&self) -> OutcomeCounts {
        let mut c = OutcomeCounts::default();
        for r in &self.results {
            if !r.retried.is_empty() {
                c.retried += 1;
                c.attempts += r.attempts();
            }
            match r.outcome {
                Outcome::Created => c.created += 1,
                Outcome::Updated => c.updated += 1,
                Outcome::Refreshed => c.refreshed += 1,
                Outcome::Replaced => c.replaced += 1,
                Outcome::Deleted => c.deleted += 1,
                Outcome::Unchanged | Outcome::Checked | Outcome::NotTriggered { .. } => {
                    c.unchanged += 1
                }
                Outcome::Failed { .. } => c.failed += 1,
                Outcome::Skipped { .. } | Outcome::NotStarted { .. } => c.skipped += 1,
            }
        }
        c
    }

    pub fn succeeded(&self) -> bool {
        self.results.iter().all(|r| r.outcome.is_success())
    }

    /// The `n` resources that took longest to change (unchanged ones excluded).
    pub fn slowest(&self, n: usize) -> Vec<&ResourceResult> {
        let mut changed: Vec<&ResourceResult> = self
            .results
            .iter()
            .filter(|r| {
                !matches!(
                    r.outcome,
                    Outcome::Unchanged
                        | Outcome::NotTriggered { .. }
                        | Outcome::NotStarted { .. }
                        | Outcome::Skipped { .. }
                )
            })
            .collect();
        changed.sort_by(|a, b| b.duration.cmp(&a.duration).then_with(|| a.id.cmp(&b.id)));
        changed.truncate(n);
        changed
    }
}

/// Progress reported while applying, in the order things happen.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A provider call for the resource is starting.
    ResourceStarted {
        id: String,
        #[serde(rename = "type")]
        type_name: String,
        action: Action,
    },
    /// An attempt failed with an error its provider marks transient; it is tried again
    /// after `wait_ms` (`retry:`).
    ResourceRetrying {
        id: String,
        attempt: usize,
        error: String,
        wait_ms: u64,
    },
    /// The resource is done (including skipped and not started ones).
    ResourceFinished(ResourceResult),
}
