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
mod orchestrate;
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

/// How the walk schedules nodes: each node's group (its provider) with the group's
/// limit, and the named locks each node holds.
pub(super) struct Schedule {
    pub group: Vec<usize>,
    pub group_limits: Vec<usize>,
    pub locks: Vec<Vec<usize>>,
}

impl Engine {
    /// One group per provider, in name order, limited by the operator's
    /// `max_concurrency` and the provider's own, whichever is lower; each node holds its
    /// resource's `locks` and its provider's. `nodes`: (provider, resource locks).
    pub(super) fn schedule<'a>(
        &self,
        nodes: impl Iterator<Item = (&'a str, &'a [String])>,
        options: &RunOptions,
    ) -> Schedule {
        let nodes: Vec<(&str, &[String])> = nodes.collect();
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (p, _) in &nodes {
            let next = index.len();
            index.entry(p).or_insert(next);
        }
        let mut group_limits = vec![usize::MAX; index.len()];
        for (name, &g) in &index {
            let declared = self
                .providers
                .get(*name)
                .and_then(|p| p.execution().max_concurrency);
            let operator = options.provider_limits.get(*name).copied();
            if let Some(limit) = declared.into_iter().chain(operator).min() {
                group_limits[g] = limit.max(1);
            }
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut locks = Vec::with_capacity(nodes.len());
        for (p, own) in &nodes {
            let declared = self
                .providers
                .get(*p)
                .map_or(&[][..], |p| p.execution().locks.as_slice());
            let mut held: Vec<usize> = own
                .iter()
                .chain(declared)
                .map(|l| {
                    let next = names.len();
                    *names.entry(l.as_str()).or_insert(next)
                })
                .collect();
            held.sort_unstable();
            held.dedup();
            locks.push(held);
        }
        Schedule {
            group: nodes.iter().map(|(p, _)| index[p]).collect(),
            group_limits,
            locks,
        }
    }
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
