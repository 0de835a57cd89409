//! The conformance suite every [`StateStore`] backend must pass: locking (including
//! stale holders and concurrent contenders), resources, the chained history and its
//! verification, and concurrent writers. A backend's tests call [`run_all`] with a way to
//! open two handles on one fresh store (two handles stand for two `tenet` processes).

use super::{
    ChainBreak, GENESIS, Holder, ResourceOutcome, RunRecord, StateError, StateStore, StoredResource,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Opens a fresh store: the first call creates it, later calls open more handles on the
/// same store.
pub type Opener = dyn Fn() -> Arc<dyn StateStore>;

pub fn run_all(open: &Opener) {
    lock_excludes_others_and_names_the_holder(open);
    stale_holders_are_replaced_and_force_unlock_works(open);
    resources_round_trip_in_id_order(open);
    runs_are_chained_and_verified(open);
    concurrent_writers_keep_one_valid_chain(open);
    the_journal_survives_reopening(open);
    the_salt_is_stable_and_random(open);
    // Last: it prunes what the others appended.
    history_is_kept_compactly_and_pruned_to_an_anchor(open);
}

/// An apply at `day` of December 2026 that updated `x` and found `unchanged` as desired,
/// planned from a manifest of `files` with these facts.
fn converged(day: u32, unchanged: &[&str], files: &str, facts: i64) -> RunRecord {
    let mut r = record("apply", "updated");
    r.started_at = format!("2026-12-{day:02}T00:00:00Z");
    r.finished_at = format!("2026-12-{day:02}T00:00:01Z");
    r.resources[0].id = "x".into();
    r.resources
        .extend(unchanged.iter().map(|id| ResourceOutcome {
            id: (*id).into(),
            type_name: "file.file".into(),
            outcome: "unchanged".into(),
            changed_fields: vec![],
            error: None,
            duration_ms: 0.0,
            change: None,
            attempts: None,
            retried: Vec::new(),
        }));
    r.manifest_snapshot = json!({
        "files": {"tenet.yaml": files},
        "vars": {"v": 1},
        "facts": {"memory": {"available_bytes": facts}},
    });
    r
}

fn history_is_kept_compactly_and_pruned_to_an_anchor(open: &Opener) {
    let s = open();
    let before = s.verify().expect("verify").expect("valid").records;
    let r1 = converged(1, &["a", "b", "c"], "one", 1);
    let seq1 = s.append_run(&r1).expect("append");
    let seq2 = s
        .append_run(&converged(10, &["a", "b", "c"], "one", 2))
        .expect("append");
    let seq3 = s
        .append_run(&converged(20, &["a", "b", "c"], "one", 3))
        .expect("append");

    // Stored: the steady resources as a count with their ids, the snapshot by digest
    // (the facts kept in the record); one run is read back as appended.
    let stored = s.runs(3).expect("runs").pop().expect("run 1").record;
    assert_eq!(stored.resources.len(), 1);
    let steady = stored.steady.clone().expect("steady part");
    assert_eq!((steady.outcome.as_str(), steady.count), ("unchanged", 3));
    assert_eq!(
        steady.ids.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c"],
        "the ids are read back"
    );
    assert_eq!(
        stored.manifest_snapshot,
        json!({"facts": {"memory": {"available_bytes": 1}}})
    );
    let snapshot = stored.snapshot_sha256.clone().expect("snapshot digest");
    assert_eq!(s.run(seq1).expect("run").record, r1);
    // Shared by the runs that repeat them; each blob is what its digest says.
    let listed = s.runs(3).expect("runs");
    assert_eq!(listed.len(), 3);
    for r in &listed {
        assert_eq!(r.record.snapshot_sha256.as_ref(), Some(&snapshot));
        assert_eq!(
            r.record.steady.as_ref().map(|x| &x.sha256),
            Some(&steady.sha256)
        );
        assert_eq!(r.record.steady.as_ref().map(|x| x.ids.len()), Some(3));
    }
    for sha in [&snapshot, &steady.sha256] {
        let body = s.blob(sha).expect("blob").expect("present");
        assert_eq!(crate::digest::sha256_hex(&body), *sha);
    }
    // Another manifest and other steady resources: other blobs.
    let seq4 = s
        .append_run(&converged(21, &["a", "b", "c", "d"], "two", 4))
        .expect("append");
    let last = s.runs(1).expect("runs").remove(0);
    assert_eq!(last.seq, seq4);
    let last = last.record;
    assert_ne!(last.snapshot_sha256.as_ref(), Some(&snapshot));
    assert_ne!(
        last.steady.as_ref().map(|x| &x.sha256),
        Some(&steady.sha256)
    );
    assert_eq!(
        s.verify().expect("verify").expect("valid").records,
        before + 4
    );

    // By age: everything started before 2026-12-06 (the suite's earlier runs and run 1).
    let now = humantime::parse_rfc3339("2026-12-21T00:00:00Z").expect("time");
    let keep = super::Retention {
        runs: None,
        age: Some(Duration::from_secs(15 * 86_400)),
    };
    let pruned = s.prune(keep, now).expect("prune");
    assert_eq!(pruned.runs, before + 1);
    let anchor = pruned.anchor.clone().expect("anchor");
    assert_eq!((anchor.seq, anchor.pruned), (seq1, before + 1));
    assert!(matches!(
        s.run(seq1),
        Err(StateError::Pruned { seq, pruned_through }) if seq == seq1 && pruned_through == seq1
    ));
    assert!(
        s.blob(&snapshot).expect("blob").is_some(),
        "runs 2 and 3 use it"
    );
    let summary = s.verify().expect("verify").expect("still verifies");
    assert_eq!((summary.records, summary.anchor), (3, Some(anchor)));

    // By count: only the newest stays; what only the pruned runs used goes.
    let keep = super::Retention {
        runs: Some(1),
        age: None,
    };
    let pruned = s.prune(keep, now).expect("prune");
    assert_eq!((pruned.runs, pruned.blobs), (2, 2));
    assert_eq!(pruned.anchor.as_ref().map(|a| a.seq), Some(seq3));
    assert!(s.blob(&snapshot).expect("blob").is_none());
    assert!(s.blob(&steady.sha256).expect("blob").is_none());
    assert_eq!(s.runs(10).expect("runs").len(), 1);
    // Nothing more to prune; the newest run is never pruned.
    let again = s.prune(keep, now).expect("prune");
    assert_eq!((again.runs, again.anchor), (0, pruned.anchor.clone()));
    let all = super::Retention {
        runs: Some(1),
        age: Some(Duration::ZERO),
    };
    assert_eq!(s.prune(all, now).expect("prune").runs, 0);
    // The chain goes on from the newest run.
    s.append_run(&converged(22, &["a"], "two", 5))
        .expect("append");
    let summary = s.verify().expect("verify").expect("verifies");
    assert_eq!(summary.records, 2);
    assert_eq!(
        summary.anchor.map(|a| (a.seq, a.pruned)),
        Some((seq3, before + 3))
    );
    let _ = seq2;
}

fn the_salt_is_stable_and_random(open: &Opener) {
    let salt = open().salt().expect("salt");
    assert_eq!(salt.len(), 64);
    assert_eq!(open().salt().expect("again"), salt, "one salt per state");
    let v = json!("s3cret");
    assert_eq!(super::seal(&salt, &v), super::seal(&salt, &v));
    assert_ne!(super::seal(&salt, &v), super::seal("other", &v));
    assert!(!super::seal(&salt, &v).to_string().contains("s3cret"));
}

fn the_journal_survives_reopening(open: &Opener) {
    let entry = |id: &str| super::JournalEntry {
        id: id.into(),
        type_name: "file.file".into(),
        action: "update".into(),
        pid: 7,
        started_at: "2026-11-26T12:00:00Z".into(),
        outcome: None,
    };
    let s = open();
    s.journal_begin(&entry("b")).expect("begin");
    s.journal_begin(&entry("a")).expect("begin");
    s.journal_finish("b", "updated").expect("finish");
    drop(s);
    let again = open();
    let done = super::JournalEntry {
        outcome: Some("updated".into()),
        ..entry("b")
    };
    assert_eq!(again.journal().expect("journal"), vec![entry("a"), done]);
    again.journal_clear().expect("clear");
    assert!(again.journal().expect("journal").is_empty());
}

fn holder(pid: u32, host: &str) -> Holder {
    Holder {
        pid,
        host: host.to_owned(),
        user: "tester".into(),
        since: "2026-11-26T12:00:00Z".into(),
    }
}

pub fn record(command: &str, outcome: &str) -> RunRecord {
    RunRecord {
        command: command.into(),
        rollback_of: None,
        manifest_path: "/m/tenet.yaml".into(),
        manifest_sha256: "ab".repeat(32),
        manifest_snapshot: json!({"files": {"tenet.yaml": "resources: []\n"}, "vars": {}}),
        snapshot_sha256: None,
        steady: None,
        git: None,
        user: "tester".into(),
        host: "h".into(),
        started_at: "2026-11-26T12:00:00Z".into(),
        finished_at: "2026-11-26T12:00:01Z".into(),
        succeeded: outcome != "failed",
        policy: Vec::new(),
        artifact: None,
        resources: vec![ResourceOutcome {
            id: "a".into(),
            type_name: "file.file".into(),
            outcome: outcome.into(),
            changed_fields: vec!["/content".into()],
            error: None,
            duration_ms: 1.25,
            change: Some("intentional".into()),
            attempts: None,
            retried: Vec::new(),
        }],
    }
}

fn lock_excludes_others_and_names_the_holder(open: &Opener) {
    let (a, b) = (open(), open());
    let me = Holder::me();
    // Another live process on another host: never stale.
    let other = holder(1, "elsewhere.example");
    a.lock(&me, Duration::ZERO).expect("first lock");
    // Taking it again is idempotent for the holder.
    a.lock(&me, Duration::ZERO)
        .expect("re-entrant for the same holder");
    let err = b
        .lock(&other, Duration::from_millis(250))
        .expect_err("held by me");
    match &err {
        StateError::Locked { holder, .. } => assert_eq!(*holder, me),
        other => panic!("unexpected: {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!("pid {}", me.pid)) && text.contains(&me.host),
        "{text}"
    );
    // Unlock by someone else does nothing; by the holder, frees it.
    b.unlock(&other).expect("unlock other");
    assert_eq!(b.lock_holder().expect("holder"), Some(me.clone()));
    a.unlock(&me).expect("unlock");
    assert_eq!(b.lock_holder().expect("holder"), None);
    b.lock(&other, Duration::ZERO).expect("free now");
    b.force_unlock().expect("cleanup");
}

fn stale_holders_are_replaced_and_force_unlock_works(open: &Opener) {
    // A run that died holding the lock (its handle gone without unlocking), under the
    // same pid and host name as this process: only the liveness of the lock tells.
    let twin = Holder::me();
    {
        let dead = open();
        dead.lock(&twin, Duration::ZERO).expect("take for the twin");
    }
    let s = open();
    let me = Holder {
        since: "later".into(),
        ..Holder::me()
    };
    s.lock(&me, Duration::ZERO)
        .expect("a holder that is gone is replaced");
    assert_eq!(s.lock_holder().expect("holder"), Some(me.clone()));

    // A live holder whose lock is forced away notices before its next write, and the
    // next run waits for it to stop instead of writing beside it.
    let other = open();
    assert_eq!(
        other.force_unlock().expect("force"),
        Some(me.clone()),
        "force_unlock returns whom it removed"
    );
    assert_eq!(s.lock_holder().expect("holder"), None);
    match s.put_resources(&[]) {
        Err(StateError::LockLost { holder: None, .. }) => {}
        other => panic!("a write after a forced unlock: {other:?}"),
    }
    match s.append_run(&record("apply", "created")) {
        Err(StateError::LockLost { .. }) => {}
        other => panic!("a run record after a forced unlock: {other:?}"),
    }
    match other.lock(&holder(1, "elsewhere.example"), Duration::ZERO) {
        Err(StateError::Busy { .. }) => {}
        other => panic!("a run while the forced-out one still runs: {other:?}"),
    }
    s.unlock(&me).expect("the forced-out run ends");
    other
        .lock(&holder(1, "elsewhere.example"), Duration::ZERO)
        .expect("free once it stopped");
    // Readers wait for a run, and a run for readers.
    assert!(matches!(
        s.lock_shared(Duration::ZERO),
        Err(StateError::Locked { .. })
    ));
    other.force_unlock().expect("cleanup");
    s.lock_shared(Duration::ZERO).expect("read");
    open().lock_shared(Duration::ZERO).expect("readers share");
    match other.lock(&me, Duration::ZERO) {
        Err(StateError::Busy { .. }) => {}
        other => panic!("a run while a drift check reads: {other:?}"),
    }
    s.unlock_shared();
    other.lock(&me, Duration::ZERO).expect("readers gone");
    other.force_unlock().expect("cleanup");
}

fn resources_round_trip_in_id_order(open: &Opener) {
    let s = open();
    let r = |id: &str, v: i64| StoredResource {
        id: id.into(),
        type_name: "file.file".into(),
        provider: "file".into(),
        provider_version: "0.1.0".into(),
        component_sha256: "cd".repeat(32),
        desired: json!({"path": format!("/x/{id}"), "v": v}),
        observed: Some(json!({"path": format!("/x/{id}"), "v": v, "size": 3})),
        changed_at: "2026-11-26T12:00:00Z".into(),
        prevent_destroy: id == "a",
        forget_on_remove: false,
        sensitive: vec![],
        manifest: "/m".into(),
    };
    s.put_resources(&[r("b", 1), r("a", 1)]).expect("put");
    s.put_resources(&[r("b", 2)]).expect("replace");
    let all = s.resources().expect("list");
    assert_eq!(
        all.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(s.resource("b").expect("get"), Some(r("b", 2)));
    s.remove_resources(&["a".into()]).expect("remove");
    assert_eq!(s.resource("a").expect("get"), None);
    assert_eq!(s.resources().expect("list").len(), 1);
    s.remove_resources(&["b".into()]).expect("cleanup");
}

fn runs_are_chained_and_verified(open: &Opener) {
    let s = open();
    let before = s.verify().expect("verify").expect("valid").records;
    let first = s.append_run(&record("apply", "created")).expect("append");
    let second = s.append_run(&record("apply", "updated")).expect("append");
    assert_eq!(second, first + 1);
    let latest = s.runs(1).expect("runs");
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].seq, second);
    assert_eq!(
        latest[0].record.snapshot_sha256.as_deref().map(str::len),
        Some(64)
    );
    assert_eq!(
        s.run(second).expect("run").record,
        record("apply", "updated")
    );
    let one = s.run(first).expect("run");
    assert_eq!(latest[0].prev_hash, one.hash);
    if first == 1 {
        assert_eq!(one.prev_hash, GENESIS);
    }
    assert!(matches!(
        s.run(9_999_999),
        Err(StateError::NoSuchRun(9_999_999))
    ));
    let summary = s.verify().expect("verify").expect("valid chain");
    assert_eq!(summary.records, before + 2);
    assert_eq!(summary.head, latest[0].hash);
}

fn concurrent_writers_keep_one_valid_chain(open: &Opener) {
    let before = open().verify().expect("verify").expect("valid").records;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = open();
            std::thread::spawn(move || {
                for i in 0..10 {
                    s.append_run(&record(&format!("apply-{t}-{i}"), "created"))
                        .expect("append under contention");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let summary = open().verify().expect("verify");
    assert_eq!(summary.map(|s| s.records), Ok(before + 40));
}

/// Breaks the chain is expected to report, used by backend tests that tamper directly.
pub fn assert_break(found: Result<super::ChainSummary, ChainBreak>, expected: ChainBreak) {
    assert_eq!(found.map(|s| s.records), Err(expected));
}
