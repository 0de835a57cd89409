//! The engine: walks the resources' dependency graph concurrently and calls providers
//! through the [`Provider`] trait — `read` + `diff` to plan, `apply` / `delete` to
//! converge. Independent resources run in parallel, bounded globally (`--parallelism`) and
//! per provider (`max_concurrency`). A failed resource does not stop the run: what depends
//! on it is skipped (naming the failed upstream resource) and everything else still
//! converges, unless `fail_fast` asks to start nothing new. Knows nothing of Wasm.

//!
//! [`plan`](Engine::plan) (in `plan.rs`) reads and diffs, [`apply`](Engine::apply) (in
//! `apply.rs`) converges; `known.rs` is what finished resources offer the references of
//! others; `report.rs` is what an apply reports.

mod apply;
mod known;
mod plan;
mod report;

pub use known::KNOWN_AFTER_APPLY;
pub use report::{ApplyReport, Event, Outcome, OutcomeCounts, ResourceResult, millis};

use crate::plan::PlannedResource;
use crate::provider::Provider;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

pub use crate::graph::walk::DEFAULT_PARALLELISM;

/// A future a [`Journal`] returns: owns what it needs, so it runs inside the resource's
/// task.
pub type JournalFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Where an apply writes ahead and behind each resource (the run layer's journal and
/// state). Both are awaited inside the resource's own task — `begin` before its provider
/// is called, `finish` before anything that depends on it starts — so an intent is on
/// disk before the change, and a slow store delays that resource, never the walk's
/// scheduling of the others.
pub trait Journal: Send + Sync {
    /// `r` is about to change (or be refreshed): called only for resources with an
    /// action, a plan error or a refresh. `Err` (the intent could not be written): the
    /// provider is not called, and the resource fails with that message.
    fn begin(&self, r: &PlannedResource) -> JournalFuture<Result<(), String>>;
    /// `r` ran (whatever its outcome, unchanged included).
    fn finish(&self, planned: &PlannedResource, r: &ResourceResult) -> JournalFuture<()>;
}

/// How a run walks the graph.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most provider calls in flight at once.
    pub parallelism: usize,
    /// Most calls in flight per provider (`max_concurrency` in the manifest); providers
    /// not listed are limited by `parallelism` only.
    pub provider_limits: BTreeMap<String, usize>,
    /// Start nothing new after the first failure.
    pub fail_fast: bool,
    /// Set (e.g. on Ctrl-C) to start nothing new; calls in flight finish.
    pub cancel: Arc<AtomicBool>,
    /// Providers whose results are not re-read after apply (`consistency_check: false`
    /// in the manifest, for slow or eventually consistent APIs).
    pub unchecked_providers: BTreeSet<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            parallelism: DEFAULT_PARALLELISM,
            provider_limits: BTreeMap::new(),
            fail_fast: false,
            cancel: Arc::new(AtomicBool::new(false)),
            unchecked_providers: BTreeSet::new(),
        }
    }
}

/// A resource the state remembers that the manifest no longer declares: it is planned
/// for deletion (children before the directories that hold them) unless it carries
/// `prevent_destroy`.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub id: String,
    pub type_name: String,
    pub provider: String,
    pub kind: String,
    /// The desired properties last applied: they identify it to its provider.
    pub last_desired: Value,
    pub prevent_destroy: bool,
    /// Its sensitive properties (stored as salted hashes).
    pub sensitive: Vec<String>,
}

/// Runs plans against providers.
pub struct Engine {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

/// The walk's groups: one per provider, in name order, with its limit.
pub(super) fn groups<'a>(
    names: impl Iterator<Item = &'a str>,
    options: &RunOptions,
) -> (BTreeMap<String, usize>, Vec<usize>) {
    let mut index = BTreeMap::new();
    for n in names {
        let next = index.len();
        index.entry(n.to_owned()).or_insert(next);
    }
    let mut limits = vec![usize::MAX; index.len()];
    for (name, &g) in &index {
        if let Some(&limit) = options.provider_limits.get(name) {
            limits[g] = limit.max(1);
        }
    }
    (index, limits)
}

impl Engine {
    pub fn new(providers: BTreeMap<String, Arc<dyn Provider>>) -> Self {
        Engine { providers }
    }

    pub(super) fn provider(&self, name: &str) -> Result<Arc<dyn Provider>, String> {
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| format!("provider `{name}` is not loaded"))
    }
}

#[cfg(test)]
mod tests;
