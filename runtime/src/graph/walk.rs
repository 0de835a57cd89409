//! The concurrent graph walk. Generic over what a visit does (the engine plans or
//! applies; tests record a trace): it starts a node once everything it depends on has
//! finished, never runs more than `parallelism` visits at once nor more than a group's
//! limit within that group (a group is a provider), and returns an outcome per node.
//!
//! A failed node's dependents are skipped, naming the failed node (when `skip_after_failure`
//! is set; planning keeps going because reads do not depend on each other's success).
//! `fail_fast` stops starting new work after the first failure, and `cancel` (Ctrl-C)
//! stops starting new work at any time; in both cases visits in flight finish and the
//! nodes never started are reported as such.
//!
//! Scheduling is O((V + E) log V): ready nodes wait in one min-heap per group, so a group
//! at its limit never makes the scheduler rescan the others' queues.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::task::JoinSet;

/// Default number of visits in flight at once (Terraform's default, too).
pub const DEFAULT_PARALLELISM: usize = 10;

/// What to walk and how.
#[derive(Debug, Clone)]
pub struct WalkSpec {
    /// `deps[i]`: the nodes node `i` depends on.
    pub deps: Vec<Vec<usize>>,
    /// `group[i]`: the group (provider) of node `i`, an index into `group_limits`.
    pub group: Vec<usize>,
    /// Most visits in flight per group.
    pub group_limits: Vec<usize>,
    /// Most visits in flight overall (at least 1).
    pub parallelism: usize,
    /// `locks[i]`: the named locks node `i` holds while it runs (indices; empty for
    /// most). Two nodes sharing a lock never run at once, whatever their groups. Empty
    /// (no entry for any node) means no locks.
    pub locks: Vec<Vec<usize>>,
    /// `after[i]`: nodes node `i` waits for without depending on their success (a failure
    /// handler waits for what it watches; a rolling batch for the one before). Empty (no
    /// entry for any node) means none.
    pub after: Vec<Vec<usize>>,
    /// Skip the dependents of a failed node.
    pub skip_after_failure: bool,
    /// Start nothing new after the first failure.
    pub fail_fast: bool,
    /// Notified by a visit with something to report before it ends (a retry): the walk
    /// calls `on_progress` with [`Progress::Woken`] at once.
    pub wake: Option<Arc<tokio::sync::Notify>>,
}

/// Why a node did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRun {
    /// A node it depends on (directly or not) failed: that node.
    UpstreamFailed(usize),
    /// Work stopped before it could start, for the first of these reasons.
    Stopped(StopReason),
}

/// Why a walk stopped starting work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A node failed and `fail_fast` was set.
    FailFast,
    /// The `cancel` flag was set.
    Cancelled,
}

/// The outcome of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visited<T> {
    /// The visit ran; `failed` says how it went.
    Ran {
        value: T,
        failed: bool,
    },
    NotRun(NotRun),
}

/// A node becoming runnable or finishing, reported while walking.
#[derive(Debug)]
pub enum Progress<'a, T> {
    Started(usize),
    Finished(usize, &'a Visited<T>),
    /// A visit in flight has news ([`WalkSpec::wake`]).
    Woken,
}

/// Walk the graph. `visit(i)` returns the future for node `i` and whether it failed;
/// it is spawned on the tokio runtime, so independent visits run in parallel.
pub async fn walk<T, F, Fut>(
    spec: &WalkSpec,
    cancel: &Arc<AtomicBool>,
    mut visit: F,
    mut on_progress: impl FnMut(Progress<'_, T>),
) -> Vec<Visited<T>>
where
    T: Send + 'static,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = (T, bool)> + Send + 'static,
{
    let n = spec.deps.len();
    let mut dependents = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = spec.deps.iter().map(Vec::len).collect();
    for (i, ds) in spec.deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    // Waiters: released when the node finishes, however it went.
    let mut waiters = vec![Vec::new(); n];
    for (i, ds) in spec.after.iter().enumerate() {
        for &d in ds {
            waiters[d].push(i);
            waiting[i] += 1;
        }
    }
    let groups = spec.group_limits.len();
    let mut ready: Vec<BinaryHeap<Reverse<usize>>> = vec![BinaryHeap::new(); groups];
    let mut running_in: Vec<usize> = vec![0; groups];
    let mut outcomes: Vec<Option<Visited<T>>> = (0..n).map(|_| None).collect();
    // For a skipped node: the failed node that blocks it.
    let mut blocked_by: Vec<Option<usize>> = vec![None; n];
    for (i, w) in waiting.iter().enumerate() {
        if *w == 0 {
            ready[spec.group[i]].push(Reverse(i));
        }
    }
    let locks_of = |i: usize| spec.locks.get(i).map_or(&[][..], Vec::as_slice);
    let lock_count = spec.locks.iter().flatten().max().map_or(0, |m| m + 1);
    let mut held = vec![false; lock_count];
    // Ready nodes waiting for a lock, by the held lock they found.
    let mut parked: Vec<Vec<usize>> = vec![Vec::new(); lock_count];
    let mut set: JoinSet<(usize, T, bool)> = JoinSet::new();
    let mut stopped: Option<StopReason> = None;
    let mut done = 0;

    // Record a finished node and release its dependents.
    macro_rules! finish {
        ($i:expr, $outcome:expr) => {{
            let i: usize = $i;
            let outcome: Visited<T> = $outcome;
            on_progress(Progress::Finished(i, &outcome));
            let failed_root = match &outcome {
                Visited::Ran { failed: true, .. } if spec.skip_after_failure => Some(i),
                Visited::NotRun(NotRun::UpstreamFailed(root)) => Some(*root),
                _ => None,
            };
            outcomes[i] = Some(outcome);
            done += 1;
            for &j in &dependents[i] {
                if let Some(root) = failed_root {
                    // The lowest-numbered failed ancestor: the same whatever order
                    // concurrent failures finish in.
                    blocked_by[j] = Some(blocked_by[j].map_or(root, |b| b.min(root)));
                }
                waiting[j] -= 1;
                if waiting[j] == 0 {
                    ready[spec.group[j]].push(Reverse(j));
                }
            }
            for &j in &waiters[i] {
                waiting[j] -= 1;
                if waiting[j] == 0 {
                    ready[spec.group[j]].push(Reverse(j));
                }
            }
        }};
    }

    while done < n {
        if stopped.is_none() && cancel.load(Ordering::Relaxed) {
            stopped = Some(StopReason::Cancelled);
        }
        // Start (or settle) everything that may start now.
        loop {
            let pick = (0..groups)
                .filter(|&g| !ready[g].is_empty())
                .filter(|&g| {
                    // Nodes that will not run need no capacity.
                    let Some(Reverse(next)) = ready[g].peek() else {
                        return false;
                    };
                    stopped.is_some()
                        || blocked_by[*next].is_some()
                        || (running_in[g] < spec.group_limits[g].max(1)
                            && set.len() < spec.parallelism.max(1))
                })
                .min_by_key(|&g| ready[g].peek().map(|r| r.0));
            let Some(g) = pick else { break };
            let Some(Reverse(i)) = ready[g].pop() else {
                break;
            };
            if let Some(root) = blocked_by[i] {
                finish!(i, Visited::NotRun(NotRun::UpstreamFailed(root)));
                continue;
            }
            if let Some(reason) = stopped {
                finish!(i, Visited::NotRun(NotRun::Stopped(reason)));
                continue;
            }
            if let Some(&l) = locks_of(i).iter().find(|&&l| held[l]) {
                parked[l].push(i);
                continue;
            }
            for &l in locks_of(i) {
                held[l] = true;
            }
            on_progress(Progress::Started(i));
            running_in[g] += 1;
            let fut = visit(i);
            set.spawn(async move {
                let (value, failed) = fut.await;
                (i, value, failed)
            });
        }
        if done >= n {
            break;
        }
        let next = match &spec.wake {
            Some(wake) if !set.is_empty() => tokio::select! {
                joined = set.join_next() => joined,
                () = wake.notified() => {
                    on_progress(Progress::Woken);
                    continue;
                }
            },
            _ => set.join_next().await,
        };
        let Some(joined) = next else {
            // Nothing in flight and nothing startable: only possible with a cycle,
            // which graph validation rules out. The rest is reported as not run below.
            break;
        };
        match joined {
            Ok((i, value, failed)) => {
                running_in[spec.group[i]] -= 1;
                for &l in locks_of(i) {
                    held[l] = false;
                    for j in parked[l].drain(..) {
                        ready[spec.group[j]].push(Reverse(j));
                    }
                }
                if failed && spec.fail_fast && stopped.is_none() {
                    stopped = Some(StopReason::FailFast);
                }
                finish!(i, Visited::Ran { value, failed });
            }
            Err(e) => {
                // A visit panicked: a bug in the visitor, not in a provider. Surface it.
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Visited::NotRun(NotRun::Stopped(StopReason::Cancelled))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ev {
        Start(usize),
        End(usize),
    }

    struct Trace {
        events: Mutex<Vec<Ev>>,
        running: Mutex<(usize, Vec<usize>)>,
        max_total: Mutex<usize>,
        max_group: Mutex<Vec<usize>>,
    }

    fn spec(
        deps: Vec<Vec<usize>>,
        group: Vec<usize>,
        limits: Vec<usize>,
        parallelism: usize,
    ) -> WalkSpec {
        WalkSpec {
            deps,
            group,
            group_limits: limits,
            parallelism,
            locks: Vec::new(),
            after: Vec::new(),
            skip_after_failure: true,
            fail_fast: false,
            wake: None,
        }
    }

    /// Walk with visits that sleep a little, record start/end and concurrency, and fail
    /// for the nodes in `fail`.
    async fn run(
        spec: &WalkSpec,
        fail: &[usize],
        cancel_after: Option<usize>,
    ) -> (Vec<Visited<()>>, Vec<Ev>, usize, Vec<usize>) {
        let groups = spec.group_limits.len();
        let trace = Arc::new(Trace {
            events: Mutex::new(Vec::new()),
            running: Mutex::new((0, vec![0; groups])),
            max_total: Mutex::new(0),
            max_group: Mutex::new(vec![0; groups]),
        });
        let cancel = Arc::new(AtomicBool::new(false));
        let fail: Vec<usize> = fail.to_vec();
        let group = spec.group.clone();
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let out = walk(
            spec,
            &cancel,
            |i| {
                let trace = trace.clone();
                let fails = fail.contains(&i);
                let g = group[i];
                let cancel = cancel.clone();
                let started = started.clone();
                async move {
                    {
                        let mut r = trace.running.lock().expect("lock");
                        r.0 += 1;
                        r.1[g] += 1;
                        let mut mt = trace.max_total.lock().expect("lock");
                        *mt = (*mt).max(r.0);
                        let mut mg = trace.max_group.lock().expect("lock");
                        mg[g] = mg[g].max(r.1[g]);
                        trace.events.lock().expect("lock").push(Ev::Start(i));
                    }
                    if let Some(limit) = cancel_after
                        && started.fetch_add(1, Ordering::SeqCst) + 1 >= limit
                    {
                        cancel.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(2 + (i as u64 * 7) % 5)).await;
                    {
                        let mut r = trace.running.lock().expect("lock");
                        r.0 -= 1;
                        r.1[g] -= 1;
                        trace.events.lock().expect("lock").push(Ev::End(i));
                    }
                    ((), fails)
                }
            },
            |_| {},
        )
        .await;
        let events = trace.events.lock().expect("lock").clone();
        let max_total = *trace.max_total.lock().expect("lock");
        let max_group = trace.max_group.lock().expect("lock").clone();
        (out, events, max_total, max_group)
    }

    /// A layered DAG: 6 layers of 20 nodes, each depending on 3 nodes of the layer above.
    fn layered() -> Vec<Vec<usize>> {
        (0..120)
            .map(|i| {
                if i < 20 {
                    vec![]
                } else {
                    let base = (i / 20 - 1) * 20;
                    vec![base + i % 20, base + (i * 7) % 20, base + (i * 13) % 20]
                }
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_dependent_starts_before_its_dependencies_finish() {
        let deps = layered();
        let s = spec(deps.clone(), vec![0; 120], vec![usize::MAX], 8);
        let (out, events, max_total, _) = run(&s, &[], None).await;
        assert!(
            out.iter()
                .all(|o| matches!(o, Visited::Ran { failed: false, .. }))
        );
        let pos = |e: Ev| events.iter().position(|x| *x == e).expect("event");
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                assert!(
                    pos(Ev::End(d)) < pos(Ev::Start(i)),
                    "{i} started before {d} ended"
                );
            }
        }
        assert!(max_total > 1, "independent nodes must run concurrently");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn global_and_group_limits_are_never_exceeded() {
        let group: Vec<usize> = (0..120).map(|i| i % 3).collect();
        let s = spec(layered(), group, vec![1, 2, 10], 4);
        let (_, _, max_total, max_group) = run(&s, &[], None).await;
        assert!(max_total <= 4, "global limit exceeded: {max_total}");
        assert_eq!(max_group[0], 1, "group 0 limited to 1");
        assert!(max_group[1] <= 2, "group 1 limited to 2: {}", max_group[1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_sharing_a_lock_never_overlap_across_groups() {
        // Issue 14: an `exec` resource running apt and the apt provider both take
        // `dpkg`. Nodes 0..40 in three groups with no group limit; every third node
        // takes lock 0, every fifth lock 1 (some take both).
        let group: Vec<usize> = (0..40).map(|i| i % 3).collect();
        let mut s = spec(vec![vec![]; 40], group, vec![usize::MAX; 3], 16);
        s.locks = (0..40)
            .map(|i| {
                let mut l = Vec::new();
                if i % 3 == 0 {
                    l.push(0);
                }
                if i % 5 == 0 {
                    l.push(1);
                }
                l
            })
            .collect();
        let (out, events, max_total, _) = run(&s, &[], None).await;
        assert!(
            out.iter()
                .all(|o| matches!(o, Visited::Ran { failed: false, .. }))
        );
        assert!(max_total > 2, "unlocked nodes still run in parallel");
        for lock in 0..2 {
            let mut inside = 0;
            for e in &events {
                let (Ev::Start(i) | Ev::End(i)) = *e;
                if !s.locks[i].contains(&lock) {
                    continue;
                }
                match e {
                    Ev::Start(_) => inside += 1,
                    Ev::End(_) => inside -= 1,
                }
                assert!(
                    inside <= 1,
                    "two holders of lock {lock} at once: {events:?}"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_skip_only_what_depends_on_them() {
        // 0 -> 1 -> 2, 3 independent, 4 depends on 1 and 3.
        let deps = vec![vec![], vec![0], vec![1], vec![], vec![1, 3]];
        let s = spec(deps, vec![0; 5], vec![10], 10);
        let (out, _, _, _) = run(&s, &[0], None).await;
        assert!(matches!(out[0], Visited::Ran { failed: true, .. }));
        assert_eq!(out[1], Visited::NotRun(NotRun::UpstreamFailed(0)));
        assert_eq!(out[2], Visited::NotRun(NotRun::UpstreamFailed(0)));
        assert!(matches!(out[3], Visited::Ran { failed: false, .. }));
        assert_eq!(out[4], Visited::NotRun(NotRun::UpstreamFailed(0)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_run_after_a_failure_and_in_order() {
        // 1 waits for 0 (which fails) without depending on it; 2 depends on 1.
        let mut s = spec(vec![vec![], vec![], vec![1]], vec![0; 3], vec![10], 10);
        s.after = vec![vec![], vec![0], vec![]];
        let (out, events, _, _) = run(&s, &[0], None).await;
        assert!(matches!(out[0], Visited::Ran { failed: true, .. }));
        assert!(matches!(out[1], Visited::Ran { failed: false, .. }));
        assert!(matches!(out[2], Visited::Ran { failed: false, .. }));
        let pos = |e: Ev| events.iter().position(|x| *x == e).expect("event");
        assert!(pos(Ev::End(0)) < pos(Ev::Start(1)), "{events:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_fast_stops_starting_new_work() {
        // A chain behind a failing first node, plus independent nodes that would start later.
        let deps: Vec<Vec<usize>> = (0..30)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let mut s = spec(deps, vec![0; 30], vec![1], 1);
        s.fail_fast = true;
        s.skip_after_failure = true;
        let (out, events, _, _) = run(&s, &[0], None).await;
        assert_eq!(events, vec![Ev::Start(0), Ev::End(0)]);
        assert!(out[1..].iter().all(|o| matches!(o, Visited::NotRun(_))));

        // Independent nodes: after the failure nothing new starts.
        let mut s = spec(vec![vec![]; 20], vec![0; 20], vec![1], 1);
        s.fail_fast = true;
        let (out, events, _, _) = run(&s, &[3], None).await;
        assert_eq!(events.last(), Some(&Ev::End(3)));
        assert!(
            out[4..]
                .iter()
                .all(|o| *o == Visited::NotRun(NotRun::Stopped(StopReason::FailFast)))
        );
        assert!(
            out[..3]
                .iter()
                .all(|o| matches!(o, Visited::Ran { failed: false, .. }))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancellation_lets_running_visits_finish_and_starts_nothing_more() {
        let s = spec(vec![vec![]; 50], vec![0; 50], vec![10], 3);
        let (out, events, _, _) = run(&s, &[], Some(5)).await;
        let starts = events.iter().filter(|e| matches!(e, Ev::Start(_))).count();
        let ends = events.iter().filter(|e| matches!(e, Ev::End(_))).count();
        assert_eq!(starts, ends, "every started visit finished");
        assert!(
            starts < 10,
            "work stopped soon after cancellation: {starts} started"
        );
        let not_run = out
            .iter()
            .filter(|o| **o == Visited::NotRun(NotRun::Stopped(StopReason::Cancelled)))
            .count();
        assert_eq!(not_run, 50 - starts);
    }
}
