//! The engine against the in-memory mock provider.

use super::*;
use crate::graph::Graph;
use crate::manifest::{self, LoadOptions, Manifest};
use crate::plan::{Plan, PlannedResource};
use crate::provider::Action;
use crate::provider::Operation;
use crate::provider::mock::MockProvider;
use std::sync::Mutex;

fn manifest(dir: &tempfile::TempDir, body: &str) -> (Manifest, Graph) {
    let path = dir.path().join("m.yaml");
    std::fs::write(
        &path,
        format!("providers:\n  mock: {{}}\nresources:\n{body}"),
    )
    .expect("write");
    let (m, diags) = manifest::load(&path, &LoadOptions::default());
    assert!(diags.is_empty(), "{diags}");
    let g = Graph::of(&m.resources).expect("valid graph");
    (m, g)
}

fn engine(mock: &Arc<MockProvider>) -> Engine {
    let p: Arc<dyn Provider> = mock.clone();
    Engine::new(BTreeMap::from([("mock".to_owned(), p)]))
}

const THREE: &str = r"  - {id: c, type: mock.item, properties: {name: c, value: 3}, depends_on: [b]}
  - {id: a, type: mock.item, properties: {name: a, value: 1}}
  - {id: b, type: mock.item, properties: {name: b, value: 2}, depends_on: [a]}
  - {id: z, type: mock.item, properties: {name: z, value: 9}}
";

fn outcomes(report: &ApplyReport) -> BTreeMap<&str, Outcome> {
    report
        .results
        .iter()
        .map(|r| (r.id.as_str(), r.outcome.clone()))
        .collect()
}

/// Plan THREE against a fresh mock; `fail` lists resources whose apply fails.
/// A manifest of mock resources, its graph, a fresh mock (whose apply fails for the
/// ids in `fail`), an engine on it, and the first plan.
struct Setup {
    manifest: Manifest,
    graph: Graph,
    mock: Arc<MockProvider>,
    engine: Engine,
    plan: Plan,
}

impl Setup {
    async fn new(dir: &tempfile::TempDir, body: &str, fail: &[&str]) -> Setup {
        let (manifest, graph) = manifest(dir, body);
        let mock = Arc::new(MockProvider::new());
        if let Ok(mut f) = mock.fail_apply.lock() {
            f.extend(fail.iter().map(|s| (*s).to_owned()));
        }
        let engine = engine(&mock);
        let plan = engine
            .plan(&manifest, &graph, BTreeMap::new(), &RunOptions::default())
            .await;
        Setup {
            manifest,
            graph,
            mock,
            engine,
            plan,
        }
    }

    /// Make the next `n` applies of `id` fail with a transient error.
    fn transient(&self, id: &str, n: u32) {
        self.mock
            .transient_apply
            .lock()
            .expect("lock")
            .insert(id.into(), n);
    }

    async fn replan(&self) -> Plan {
        self.engine
            .plan(
                &self.manifest,
                &self.graph,
                BTreeMap::new(),
                &RunOptions::default(),
            )
            .await
    }
}

async fn planned(dir: &tempfile::TempDir, fail: &[&str]) -> (Arc<MockProvider>, Engine, Plan) {
    let s = Setup::new(dir, THREE, fail).await;
    (s.mock, s.engine, s.plan)
}

#[tokio::test]
async fn applies_in_dependency_order_and_converges() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Setup::new(&dir, THREE, &[]).await;
    let (mock, e, plan) = (&s.mock, &s.engine, s.plan.clone());
    assert_eq!(plan.summary.create, 4);
    let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
    assert!(report.succeeded());
    let applies: Vec<String> = mock.calls_of(Operation::Apply);
    let pos = |id: &str| applies.iter().position(|a| a == id).expect("applied");
    assert!(pos("a") < pos("b") && pos("b") < pos("c"), "{applies:?}");
    assert_eq!(applies.len(), 4);

    let again = s.replan().await;
    assert!(
        !again.has_changes(),
        "second plan must be empty: {:?}",
        again.summary
    );
    assert_eq!(again.summary.unchanged, 4);
}

/// Records begin/finish in order; refuses the intent of the ids in `refuse`.
struct Recording {
    log: Arc<Mutex<Vec<String>>>,
    refuse: Vec<&'static str>,
}

impl Journal for Recording {
    fn begin(&self, r: &PlannedResource) -> JournalFuture<Result<(), String>> {
        let (log, id) = (self.log.clone(), r.id.clone());
        let refused = self.refuse.contains(&id.as_str());
        Box::pin(async move {
            log.lock().expect("log").push(format!("begin {id}"));
            if refused {
                Err("the journal is full".into())
            } else {
                Ok(())
            }
        })
    }

    fn finish(&self, _planned: &PlannedResource, r: &ResourceResult) -> JournalFuture<()> {
        let (log, id) = (self.log.clone(), r.id.clone());
        Box::pin(async move { log.lock().expect("log").push(format!("finish {id}")) })
    }
}

#[tokio::test]
async fn the_journal_is_written_around_each_change_and_a_refused_intent_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mock, e, plan) = planned(&dir, &[]).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let journal = Arc::new(Recording {
        log: log.clone(),
        refuse: vec!["b"],
    });
    let report = e
        .apply_journaled(&plan, &RunOptions::default(), Some(journal), &mut |_| {})
        .await;
    let by_id = outcomes(&report);
    // b's intent could not be written: its provider was never called, and c (which
    // depends on it) was skipped.
    assert!(
        matches!(&by_id["b"], Outcome::Failed { error } if error == "the journal is full"),
        "{by_id:?}"
    );
    assert_eq!(
        by_id["c"],
        Outcome::Skipped {
            upstream: "b".into()
        }
    );
    let applied = mock.calls_of(Operation::Apply);
    assert!(!applied.contains(&"b".to_owned()), "{applied:?}");
    let log = log.lock().expect("log").clone();
    let at = |x: &str| log.iter().position(|l| l == x).unwrap_or(usize::MAX);
    // Each intent before its finish, a's finish before b (its dependent) begins;
    // a skipped resource is neither begun nor finished.
    assert!(
        at("begin a") < at("finish a") && at("finish a") < at("begin b"),
        "{log:?}"
    );
    assert!(
        at("finish b") < usize::MAX && at("begin c") == usize::MAX,
        "{log:?}"
    );
}

#[tokio::test]
async fn failure_skips_dependents_and_spares_the_rest() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_mock, e, plan) = planned(&dir, &["a"]).await;
    let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
    let by_id = outcomes(&report);
    assert!(matches!(by_id["a"], Outcome::Failed { .. }));
    assert_eq!(
        by_id["b"],
        Outcome::Skipped {
            upstream: "a".into()
        }
    );
    assert_eq!(
        by_id["c"],
        Outcome::Skipped {
            upstream: "a".into()
        }
    );
    assert_eq!(by_id["z"], Outcome::Created);
    assert!(!report.succeeded());
    let c = report.counts();
    assert_eq!((c.failed, c.skipped, c.created), (1, 2, 1));
}

#[tokio::test]
async fn a_resource_that_could_not_be_planned_fails_and_blocks_only_its_dependents() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_mock, e, mut plan) = planned(&dir, &[]).await;
    let b = plan.resources.iter_mut().find(|r| r.id == "b").expect("b");
    b.error = Some("read failed".into());
    b.action = Action::None;
    let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
    let by_id = outcomes(&report);
    assert_eq!(
        by_id["b"],
        Outcome::Failed {
            error: "could not be planned: read failed".into()
        }
    );
    assert_eq!(
        by_id["c"],
        Outcome::Skipped {
            upstream: "b".into()
        }
    );
    assert_eq!(
        (&by_id["a"], &by_id["z"]),
        (&Outcome::Created, &Outcome::Created)
    );
}

#[tokio::test]
async fn references_resolve_from_desired_values_and_after_apply() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Setup::new(&dir, "  - {id: a, type: mock.item, properties: {name: a, value: 1}}\n  - {id: b, type: mock.item, properties: {name: b, value: '${resources.a.value}/${resources.a.serial}'}}\n  - {id: c, type: mock.item, properties: {name: c, value: '${resources.a.value}'}}\n", &[]).await;
    let (mock, e, plan) = (&s.mock, &s.engine, s.plan.clone());
    let b = plan.resources.iter().find(|r| r.id == "b").expect("b");
    assert_eq!(b.unknown, vec!["/value".to_owned()]);
    assert_eq!(b.action, Action::Create);
    assert_eq!(
        b.changes[0].after,
        Some(serde_json::json!(KNOWN_AFTER_APPLY))
    );
    let c = plan.resources.iter().find(|r| r.id == "c").expect("c");
    assert!(c.unknown.is_empty());
    assert_eq!(
        c.desired["value"], 1,
        "a desired value is known at plan time, typed"
    );
    assert_eq!(b.depends_on, vec!["a".to_owned()]);

    let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
    assert!(report.succeeded(), "{:?}", report.results);
    let state = mock.state.lock().expect("state").clone();
    let serial = state["a"]["serial"].as_str().expect("serial").to_owned();
    assert_eq!(state["b"]["value"], format!("1/{serial}"));

    // Converged: a's serial is now observed, so b plans with everything known.
    let again = s.replan().await;
    assert!(!again.has_changes(), "{:?}", again.resources);
}

#[tokio::test]
async fn references_chain_through_values_known_after_apply() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Setup::new(&dir, "  - {id: a, type: mock.item, properties: {name: a, value: 1}}\n  - {id: b, type: mock.item, properties: {name: b, value: '${resources.a.serial}'}}\n  - {id: c, type: mock.item, properties: {name: c, value: 'via ${resources.b.value}, not $${resources.b.value}'}}\n", &[]).await;
    let (mock, e, plan) = (&s.mock, &s.engine, s.plan.clone());
    let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
    assert!(report.succeeded(), "{:?}", report.results);
    let state = mock.state.lock().expect("state").clone();
    let serial = state["a"]["serial"].as_str().expect("serial").to_owned();
    assert_eq!(state["b"]["value"], serial);
    assert_eq!(
        state["c"]["value"],
        format!("via {serial}, not ${{resources.b.value}}"),
        "an escaped reference reaches the provider as literal text"
    );
}

#[tokio::test]
async fn a_change_refreshes_the_resources_it_notifies_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = |config: u32| {
        format!(
            "  - {{id: restart, type: mock.item, properties: {{name: restart, value: 0}}, notify: [chain]}}\n\
                 \x20 - {{id: chain, type: mock.item, properties: {{name: chain, value: 0}}}}\n\
                 \x20 - {{id: config, type: mock.item, properties: {{name: config, value: {config}}}, notify: [restart]}}\n\
                 \x20 - {{id: quiet, type: mock.item, properties: {{name: quiet, value: 5}}, notify: [other]}}\n\
                 \x20 - {{id: other, type: mock.item, properties: {{name: other, value: 7}}}}\n"
        )
    };
    let mock = Arc::new(MockProvider::new());
    let e = engine(&mock);
    let run = |config: u32| {
        let (m, g) = manifest(&dir, &body(config));
        let e = &e;
        async move {
            e.plan(&m, &g, BTreeMap::new(), &RunOptions::default())
                .await
        }
    };
    // First run: everything is created; a created resource is not refreshed as well.
    let plan = run(1).await;
    // The notifier runs first, whatever the manifest order.
    let order: Vec<&str> = plan.resources.iter().map(|r| r.id.as_str()).collect();
    assert!(
        order.iter().position(|id| *id == "config") < order.iter().position(|id| *id == "restart"),
        "{order:?}"
    );
    let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
    assert!(outcomes(&report).values().all(|o| *o == Outcome::Created));

    // Change `config` only: `restart` is planned as a refresh, `other` is not.
    let plan = run(2).await;
    let by_id: BTreeMap<&str, &PlannedResource> =
        plan.resources.iter().map(|r| (r.id.as_str(), r)).collect();
    assert!(by_id["restart"].refresh && by_id["restart"].action == Action::None);
    assert_eq!(by_id["restart"].notified_by, vec!["config".to_owned()]);
    assert!(!by_id["other"].refresh);
    // Notifications chain: `restart` is refreshed, so `chain` is too.
    assert!(by_id["chain"].refresh);
    assert_eq!(plan.summary.refresh, 2);
    assert!(plan.has_changes());
    mock.calls.lock().expect("lock").clear();
    let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
    let by_id = outcomes(&report);
    assert_eq!(by_id["config"], Outcome::Updated);
    assert_eq!(by_id["restart"], Outcome::Refreshed);
    assert_eq!(by_id["chain"], Outcome::Refreshed);
    assert_eq!(by_id["other"], Outcome::Unchanged);
    let applied: Vec<String> = mock.calls_of(Operation::Apply);
    assert_eq!(
        applied,
        vec![
            "config".to_owned(),
            "restart".to_owned(),
            "chain".to_owned()
        ]
    );

    // Converged: nothing changes, nothing is refreshed.
    let plan = run(2).await;
    assert!(!plan.has_changes(), "{:?}", plan.summary);

    // A notifier whose change fails refreshes nothing: the listener is skipped.
    mock.fail_apply
        .lock()
        .expect("lock")
        .insert("config".into());
    let plan = run(3).await;
    let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
    let by_id = outcomes(&report);
    assert!(matches!(by_id["config"], Outcome::Failed { .. }));
    assert_eq!(
        by_id["restart"],
        Outcome::Skipped {
            upstream: "config".into()
        }
    );
}

#[tokio::test]
async fn an_inconsistent_apply_result_fails_the_resource_unless_unchecked() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mock, e, plan) = planned(&dir, &[]).await;
    mock.inconsistent.lock().expect("lock").insert("z".into());
    let report = e.apply(&plan, &RunOptions::default(), &mut |_| {}).await;
    let by_id = outcomes(&report);
    assert_eq!(
            by_id["z"],
            Outcome::Failed {
                error: "provider `mock` produced an inconsistent result for resource `z`: a fresh read after apply differs in /ghost (set `consistency_check: false` on the provider for eventually consistent APIs)".into()
            }
        );
    assert_eq!(by_id["a"], Outcome::Created);

    let (mock, e, plan) = planned(&dir, &[]).await;
    mock.inconsistent.lock().expect("lock").insert("z".into());
    let options = RunOptions {
        unchecked_providers: BTreeSet::from(["mock".to_owned()]),
        ..RunOptions::default()
    };
    let report = e.apply(&plan, &options, &mut |_| {}).await;
    assert!(report.succeeded(), "checks off: {:?}", report.results);
}

#[tokio::test]
async fn cancellation_starts_nothing_new_and_reports_what_was_not_done() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_mock, e, plan) = planned(&dir, &[]).await;
    let options = RunOptions::default();
    options
        .cancel
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let report = e.apply(&plan, &options, &mut |_| {}).await;
    assert!(!report.succeeded());
    assert_eq!(report.counts().skipped, 4);
    assert!(report.results.iter().all(|r| r.outcome
        == Outcome::NotStarted {
            reason: "the run was interrupted".into()
        }));
}

#[tokio::test]
async fn fail_fast_leaves_later_work_not_started() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_mock, e, plan) = planned(&dir, &["a"]).await;
    let options = RunOptions {
        parallelism: 1,
        fail_fast: true,
        ..RunOptions::default()
    };
    let report = e.apply(&plan, &options, &mut |_| {}).await;
    let by_id = outcomes(&report);
    assert!(matches!(by_id["a"], Outcome::Failed { .. }));
    assert_eq!(
        by_id["b"],
        Outcome::Skipped {
            upstream: "a".into()
        }
    );
    assert!(
        matches!(by_id["z"], Outcome::NotStarted { .. }),
        "{:?}",
        by_id["z"]
    );
}

#[tokio::test]
async fn saved_plan_goes_stale_when_the_system_moves() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Setup::new(&dir, THREE, &[]).await;
    assert!(crate::plan::check_saved(&s.plan, &s.replan().await).is_empty());
    s.mock
        .state
        .lock()
        .expect("state")
        .insert("z".into(), serde_json::json!({"name": "z", "value": 0}));
    let found = crate::plan::check_saved(&s.plan, &s.replan().await);
    assert!(
        matches!(&found[..], [crate::plan::Mismatch::Stale { id, .. }] if id == "z"),
        "{found:?}"
    );
}

/// Issue 14: resources of a kind the provider reads in batches are read in one
/// `read_many` call (not one `read` each); a resource whose properties reference another
/// is still read on its own, once that one is planned; the plan is the same either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_kinds_are_read_in_one_call_and_plan_the_same() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = "  - {id: a, type: mock.item, properties: {name: a, value: 1}}
  - {id: b, type: mock.item, properties: {name: b, value: 2}}
  - {id: c, type: mock.item, properties: {name: c, value: 3}}
  - {id: d, type: mock.item, properties: {name: d, value: '${resources.a.value}'}}
";
    let (m, g) = manifest(&dir, body);
    let plain = Arc::new(MockProvider::new());
    let batched = Arc::new(
        MockProvider::new().with_execution(crate::provider::Execution {
            batched_kinds: ["item".to_owned()].into(),
            ..Default::default()
        }),
    );
    for mock in [&plain, &batched] {
        if let Ok(mut s) = mock.state.lock() {
            s.insert("b".into(), serde_json::json!({"name": "b", "value": 2}));
        }
    }
    let opts = RunOptions::default();
    let p1 = engine(&plain).plan(&m, &g, BTreeMap::new(), &opts).await;
    let p2 = engine(&batched).plan(&m, &g, BTreeMap::new(), &opts).await;
    assert_eq!(p1.resources, p2.resources, "batched reads change no plan");
    assert_eq!(
        *batched.batches.lock().expect("lock"),
        vec![vec!["a".to_owned(), "b".into(), "c".into()]]
    );
    assert_eq!(batched.calls_of(Operation::Read), vec!["d".to_owned()]);
    assert_eq!(plain.calls_of(Operation::Read).len(), 4);
    assert!(plain.batches.lock().expect("lock").is_empty());
}

/// Issue 14: a provider's own `max_concurrency` holds below the operator's setting, and
/// a lock it declares keeps its resources apart from a resource of another provider
/// that names the same lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_limits_and_locks_shape_the_schedule() {
    let serial = Arc::new(
        MockProvider::new().with_execution(crate::provider::Execution {
            max_concurrency: Some(1),
            locks: vec!["dpkg".into()],
            ..Default::default()
        }),
    );
    let other = Arc::new(MockProvider::new());
    let (p1, p2): (Arc<dyn Provider>, Arc<dyn Provider>) = (serial.clone(), other.clone());
    let engine = Engine::new(BTreeMap::from([
        ("apt".to_owned(), p1),
        ("exec".to_owned(), p2),
    ]));
    let locks = [vec!["dpkg".to_owned()], vec![], vec![]];
    let nodes = [
        ("exec", locks[0].as_slice()),
        ("apt", locks[1].as_slice()),
        ("exec", locks[2].as_slice()),
    ];
    let options = RunOptions {
        provider_limits: BTreeMap::from([("apt".to_owned(), 5), ("exec".to_owned(), 3)]),
        ..RunOptions::default()
    };
    let s = engine.schedule(nodes.into_iter(), &options);
    // Groups in first-seen order: exec 0, apt 1.
    assert_eq!(s.group, vec![0, 1, 0]);
    assert_eq!(
        s.group_limits,
        vec![3, 1],
        "the provider's 1 beats the operator's 5"
    );
    assert_eq!(
        s.locks,
        vec![vec![0], vec![0], vec![]],
        "exec and apt share `dpkg`"
    );
}

/// Issue 14: a resource's `locks:` travel from the manifest into the plan (and so into a
/// saved plan's apply, which schedules by them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_locks_are_part_of_the_plan() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Setup::new(
        &dir,
        "  - {id: a, type: mock.item, properties: {name: a}, locks: [dpkg, apt-lists]}\n  - {id: b, type: mock.item, properties: {name: b}}\n",
        &[],
    )
    .await;
    let locks: BTreeMap<&str, Vec<String>> = s
        .plan
        .resources
        .iter()
        .map(|r| (r.id.as_str(), r.locks.clone()))
        .collect();
    assert_eq!(locks["a"], vec!["apt-lists".to_owned(), "dpkg".into()]);
    assert!(locks["b"].is_empty());
    let text = serde_json::to_string(&s.plan).expect("json");
    let back: Plan = serde_json::from_str(&text).expect("saved plan");
    assert_eq!(back.resources, s.plan.resources);
}

/// Events of an apply, collected.
async fn apply_collecting(s: &Setup) -> (ApplyReport, Vec<Event>) {
    let mut events = Vec::new();
    let report = s
        .engine
        .apply(&s.plan, &RunOptions::default(), &mut |e| events.push(e))
        .await;
    (report, events)
}

#[tokio::test]
async fn transient_failures_are_tried_again_and_each_attempt_is_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = "  - {id: a, type: mock.item, properties: {name: a, value: 1}, retry: {attempts: 3, delay: 10ms}}
  - {id: b, type: mock.item, properties: {name: b, value: 2}, depends_on: [a]}
";
    let s = Setup::new(&dir, body, &[]).await;
    s.transient("a", 1);
    let (report, events) = apply_collecting(&s).await;
    assert!(report.succeeded(), "{report:?}");
    let a = report.results.iter().find(|r| r.id == "a").expect("a");
    assert_eq!(a.outcome, Outcome::Created);
    assert_eq!(a.attempts(), 2);
    assert_eq!(a.retried[0].wait_ms, 10);
    assert!(a.retried[0].error.contains("injected transient failure"));
    let retrying: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ResourceRetrying { .. }))
        .collect();
    assert_eq!(retrying.len(), 1, "{events:?}");
    // The retry event comes before the resource's end.
    let pos = |f: &dyn Fn(&Event) -> bool| events.iter().position(f).expect("event");
    assert!(
        pos(&|e| matches!(e, Event::ResourceRetrying { .. }))
            < pos(&|e| matches!(e, Event::ResourceFinished(r) if r.id == "a"))
    );
    assert_eq!(report.counts().retried, 1);
    assert_eq!(report.counts().attempts, 2);
}

#[tokio::test]
async fn retries_stop_at_their_attempts_and_never_retry_what_is_not_transient() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = "  - {id: a, type: mock.item, properties: {name: a, value: 1}, retry: {attempts: 3, delay: 1ms}}
  - {id: c, type: mock.item, properties: {name: c, value: 1}, retry: {attempts: 5, delay: 1ms}}
";
    let s = Setup::new(&dir, body, &["c"]).await;
    s.transient("a", 10);
    let (report, _) = apply_collecting(&s).await;
    let by_id: BTreeMap<&str, &ResourceResult> =
        report.results.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(by_id["a"].attempts(), 3);
    assert!(
        matches!(&by_id["a"].outcome, Outcome::Failed { error } if error.contains("attempt 3 of 3")),
        "{:?}",
        by_id["a"].outcome
    );
    // An internal error is not transient: one attempt only.
    assert_eq!(by_id["c"].attempts(), 1);
    assert_eq!(
        s.mock
            .calls_of(Operation::Apply)
            .iter()
            .filter(|c| *c == "c")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_timeout_bounds_all_attempts() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = "  - {id: a, type: mock.item, properties: {name: a, value: 1}, retry: {attempts: 50, delay: 40ms, backoff: 1}, timeout: 150ms}
";
    let s = Setup::new(&dir, body, &[]).await;
    s.transient("a", 100);
    let (report, _) = apply_collecting(&s).await;
    let a = &report.results[0];
    assert!(
        matches!(&a.outcome, Outcome::Failed { error } if error.contains("timeout of 150ms")),
        "{:?}",
        a.outcome
    );
    let applies = s.mock.calls_of(Operation::Apply).len();
    assert!((2..=6).contains(&applies), "{applies} attempts in 150 ms");
}

#[tokio::test]
async fn a_failure_handler_runs_only_when_what_it_handles_fails() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = "  - {id: a, type: mock.item, properties: {name: a, value: 1}}
  - {id: b, type: mock.item, properties: {name: b, value: 2}}
  - {id: restore-a, type: mock.item, properties: {name: ra, value: 0}, on_failure: [a]}
  - {id: restore-b, type: mock.item, properties: {name: rb, value: 0}, on_failure: [b]}
  - {id: after-a, type: mock.item, properties: {name: aa, value: 0}, depends_on: [a]}
";
    let s = Setup::new(&dir, body, &["a"]).await;
    assert_eq!(s.plan.summary.conditional, 2, "{:?}", s.plan.summary);
    let (report, _) = apply_collecting(&s).await;
    let o = outcomes(&report);
    assert!(matches!(o["a"], Outcome::Failed { .. }));
    assert_eq!(o["restore-a"], Outcome::Created, "the handler ran");
    assert!(
        matches!(&o["restore-b"], Outcome::NotTriggered { reason } if reason.contains("`b`")),
        "{:?}",
        o["restore-b"]
    );
    assert!(matches!(o["after-a"], Outcome::Skipped { .. }));
    let applies = s.mock.calls_of(Operation::Apply);
    assert!(!applies.contains(&"restore-b".to_owned()), "{applies:?}");
    let pos = |id: &str| applies.iter().position(|a| a == id).expect("applied");
    assert!(pos("a") < pos("restore-a"));
}

#[tokio::test]
async fn a_failing_failure_handler_is_reported_failed() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = "  - {id: a, type: mock.item, properties: {name: a, value: 1}}
  - {id: restore, type: mock.item, properties: {name: r, value: 0}, on_failure: [a]}
";
    let s = Setup::new(&dir, body, &["a", "restore"]).await;
    let (report, _) = apply_collecting(&s).await;
    let o = outcomes(&report);
    assert!(matches!(o["restore"], Outcome::Failed { .. }), "{o:?}");
}

const ROLLING: &str = "  - id: conf
    type: mock.item
    for_each: [a, b, c, d]
    serial: 1
    properties: {name: \"conf-${each.value}\", value: 1}
  - id: check
    type: mock.item
    for_each: [a, b, c, d]
    properties: {name: \"check-${each.value}\", value: 1}
    depends_on: [\"conf[${each.value}]\"]
  - {id: last, type: mock.item, properties: {name: last, value: 1}, depends_on: [\"check[a]\", \"check[b]\", \"check[c]\", \"check[d]\"]}
";

#[tokio::test]
async fn a_rolling_group_changes_one_member_at_a_time_after_its_checks() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Setup::new(&dir, ROLLING, &[]).await;
    let (report, _) = apply_collecting(&s).await;
    assert!(report.succeeded(), "{report:?}");
    let applies = s.mock.calls_of(Operation::Apply);
    let pos = |id: &str| applies.iter().position(|a| a == id).expect(id);
    for (x, y) in [("a", "b"), ("b", "c"), ("c", "d")] {
        assert!(
            pos(&format!("check[{x}]")) < pos(&format!("conf[{y}]")),
            "conf[{y}] started before check[{x}] finished: {applies:?}"
        );
    }
    assert!(pos("check[d]") < pos("last"));
}

#[tokio::test]
async fn a_rolling_group_stops_at_the_first_failed_batch() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Setup::new(&dir, ROLLING, &["check[b]"]).await;
    let (report, _) = apply_collecting(&s).await;
    let o = outcomes(&report);
    assert_eq!(o["conf[a]"], Outcome::Created);
    assert_eq!(o["conf[b]"], Outcome::Created);
    assert!(matches!(o["check[b]"], Outcome::Failed { .. }));
    for id in ["conf[c]", "conf[d]"] {
        assert!(
            matches!(&o[id], Outcome::NotStarted { reason }
                if reason.contains("rolling group `conf` stopped") && reason.contains("`conf[b]`")),
            "{id}: {:?}",
            o[id]
        );
    }
    assert!(matches!(o["check[c]"], Outcome::Skipped { .. }));
    let applies = s.mock.calls_of(Operation::Apply);
    assert!(!applies.contains(&"conf[c]".to_owned()), "{applies:?}");
}

#[tokio::test]
async fn max_failures_lets_a_rolling_group_go_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = ROLLING.replace("serial: 1", "serial: 1\n    max_failures: 1");
    let s = Setup::new(&dir, &body, &["check[b]"]).await;
    let (report, _) = apply_collecting(&s).await;
    let o = outcomes(&report);
    assert_eq!(o["conf[c]"], Outcome::Created, "{o:?}");
    assert_eq!(o["conf[d]"], Outcome::Created, "{o:?}");
    let s = Setup::new(
        &tempfile::tempdir().expect("tmp"),
        &body,
        &["check[b]", "check[c]"],
    )
    .await;
    let (report, _) = apply_collecting(&s).await;
    let o = outcomes(&report);
    assert!(matches!(o["conf[d]"], Outcome::NotStarted { .. }), "{o:?}");
}

#[tokio::test]
async fn serial_two_runs_two_at_a_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = ROLLING.replace("serial: 1", "serial: 2");
    let s = Setup::new(&dir, &body, &[]).await;
    let (report, _) = apply_collecting(&s).await;
    assert!(report.succeeded());
    let applies = s.mock.calls_of(Operation::Apply);
    let pos = |id: &str| applies.iter().position(|a| a == id).expect(id);
    for first in ["check[a]", "check[b]"] {
        for second in ["conf[c]", "conf[d]"] {
            assert!(pos(first) < pos(second), "{applies:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_reported_when_it_happens_not_when_the_resource_ends() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = "  - {id: a, type: mock.item, properties: {name: a, value: 1}, retry: {attempts: 2, delay: 400ms}}
";
    let s = Setup::new(&dir, body, &[]).await;
    s.transient("a", 1);
    let mut seen: Vec<(std::time::Instant, &'static str)> = Vec::new();
    let report = s
        .engine
        .apply(&s.plan, &RunOptions::default(), &mut |e| {
            let what = match e {
                Event::ResourceRetrying { .. } => "retrying",
                Event::ResourceFinished(_) => "finished",
                Event::ResourceStarted { .. } => "started",
            };
            seen.push((std::time::Instant::now(), what));
        })
        .await;
    assert!(report.succeeded());
    let at = |w: &str| seen.iter().find(|(_, x)| *x == w).expect(w).0;
    let early = at("finished").duration_since(at("retrying"));
    assert!(
        early >= std::time::Duration::from_millis(300),
        "the retry was reported only {early:?} before the end"
    );
}

#[tokio::test]
async fn rolling_groups_that_gate_each_other_in_a_circle_do_not_run_and_say_why() {
    let dir = tempfile::tempdir().expect("tmp");
    // web rolls x then y; cache rolls y then x, each cache[k] after web[k]: web[y] would
    // wait for cache[x] (in web's first batch), which waits for cache[y], after web[y].
    let body = "  - {id: web, type: mock.item, for_each: [x, y], serial: 1, properties: {name: \"web-${each.value}\", value: 1}}
  - {id: cache, type: mock.item, for_each: [y, x], serial: 1, properties: {name: \"cache-${each.value}\", value: 1}, depends_on: [\"web[${each.value}]\"]}
  - {id: other, type: mock.item, properties: {name: other, value: 1}}
";
    let s = Setup::new(&dir, body, &[]).await;
    let (report, events) = apply_collecting(&s).await;
    assert_eq!(
        report.results.len(),
        5,
        "every resource is reported: {report:?}"
    );
    let finished = events
        .iter()
        .filter(|e| matches!(e, Event::ResourceFinished(_)))
        .count();
    assert_eq!(finished, 5);
    let o = outcomes(&report);
    for id in ["web[x]", "web[y]"] {
        assert!(
            matches!(&o[id], Outcome::NotStarted { reason } if reason.contains("wait for each other's batches in a circle")),
            "{id}: {:?}",
            o[id]
        );
    }
    assert!(!report.succeeded());
    assert_eq!(o["other"], Outcome::Created);
}
