//! What an apply does beyond "after what it depends on": failure handlers wait for what
//! they watch without depending on its success, rolling groups change a batch at a time,
//! and transient failures are tried again.
//!
//! A rolling group's batch `b` owns its members and everything downstream of them that
//! depends on no member of a later batch (their restarts, their health checks): the
//! *unit* of batch `b`. The members of batch `b + 1` wait for the whole unit of batch `b`
//! to finish; a failed or skipped node of a unit counts against the members it descends
//! from, and once more members failed than `max_failures` allows, the rest of the group
//! is not started.

use super::report::Outcome;
use crate::plan::PlannedResource;
use crate::provider::{ErrorKind, ProviderError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// A failed attempt: what to report, and whether the provider marked it transient.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub message: String,
    pub transient: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            transient: false,
        }
    }
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure {
            transient: e.kind == ErrorKind::Transient,
            message: e.to_string(),
        }
    }
}

/// A member of a rolling group, as the apply sees it.
#[derive(Debug, Clone)]
struct Member {
    group: String,
    batch: usize,
    max_failures: usize,
}

/// The ordering an apply adds to the plan's dependencies, and the bookkeeping to decide
/// at run time whether a handler or a batch runs.
pub(super) struct Conductor {
    /// `deps[i]`: what node `i` depends on (its failure skips `i`).
    pub deps: Vec<Vec<usize>>,
    /// `after[i]`: what node `i` waits for without depending on its success.
    pub after: Vec<Vec<usize>>,
    members: Vec<Option<Member>>,
    /// Rolling groups that cannot run (they gate each other in a circle), and why.
    tangled: BTreeMap<String, String>,
    /// `blame[i]`: the members whose unit node `i` belongs to (one per group).
    blame: Vec<Vec<usize>>,
    /// Members (node indices) whose unit failed so far.
    failed_members: Mutex<BTreeSet<usize>>,
    /// Resources that failed (ran and failed) so far.
    failed: Mutex<BTreeSet<usize>>,
    /// `watches[i]`: for a failure handler, the nodes it handles.
    watches: Vec<Vec<usize>>,
}

impl Conductor {
    pub(super) fn of(rs: &[PlannedResource]) -> Arc<Conductor> {
        let index: BTreeMap<&str, usize> = rs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        let lookup = |ids: &[String]| -> Vec<usize> {
            ids.iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        };
        let watches: Vec<Vec<usize>> = rs
            .iter()
            .map(|r| lookup(&r.orchestration.on_failure_of))
            .collect();
        let all_deps: Vec<Vec<usize>> = rs.iter().map(|r| lookup(&r.depends_on)).collect();
        let deps: Vec<Vec<usize>> = all_deps
            .iter()
            .zip(&watches)
            .map(|(d, w)| d.iter().copied().filter(|x| !w.contains(x)).collect())
            .collect();
        let mut after: Vec<Vec<usize>> = watches.clone();
        let members: Vec<Option<Member>> = rs
            .iter()
            .map(|r| {
                r.orchestration.rolling.as_ref().map(|g| Member {
                    group: g.group.clone(),
                    batch: g.batch(),
                    max_failures: g.max_failures,
                })
            })
            .collect();
        let mut blame = vec![Vec::new(); rs.len()];
        if members.iter().any(Option::is_some) {
            // Per node and group: the latest batch among its member ancestors (itself
            // included) and those members. Plans are in execution order, so what a node
            // depends on comes before it; a dependency listed later (only in a damaged
            // plan) is simply not followed.
            type Top = BTreeMap<String, (usize, Vec<usize>)>;
            let mut top: Vec<Top> = vec![BTreeMap::new(); rs.len()];
            for i in 0..rs.len() {
                let mut mine: Top = BTreeMap::new();
                let mut merge = |g: &str, b: usize, ms: &[usize]| {
                    let e = mine.entry(g.to_owned()).or_insert((b, Vec::new()));
                    if b > e.0 {
                        *e = (b, Vec::new());
                    }
                    if b == e.0 {
                        e.1.extend_from_slice(ms);
                    }
                };
                for &d in all_deps[i].iter().filter(|&&d| d < i) {
                    for (g, (b, ms)) in &top[d] {
                        merge(g, *b, ms);
                    }
                }
                if let Some(m) = &members[i] {
                    merge(&m.group, m.batch, &[i]);
                }
                for (_, ms) in mine.values_mut() {
                    ms.sort_unstable();
                    ms.dedup();
                }
                top[i] = mine;
            }
            // Units: (group, batch) -> nodes.
            let mut units: BTreeMap<(&str, usize), Vec<usize>> = BTreeMap::new();
            for (i, t) in top.iter().enumerate() {
                for (g, (b, ms)) in t {
                    units.entry((g.as_str(), *b)).or_default().push(i);
                    blame[i].extend_from_slice(ms);
                }
            }
            for (i, m) in members.iter().enumerate() {
                let Some(m) = m else { continue };
                if m.batch == 0 {
                    continue;
                }
                // The nearest earlier batch that has a unit (batches are dense, but a
                // member left out by `when:` can leave a gap).
                let previous = (0..m.batch)
                    .rev()
                    .find_map(|b| units.get(&(m.group.as_str(), b)));
                if let Some(unit) = previous {
                    after[i].extend(unit.iter().copied().filter(|&u| u != i));
                }
            }
        }
        // Two rolling groups whose instances depend on each other in opposite orders
        // gate each other in a circle: nothing of them could ever start. Such groups do
        // not run (their members say why) instead of hanging the walk.
        let mut tangled = BTreeMap::new();
        let stuck = unorderable(&deps, &after);
        if !stuck.is_empty() {
            let groups: BTreeSet<String> = stuck
                .iter()
                .filter_map(|&i| members[i].as_ref().map(|m| m.group.clone()))
                .collect();
            let names: Vec<String> = groups.iter().map(|g| format!("`{g}`")).collect();
            for (i, m) in members.iter().enumerate() {
                if let Some(m) = m.as_ref().filter(|m| groups.contains(&m.group)) {
                    after[i].retain(|a| watches[i].contains(a));
                    tangled.insert(
                        m.group.clone(),
                        format!(
                            "the rolling groups {} wait for each other's batches in a circle (their instances depend on each other in different orders); give them one order, or drop `serial:` from one",
                            names.join(" and ")
                        ),
                    );
                }
            }
        }
        Arc::new(Conductor {
            deps,
            after,
            members,
            tangled,
            blame,
            failed_members: Mutex::new(BTreeSet::new()),
            failed: Mutex::new(BTreeSet::new()),
            watches,
        })
    }

    /// Record how node `i` finished: `ran_and_failed` (its provider failed it) or
    /// `unsuccessful` (failed, skipped or not started).
    pub(super) fn finished(&self, i: usize, ran_and_failed: bool, unsuccessful: bool) {
        if ran_and_failed {
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(i);
        }
        if unsuccessful && !self.blame[i].is_empty() {
            self.failed_members
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(self.blame[i].iter().copied());
        }
    }

    /// Why node `i`, a member of a rolling group, must not start (`None`: it may): more
    /// members of earlier batches failed than the group's `max_failures`.
    pub(super) fn held_back(&self, i: usize, rs: &[PlannedResource]) -> Option<String> {
        let m = self.members[i].as_ref()?;
        if let Some(why) = self.tangled.get(&m.group) {
            return Some(why.clone());
        }
        let failed = self
            .failed_members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let earlier: Vec<&str> = failed
            .iter()
            .filter(|&&f| {
                self.members[f]
                    .as_ref()
                    .is_some_and(|o| o.group == m.group && o.batch < m.batch)
            })
            .map(|&f| rs[f].id.as_str())
            .collect();
        (earlier.len() > m.max_failures).then(|| {
            format!(
                "the rolling group `{}` stopped: {} of its members failed in earlier batches ({}), more than its max_failures of {}",
                m.group,
                earlier.len(),
                earlier
                    .iter()
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                m.max_failures
            )
        })
    }

    /// For a failure handler: `Ok(())` when one of the resources it handles failed in
    /// this run, otherwise the outcome that says why it did not run. `Ok(())` for any
    /// other resource.
    pub(super) fn triggered(&self, i: usize, rs: &[PlannedResource]) -> Result<(), Outcome> {
        if rs[i].orchestration.on_failure_of.is_empty() {
            return Ok(());
        }
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if self.watches[i].iter().any(|w| failed.contains(w)) {
            return Ok(());
        }
        Err(Outcome::NotTriggered {
            reason: format!(
                "runs only if {} fails",
                rs[i]
                    .orchestration
                    .on_failure_of
                    .iter()
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        })
    }
}

/// The nodes that no order can reach when `deps` and `after` both order them (the
/// nodes on or behind a cycle); empty when everything can run.
fn unorderable(deps: &[Vec<usize>], after: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut waiting: Vec<usize> = (0..n).map(|i| deps[i].len() + after[i].len()).collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for &d in deps[i].iter().chain(&after[i]) {
            next[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut done = vec![false; n];
    while let Some(i) = ready.pop() {
        done[i] = true;
        for &j in &next[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(j);
            }
        }
    }
    (0..n).filter(|&i| !done[i]).collect()
}
