//! The use cases on real sessions (the built-in `file` provider in the sandbox) and a
//! real SQLite state in a temporary directory: apply and its bookkeeping, approval,
//! recovery of a killed run, orphans, saved-plan staleness, drift, rollback targets.

use super::*;
use crate::session::SessionOptions;
use crate::state::{JournalEntry, Location};
use crate::wasm::plugin::CompileCache;
use std::path::Path;

/// Every event's name, in order, and the change kind of each finished change.
#[derive(Default)]
struct Recorder(Vec<String>);

impl RunEvents for Recorder {
    fn event(&mut self, event: RunEvent<'_>) -> Result<(), EventError> {
        let name = match event {
            RunEvent::Recovered { pending } => format!(
                "recovered {}",
                pending
                    .iter()
                    .map(|e| e.id.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            RunEvent::Planned(p) => format!("planned {}", p.summary.changes()),
            RunEvent::Started { changes, .. } => format!("started {changes}"),
            RunEvent::Resource {
                event: Event::ResourceStarted { id, .. },
                ..
            } => format!("begin {id}"),
            RunEvent::Resource {
                event: Event::ResourceFinished(r),
                change,
            } => format!("end {} {}", r.id, change.unwrap_or("-")),
            RunEvent::Resource {
                event: Event::ResourceRetrying { id, attempt, .. },
                ..
            } => format!("retry {id} {attempt}"),
            RunEvent::LockLost(_) => "lock lost".into(),
            RunEvent::Finished { report, .. } => format!("finished {}", report.results.len()),
        };
        self.0.push(name);
        Ok(())
    }
}

/// Approves or declines, counting how often it was asked.
struct Answer {
    yes: bool,
    asked: usize,
}

impl Approve for Answer {
    fn approve(&mut self, _plan: &Plan) -> Result<bool, ApproveError> {
        self.asked += 1;
        Ok(self.yes)
    }
}

struct Broken;

impl Approve for Broken {
    fn approve(&mut self, _plan: &Plan) -> Result<bool, ApproveError> {
        Err("no terminal to ask".into())
    }
}

fn manifest(dir: &Path, files: &[(&str, &str)]) {
    let mut text = String::from(
        "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\nresources:\n",
    );
    if files.is_empty() {
        text.push_str("  []\n");
    }
    for (id, content) in files {
        text.push_str(&format!(
            "  - id: {id}\n    type: file.file\n    properties: {{path: ./out/{id}.txt, content: {content}}}\n"
        ));
    }
    std::fs::create_dir_all(dir.join("out")).expect("out");
    std::fs::write(dir.join("tenet.yaml"), text).expect("manifest");
}

async fn session(dir: &Path) -> Session {
    let options = SessionOptions {
        path: dir.to_path_buf(),
        ..SessionOptions::default()
    };
    Session::open_with_cache(&options, CompileCache::new(None))
        .await
        .unwrap_or_else(|e| panic!("valid manifest: {e}"))
}

/// A context on `s` with the state beside its manifest and default settings.
fn context<'a>(
    s: &'a Session,
    approve: &'a mut dyn Approve,
    events: &'a mut dyn RunEvents,
) -> RunContext<'a> {
    RunContext {
        session: s,
        state: Location::default(),
        settings: Settings::default(),
        approve,
        events,
    }
}

async fn plan_of(s: &Session) -> Planned {
    plan(&mut context(s, &mut AutoApprove, &mut NoEvents))
        .await
        .expect("plan")
}

async fn apply_with(
    s: &Session,
    approve: &mut dyn Approve,
    events: &mut Recorder,
    saved: Option<SavedPlan<'_>>,
) -> Result<ApplyOutcome, RunError> {
    apply(&mut context(s, approve, events), saved).await
}

async fn apply_yes(dir: &Path) -> (ApplyOutcome, Vec<String>) {
    let s = session(dir).await;
    let mut events = Recorder::default();
    let out = apply_with(&s, &mut AutoApprove, &mut events, None)
        .await
        .expect("apply");
    (out, events.0)
}

fn store(dir: &Path) -> Arc<dyn StateStore> {
    Location::default().open(dir).expect("state")
}

#[tokio::test]
async fn apply_records_then_converges_and_repairs_drift_as_corrective() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    manifest(d, &[("a", "one")]);

    let (out, events) = apply_yes(d).await;
    let ApplyOutcome::Applied(applied) = out else {
        panic!("expected a walk: {out:?}")
    };
    assert!(applied.succeeded());
    let run = *applied.recorded.as_ref().expect("recorded");
    assert_eq!(
        events,
        [
            "planned 1",
            "started 1",
            "begin a",
            "end a intentional",
            "finished 1"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(d.join("out/a.txt")).expect("a"),
        "one"
    );
    let st = store(d);
    assert!(st.resource("a").expect("read").is_some());
    assert!(st.journal().expect("journal").is_empty(), "journal cleared");

    // Nothing to change: recorded, not walked, not asked.
    let s = session(d).await;
    let mut ask = Answer {
        yes: false,
        asked: 0,
    };
    let mut events = Recorder::default();
    let out = apply_with(&s, &mut ask, &mut events, None)
        .await
        .expect("apply");
    assert!(
        matches!(out, ApplyOutcome::Converged { run: r, .. } if r > run),
        "{out:?}"
    );
    assert_eq!(ask.asked, 0);
    assert_eq!(events.0, ["planned 0"]);

    // Edited by hand: drift sees it, and the repair is corrective.
    std::fs::write(d.join("out/a.txt"), "edited").expect("edit");
    let s = session(d).await;
    let found = drift(&mut context(&s, &mut AutoApprove, &mut NoEvents))
        .await
        .expect("drift");
    let Drift::Checked {
        resources, drifted, ..
    } = found
    else {
        panic!("state exists")
    };
    assert_eq!(drifted, 1);
    assert_eq!(resources[0].status, "drifted");
    let (_, events) = apply_yes(d).await;
    assert!(
        events.contains(&"end a corrective".to_owned()),
        "{events:?}"
    );
    let runs = store(d).runs(10).expect("runs");
    let commands: Vec<&str> = runs.iter().map(|r| r.record.command.as_str()).collect();
    assert_eq!(commands, ["apply", "drift", "apply", "apply"]);
}

#[tokio::test]
async fn a_declined_plan_changes_nothing_and_an_approver_error_is_the_runs_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    manifest(d, &[("a", "one")]);
    let s = session(d).await;
    let mut ask = Answer {
        yes: false,
        asked: 0,
    };
    let out = apply_with(&s, &mut ask, &mut Recorder::default(), None)
        .await
        .expect("apply");
    assert!(matches!(out, ApplyOutcome::Declined));
    assert_eq!(ask.asked, 1);
    assert!(!d.join("out/a.txt").exists());
    assert!(store(d).runs(10).expect("runs").is_empty());

    let err = apply_with(&s, &mut Broken, &mut Recorder::default(), None)
        .await
        .expect_err("cannot ask");
    assert!(matches!(err, RunError::Approve(_)));
    assert_eq!(err.to_string(), "no terminal to ask");
    assert!(!d.join("out/a.txt").exists());
}

#[tokio::test]
async fn a_killed_runs_journal_is_recovered_recorded_and_converged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    manifest(d, &[("a", "one")]);
    let st = store(d);
    st.journal_begin(&JournalEntry {
        id: "a".into(),
        type_name: "file.file".into(),
        action: "create".into(),
        pid: 4242,
        started_at: crate::state::now(),
        outcome: None,
    })
    .expect("journal");
    drop(st);
    let (out, events) = apply_yes(d).await;
    assert_eq!(events[0], "recovered a");
    assert!(matches!(out, ApplyOutcome::Applied(ref a) if a.succeeded()));
    let runs = store(d).runs(10).expect("runs");
    // Newest first: this apply, then the interrupted one.
    let interrupted = &runs[1].record;
    assert!(!interrupted.succeeded);
    assert_eq!(interrupted.resources[0].outcome, "interrupted");
    assert!(
        interrupted.resources[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("pid 4242")),
        "{interrupted:?}"
    );
    assert!(store(d).journal().expect("journal").is_empty());
}

#[tokio::test]
async fn what_left_the_manifest_is_deleted_or_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    manifest(d, &[("a", "one"), ("b", "two")]);
    apply_yes(d).await;
    manifest(d, &[("a", "one")]);
    let s = session(d).await;
    let planned = plan_of(&s).await;
    let b = planned
        .plan
        .resources
        .iter()
        .find(|r| r.id == "b")
        .expect("orphan planned");
    assert!(b.orphan);
    assert_eq!(b.action, crate::provider::Action::Delete);
    assert!(planned.run.is_some(), "the plan is recorded");
    assert!(d.join("out/b.txt").exists(), "a plan deletes nothing");

    // Marked `forget_on_remove` in the state: only dropped from it.
    let st = store(d);
    let mut rec = st.resource("b").expect("read").expect("b");
    rec.forget_on_remove = true;
    st.put_resources(&[rec]).expect("put");
    let (gone, forget) = record::orphans(st.as_ref(), &s.manifest).expect("orphans");
    assert!(gone.is_empty());
    assert_eq!(forget, ["b"]);
    drop(st);
    apply_yes(d).await;
    assert!(store(d).resource("b").expect("read").is_none());
    assert!(d.join("out/b.txt").exists(), "forgotten, not deleted");
}

#[tokio::test]
async fn a_saved_plan_is_refused_once_the_system_or_the_manifest_moved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    manifest(d, &[("a", "one")]);
    let s = session(d).await;
    let planned = plan_of(&s).await;
    let file = d.join("plan.json");
    let saved = || {
        Some(SavedPlan {
            plan: &planned.plan,
            file: &file,
        })
    };

    // The system moved: the file appeared.
    std::fs::write(d.join("out/a.txt"), "someone else").expect("write");
    let err = apply_with(&s, &mut Broken, &mut Recorder::default(), saved())
        .await
        .expect_err("stale");
    assert!(
        err.to_string()
            .contains("the system changed since the plan was made")
            && err.to_string().contains("  a: "),
        "{err}"
    );
    std::fs::remove_file(d.join("out/a.txt")).expect("rm");

    // Edited after it was made: refused as not what the manifest plans.
    let mut edited = planned.plan.clone();
    edited.resources[0].desired["content"] = "other".into();
    let err = apply_with(
        &s,
        &mut Broken,
        &mut Recorder::default(),
        Some(SavedPlan {
            plan: &edited,
            file: &file,
        }),
    )
    .await
    .expect_err("altered");
    assert!(err.to_string().contains("the file was edited"), "{err}");

    // Unchanged: applied without asking (the broken approver is never called).
    let out = apply_with(&s, &mut Broken, &mut Recorder::default(), saved())
        .await
        .expect("apply");
    assert!(matches!(out, ApplyOutcome::Applied(ref a) if a.succeeded()));
    assert_eq!(
        std::fs::read_to_string(d.join("out/a.txt")).expect("a"),
        "one"
    );

    // The manifest changed since: refused before anything is read.
    manifest(d, &[("a", "two")]);
    let s = session(d).await;
    let err = apply_with(&s, &mut Broken, &mut Recorder::default(), saved())
        .await
        .expect_err("manifest changed");
    assert!(err.to_string().contains("the manifest"), "{err}");
}

#[tokio::test]
async fn another_runs_lock_stops_an_apply_before_it_reads_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    manifest(d, &[("a", "one")]);
    let s = session(d).await;
    let held = crate::state::RunLock::take(store(d), Duration::ZERO).expect("lock");
    let mut events = Recorder::default();
    let err = apply_with(&s, &mut AutoApprove, &mut events, None)
        .await
        .expect_err("locked");
    assert!(
        matches!(&err, RunError::State(e) if matches!(**e, StateError::Locked { .. })),
        "{err}"
    );
    assert!(events.0.is_empty());
    drop(held);
    assert!(!d.join("out/a.txt").exists());
}

#[tokio::test]
async fn a_rollback_target_is_an_apply_with_its_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let loc = Location::default();
    let err = rollback_target(&loc, d, 1, &[]).expect_err("no state");
    assert!(
        err.to_string().contains("no history to roll back to"),
        "{err}"
    );

    manifest(d, &[("a", "one")]);
    let (out, _) = apply_yes(d).await;
    let ApplyOutcome::Applied(applied) = out else {
        panic!("walked")
    };
    let first = applied.recorded.expect("recorded");
    let s = session(d).await;
    plan_of(&s).await;

    let target = rollback_target(&loc, d, first, &[]).expect("target");
    assert!(target.snapshot.files["tenet.yaml"].contains("content: one"));
    let err = rollback_target(&loc, d, first + 1, &[]).expect_err("a plan");
    assert!(err.to_string().contains("which applied nothing"), "{err}");
    let err = rollback_target(&loc, d, 99, &[]).expect_err("no such run");
    assert!(
        matches!(&err, RunError::State(e) if matches!(**e, StateError::NoSuchRun(99))),
        "{err}"
    );
}

/// On a single-threaded runtime (as in this test), waiting for another run's lock must
/// not hold up the runtime: the task that releases the lock runs meanwhile, and the
/// apply goes on once it is free.
#[tokio::test]
async fn waiting_for_the_lock_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    manifest(d, &[("a", "one")]);
    let s = session(d).await;
    let held = crate::state::RunLock::take(store(d), Duration::ZERO).expect("lock");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
    });
    let mut events = Recorder::default();
    let out = apply(
        &mut RunContext {
            settings: Settings {
                lock_timeout: Duration::from_secs(10),
                ..Settings::default()
            },
            ..context(&s, &mut AutoApprove, &mut events)
        },
        None,
    )
    .await
    .expect("applied once the lock was released");
    assert!(matches!(out, ApplyOutcome::Applied(ref a) if a.succeeded()));
    release.await.expect("released");
}
