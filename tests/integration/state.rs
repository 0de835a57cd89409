//! The state on the command line (issue 5, first part): every apply is recorded in
//! `.tenet/state.db`, `tenet history` / `show` / `state` read it back, the run lock keeps
//! two applies apart and names its holder, and `tenet audit verify` finds a record
//! edited or deleted directly in the database.

use crate::support::{PgSchema, has, ok, stderr, stdout, tenet, write_manifest};
use std::time::Duration;
use tenet::state::sqlite::SqliteStore;
use tenet::state::{Holder, StateStore};

const SITE: &str = "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\n\
resources:\n  - {id: site, type: file.directory, properties: {path: ./out/site}}\n  \
- {id: index, type: file.file, properties: {path: ./out/site/index.html, content: \"v${var.v}\\n\"}}\n\
vars:\n  v: 1\n";

#[test]
fn applies_are_recorded_and_read_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("Recorded as run #1"), "{}", stdout(&o));
    ok(&tenet(dir, &["apply", "--yes"]));
    ok(&tenet(dir, &["apply", "--yes", "--var", "v=2"]));

    let o = tenet(dir, &["state", "list"]);
    ok(&o);
    let list = stdout(&o);
    assert!(
        list.contains("index  file.file") && list.contains("site   file.directory"),
        "{list}"
    );
    let o = tenet(dir, &["state", "show", "index"]);
    ok(&o);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(shown["desired"]["content"], "v2\n");
    assert_eq!(shown["observed"]["content"], "v2\n");
    assert_eq!(shown["provider"], "file");

    let o = tenet(dir, &["history"]);
    ok(&o);
    let h = stdout(&o);
    assert!(
        h.find("#3").expect("#3") < h.find("#1").expect("#1"),
        "newest first: {h}"
    );
    assert!(
        h.contains("2 created")
            && h.contains("2 unchanged")
            && h.contains("1 unchanged, 1 updated"),
        "{h}"
    );
    let o = tenet(dir, &["show", "3"]);
    ok(&o);
    assert!(
        stdout(&o).contains("updated    index (file.file) [intentional] /content"),
        "{}",
        stdout(&o)
    );

    let o = tenet(dir, &["audit", "verify"]);
    ok(&o);
    assert!(
        stdout(&o).contains("History intact: 3 runs"),
        "{}",
        stdout(&o)
    );

    // Tamper with the database directly: the audit names the record.
    let db = dir.join(".tenet/state.db");
    let raw = rusqlite::Connection::open(&db).expect("raw");
    let original: String = raw
        .query_row("SELECT record FROM runs WHERE seq = 3", [], |r| r.get(0))
        .expect("record 3");
    raw.execute(
        "UPDATE runs SET record = ?1 WHERE seq = 3",
        [original.replace("\"updated\"", "\"unchanged\"")],
    )
    .expect("edit");
    let o = tenet(dir, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("run 3 was edited"), "{}", stderr(&o));
    raw.execute("UPDATE runs SET record = ?1 WHERE seq = 3", [&original])
        .expect("restore");
    ok(&tenet(dir, &["audit", "verify"]));
    raw.execute("DELETE FROM runs WHERE seq = 2", [])
        .expect("delete");
    let o = tenet(dir, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("before run 3 was changed"),
        "{}",
        stderr(&o)
    );

    // Forget drops a resource from the state, leaving the system alone.
    ok(&tenet(dir, &["state", "forget", "index"]));
    assert!(dir.join("out/site/index.html").exists());
    let o = tenet(dir, &["state", "show", "index"]);
    assert!(
        stderr(&o).contains("no resource `index` in the state"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_run_lock_names_its_holder_and_can_be_forced() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);
    let store = SqliteStore::open(&dir.join(".tenet/state.db")).expect("open");
    let other = Holder {
        pid: 4242,
        host: "build-7.example".into(),
        user: "deploy".into(),
        since: "2026-11-26T09:30:00Z".into(),
    };
    store.lock(&other, Duration::ZERO).expect("lock");

    let o = tenet(dir, &["apply", "--yes", "--lock-timeout", "300ms"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(
            "locked by pid 4242 on build-7.example (user deploy) since 2026-11-26T09:30:00Z"
        ),
        "{err}"
    );
    assert!(
        !dir.join("out/site").exists(),
        "nothing applied under someone else's lock"
    );

    let o = tenet(dir, &["state", "unlock"]);
    assert_eq!(o.status.code(), Some(1), "--force is required");
    let o = tenet(dir, &["state", "unlock", "--force"]);
    ok(&o);
    assert!(
        stdout(&o).contains("Released the lock held by pid 4242"),
        "{}",
        stdout(&o)
    );
    // Regression (issue 12): the forced-out holder is alive. It notices before it
    // writes anything more, and no run writes beside it meanwhile.
    match store.put_resources(&[]) {
        Err(tenet::state::StateError::LockLost { .. }) => {}
        other => panic!("a write after losing the lock: {other:?}"),
    }
    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    has(&stderr(&o), "in use by another tenet process");
    drop(store);
    ok(&tenet(dir, &["apply", "--yes"]));
    let store = SqliteStore::open(&dir.join(".tenet/state.db")).expect("open");
    assert_eq!(
        store.lock_holder().expect("holder"),
        None,
        "released after the run"
    );

    // A holder that died (its lock file's flock went with it) is taken over without
    // --force, even under this process's own pid and host name (two containers).
    store.lock(&Holder::me(), Duration::ZERO).expect("lock");
    drop(store);
    ok(&tenet(dir, &["apply", "--yes"]));
}

#[test]
fn resources_that_leave_the_manifest_are_deleted_unless_protected_or_forgotten() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let head =
        "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\nresources:\n";
    let keep = "  - {id: keep, type: file.file, properties: {path: ./out/keep, content: k}, lifecycle: {prevent_destroy: true}}\n";
    let note = "  - {id: note, type: file.file, properties: {path: ./out/note, content: n}, on_remove: forget}\n";
    let site = "  - {id: site, type: file.directory, properties: {path: ./out/site}}\n  \
                - {id: index, type: file.file, properties: {path: ./out/site/index.html, content: i}}\n";
    write_manifest(dir, &format!("{head}{keep}{note}{site}"));
    ok(&tenet(dir, &["apply", "--yes"]));

    // Everything leaves the manifest but one unrelated resource.
    let other = "  - {id: other, type: file.file, properties: {path: ./out/other, content: o}}\n";
    write_manifest(dir, &format!("{head}{other}"));
    let o = tenet(dir, &["plan"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "prevent_destroy blocks: {}",
        stdout(&o)
    );
    let text = stdout(&o);
    for line in [
        "- index (file.file) will be deleted (no longer in the manifest)",
        "- site (file.directory) will be deleted (no longer in the manifest)",
        "note left the manifest with on_remove: forget",
        "has prevent_destroy set (remembered in the state)",
        "tenet state forget keep",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The file goes before the directory that holds it.
    assert!(text.find("- index").expect("index") < text.find("- site").expect("site"));

    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(!dir.join("out/site").exists(), "index, then site, deleted");
    assert!(dir.join("out/keep").exists(), "protected");
    assert!(dir.join("out/note").exists(), "forgotten, not deleted");
    assert!(dir.join("out/other").exists());
    let list = stdout(&tenet(dir, &["state", "list"]));
    assert!(list.contains("keep") && list.contains("other"), "{list}");
    assert!(
        !list.contains("note") && !list.contains("index") && !list.contains("site"),
        "{list}"
    );

    // Forgetting the protected resource lets the runs converge; the file stays.
    ok(&tenet(dir, &["state", "forget", "keep"]));
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("No changes."), "{}", stdout(&o));
    assert!(dir.join("out/keep").exists());

    // prevent_destroy also refuses a delete the manifest asks for.
    let gone = "  - {id: other, type: file.file, properties: {path: ./out/other, ensure: absent}, lifecycle: {prevent_destroy: true}}\n";
    write_manifest(dir, &format!("{head}{gone}"));
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o)
            .contains("applying it would delete `other`, but it has lifecycle.prevent_destroy set"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn drift_is_reported_with_fields_and_apply_labels_corrective_and_intentional_changes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);
    let o = tenet(dir, &["drift"]);
    ok(&o);
    assert!(
        stdout(&o).contains("nothing has been applied here yet"),
        "{}",
        stdout(&o)
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    ok(&o);
    assert!(
        stdout(&o).contains("Drift check: 2 resources, 0 drifted"),
        "{}",
        stdout(&o)
    );

    // Someone edits the file by hand.
    let index = dir.join("out/site/index.html");
    std::fs::write(&index, "hacked\n").expect("edit");
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("~ index (file.file) drifted:"), "{text}");
    assert!(
        text.contains("content: expected \"v1\\n\", found \"hacked\\n\""),
        "{text}"
    );
    let o = tenet(dir, &["drift", "--json"]);
    assert_eq!(o.status.code(), Some(0), "no --detailed-exitcode: 0");
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(report["drifted"], 1);
    let idx = report["resources"]
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["id"] == "index")
        .expect("index")
        .clone();
    assert_eq!(idx["status"], "drifted");
    assert_eq!(idx["fields"][0]["path"], "/content");
    assert_eq!(idx["fields"][0]["actual"], "hacked\n");

    // Putting it back is a corrective change; a manifest change is an intentional one.
    let o = tenet(dir, &["apply", "--yes", "--json"]);
    ok(&o);
    let finished: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "resource_finished" && e["id"] == "index")
        .collect();
    assert_eq!(finished[0]["outcome"], "updated");
    assert_eq!(finished[0]["change"], "corrective");
    let o = tenet(dir, &["apply", "--yes", "--var", "v=2"]);
    ok(&o);
    // One line per resource, labelled.
    let line = stdout(&o)
        .lines()
        .find(|l| l.contains("index (file.file) updated in"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{}", stdout(&o)));
    assert!(line.trim_end().ends_with("(intentional)"), "{line:?}");

    // The history keeps both, the drift checks, and plans once a state exists.
    ok(&tenet(dir, &["plan", "--var", "v=2"]));
    let h = stdout(&tenet(dir, &["history"]));
    assert!(h.contains("drift") && h.contains("plan"), "{h}");
    let runs: serde_json::Value =
        serde_json::from_str(&stdout(&tenet(dir, &["history", "--json"]))).expect("json");
    let changes: Vec<&str> = runs
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["record"]["command"] == "apply")
        .flat_map(|r| {
            r["record"]["resources"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|o| o["change"].as_str().map(str::to_owned))
        .map(|s| {
            if s == "corrective" {
                "corrective"
            } else {
                "intentional"
            }
        })
        .collect();
    assert!(
        changes.contains(&"corrective") && changes.contains(&"intentional"),
        "{changes:?}"
    );

    // A file that disappears is reported as gone.
    std::fs::remove_file(&index).expect("rm");
    let text = stdout(&tenet(dir, &["drift"]));
    assert!(
        text.contains("- index (file.file) is gone from the system"),
        "{text}"
    );
}

/// Issue 5, crash safety: kill `tenet apply` with SIGKILL while a change is in flight.
/// The state database stays intact, the next run names what was interrupted, reads it
/// again and converges.
#[test]
fn a_killed_apply_leaves_the_state_intact_and_the_next_run_converges() {
    use std::process::Stdio;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut body = String::from(
        "providers:\n  exec:\n    grants:\n      fs: [{path: ./out, access: rw}]\n      \
         exec: [{program: /bin/sh, args: [[-c, \"*\"]]}]\nresources:\n",
    );
    for i in 1..=6 {
        body.push_str(&format!(
            "  - {{id: c{i}, type: exec.command, properties: {{command: [/bin/sh, -c, \"sleep 0.4; touch m{i}\"], cwd: ./out, creates: ./out/m{i}}}}}\n"
        ));
    }
    write_manifest(dir, &body);
    let mut child = crate::support::tenet_command(dir, &["apply", "--yes", "--parallelism", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Wait until one command is done and the next one is journaled as in flight.
    let db = dir.join(".tenet/state.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
        if !dir.join("out/m1").exists() || !db.exists() {
            continue;
        }
        let in_flight = SqliteStore::open(&db)
            .and_then(|s| s.journal())
            .unwrap_or_default();
        if in_flight.iter().any(|e| e.id != "c1") {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(!dir.join("out/m6").exists(), "killed before the end");

    // The database is intact, and the work finished before the kill is already in it.
    ok(&tenet(dir, &["audit", "verify"]));
    let list = stdout(&tenet(dir, &["state", "list"]));
    assert!(list.contains("c1"), "finished before the kill: {list}");
    let store = SqliteStore::open(&db).expect("open after the crash");
    assert!(!store.journal().expect("journal").is_empty());

    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("was killed while changing: c") && err.contains("(create)"),
        "{err}"
    );
    for i in 1..=6 {
        assert!(dir.join(format!("out/m{i}")).exists(), "m{i}");
    }
    assert!(store.journal().expect("journal").is_empty());
    let h = stdout(&tenet(dir, &["history"]));
    assert!(h.contains("interrupted"), "{h}");
    ok(&tenet(dir, &["audit", "verify"]));
    let o = tenet(dir, &["apply", "--yes"]);
    assert!(stdout(&o).contains("No changes."), "{}", stdout(&o));
}

#[test]
fn rollback_applies_the_desired_state_of_an_earlier_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);
    ok(&tenet(dir, &["apply", "--yes"])); // run 1: v1
    let extra = "  - {id: extra, type: file.file, properties: {path: ./out/extra, content: e}}\n";
    // Run 2: v2 and one more file.
    let v2 = SITE.replace("resources:\n", &format!("resources:\n{extra}"));
    write_manifest(dir, &v2);
    ok(&tenet(dir, &["apply", "--yes", "--var", "v=2"]));
    ok(&tenet(dir, &["drift"])); // run 3: a drift check, nothing to roll back to
    let index = dir.join("out/site/index.html");
    assert_eq!(std::fs::read_to_string(&index).expect("read"), "v2\n");

    let o = tenet(dir, &["rollback", "3", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("run 3 is a drift, which applied nothing"),
        "{}",
        stderr(&o)
    );
    let o = tenet(dir, &["rollback", "1"]);
    assert_eq!(o.status.code(), Some(1), "no terminal, no --yes: refused");
    assert!(dir.join("out/extra").exists());

    let o = tenet(dir, &["rollback", "1", "--yes"]);
    ok(&o);
    let text = stdout(&o);
    assert!(
        text.contains("Rolling back to the desired state of run #1"),
        "{text}"
    );
    assert!(
        text.contains("~ index (file.file) will be updated"),
        "{text}"
    );
    assert!(
        text.contains("- extra (file.file) will be deleted (no longer in the manifest)"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&index).expect("read"), "v1\n");
    assert!(!dir.join("out/extra").exists());
    let o = tenet(dir, &["show", "4"]);
    assert!(stdout(&o).contains("Run #4 — rollback"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("rollback to the desired state of run #1"),
        "{}",
        stdout(&o)
    );
    ok(&tenet(dir, &["audit", "verify"]));
}

#[test]
fn report_computes_compliance_metrics_from_the_history() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);
    ok(&tenet(dir, &["apply", "--yes"]));
    std::fs::write(dir.join("out/site/index.html"), "hacked\n").expect("edit");
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2));
    ok(&tenet(dir, &["apply", "--yes"]));
    let o = tenet(dir, &["report", "--since", "1h", "--json"]);
    ok(&o);
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(r["runs"], 3);
    assert_eq!(r["drift_events"], 1);
    assert_eq!(r["repairs"], 1);
    assert_eq!(r["changes"], 3, "2 created + 1 corrective update");
    assert_eq!(r["change_failure_rate"], 0.0);
    // The last check was that apply: it found `index` drifted (and put it back) and
    // `site` as desired.
    assert_eq!(r["compliance_rate"], 0.5);
    assert!(r["mttr_seconds"].as_f64().is_some_and(|s| s >= 0.0));
    assert!(r["provisioning_ms"]["file.file"].as_f64().is_some());
    let o = tenet(dir, &["report"]);
    ok(&o);
    let text = stdout(&o);
    assert!(text.contains("compliance rate       50.0%"), "{text}");
    assert!(text.contains("(1 events)"), "{text}");
}

/// Every file under `dir`, concatenated (to search the state's bytes, WAL included).
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("ls") {
        let p = e.expect("entry").path();
        if p.is_file() {
            out.extend(std::fs::read(&p).expect("read"));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn sensitive_values_are_never_shown_or_stored_in_clear() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let secret = "hunter2-correct-horse";
    let body = "vars:\n  token: {sensitive: true}\n  note: {default: plain}\n\
providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\nresources:\n  \
- {id: token, type: file.file, properties: {path: ./out/token, content: \"${var.token}\", mode: \"0600\"}}\n  \
- {id: literal, type: file.file, properties: {path: ./out/literal, content: \"pin 4711-9988\"}, sensitive: [content]}\n  \
- {id: note, type: file.file, properties: {path: ./out/note, content: \"${var.note}\"}}\n";
    write_manifest(dir, body);
    let var = format!("token={secret}");

    let o = tenet(dir, &["plan", "--var", &var, "--out", "saved.json"]);
    ok(&o);
    let shown = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !shown.contains(secret) && !shown.contains("4711-9988"),
        "{shown}"
    );
    assert!(
        shown.contains("(sensitive)") && shown.contains("plain"),
        "{shown}"
    );
    let saved = std::fs::read_to_string(dir.join("saved.json")).expect("saved");
    assert!(
        !saved.contains(secret) && !saved.contains("4711-9988"),
        "{saved}"
    );
    let o = tenet(dir, &["plan", "--var", &var, "--json"]);
    assert!(!stdout(&o).contains(secret));

    // Applying the saved plan writes the real values (taken from the manifest again).
    let o = tenet(dir, &["apply", "saved.json", "--var", &var]);
    ok(&o);
    assert!(!stdout(&o).contains(secret), "{}", stdout(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/token")).expect("token"),
        secret
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/literal")).expect("literal"),
        "pin 4711-9988"
    );
    let o = tenet(dir, &["apply", "--yes", "--var", &var, "--json"]);
    ok(&o);
    assert!(stdout(&o).contains("No changes") || !stdout(&o).contains("\"action\""));

    // The state, its history and the manifest snapshot hold salted hashes only.
    let state = all_bytes(&dir.join(".tenet"));
    assert!(
        !contains(&state, secret),
        "the secret is in the state database"
    );
    assert!(
        !contains(&state, "4711-9988"),
        "the literal secret is in the state database"
    );
    let shown = stdout(&tenet(dir, &["state", "show", "token"]));
    assert!(
        shown.contains("sha256:") && !shown.contains(secret),
        "{shown}"
    );
    assert!(stdout(&tenet(dir, &["state", "show", "note"])).contains("plain"));

    // The hash is enough to see the value change on the system.
    std::fs::write(dir.join("out/token"), "changed").expect("edit");
    let o = tenet(dir, &["drift", "--detailed-exitcode", "--var", &var]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("~ token (file.file) drifted:"), "{text}");
    assert!(
        text.contains("content: expected \"(sensitive)\", found \"(sensitive)\""),
        "{text}"
    );
    assert!(!text.contains("changed"), "{text}");
    ok(&tenet(dir, &["drift", "--var", &var]));
    let o = tenet(dir, &["apply", "--yes", "--var", &var]);
    ok(&o);
    assert!(stdout(&o).contains("(corrective)"), "{}", stdout(&o));
    assert!(!stdout(&o).contains(secret));

    // Rolling back needs the sensitive variable again, and checks it against the hash.
    let o = tenet(dir, &["rollback", "1", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("pass it again with --var token=VALUE"),
        "{}",
        stderr(&o)
    );
    let o = tenet(dir, &["rollback", "1", "--yes", "--var", "token=wrong"]);
    assert!(
        stderr(&o).contains("is not the value run 1 used"),
        "{}",
        stderr(&o)
    );
    // Run 1's manifest had a literal secret, cut out of its snapshot: no rollback to it.
    let o = tenet(dir, &["rollback", "1", "--yes", "--var", &var]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("held sensitive values written literally"),
        "{}",
        stderr(&o)
    );
    // Without literal secrets a run can be rolled back to, with the variable given again.
    let only_vars: String = body
        .lines()
        .filter(|l| !l.contains("literal"))
        .map(|l| format!("{l}\n"))
        .collect();
    write_manifest(dir, &only_vars);
    ok(&tenet(dir, &["apply", "--yes", "--var", &var]));
    let last = stdout(&tenet(dir, &["history", "--limit", "1"]));
    let run: String = last
        .trim_start_matches('#')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    std::fs::write(dir.join("out/token"), "changed again").expect("edit");
    ok(&tenet(dir, &["rollback", &run, "--yes", "--var", &var]));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/token")).expect("token"),
        secret
    );
    assert!(!contains(&all_bytes(&dir.join(".tenet")), secret));
}

#[test]
fn a_renamed_resource_is_not_deleted_and_manifests_sharing_a_state_keep_theirs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let head =
        "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\nresources:\n";
    write_manifest(
        dir,
        &format!(
            "{head}  - {{id: old-name, type: file.file, properties: {{path: ./out/f, content: x}}}}\n"
        ),
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    write_manifest(
        dir,
        &format!(
            "{head}  - {{id: new-name, type: file.file, properties: {{path: ./out/f, content: x}}}}\n"
        ),
    );
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(!stdout(&o).contains("will be deleted"), "{}", stdout(&o));
    assert!(
        dir.join("out/f").exists(),
        "a rename must not delete the object"
    );
    let list = stdout(&tenet(dir, &["state", "list"]));
    assert!(
        list.contains("new-name") && !list.contains("old-name"),
        "{list}"
    );

    // Two manifest files in one directory share the state but not their resources.
    std::fs::write(
        dir.join("a.yaml"),
        format!(
            "{head}  - {{id: a, type: file.file, properties: {{path: ./out/a, content: a}}}}\n"
        ),
    )
    .expect("a");
    std::fs::write(
        dir.join("b.yaml"),
        format!(
            "{head}  - {{id: b, type: file.file, properties: {{path: ./out/b, content: b}}}}\n"
        ),
    )
    .expect("b");
    ok(&tenet(dir, &["apply", "a.yaml", "--yes"]));
    let o = tenet(dir, &["apply", "b.yaml", "--yes"]);
    ok(&o);
    assert!(!stdout(&o).contains("will be deleted"), "{}", stdout(&o));
    assert!(dir.join("out/a").exists() && dir.join("out/b").exists());
}

/// Every command on a manifest or its state takes the manifest as `plan`, `apply` and
/// `drift` do: a positional PATH (default `.`); `-m PATH` still works, and both at once
/// is an error.
#[test]
fn state_commands_take_the_manifest_as_a_positional_path() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("site");
    std::fs::create_dir(&dir).expect("dir");
    write_manifest(&dir, SITE);
    let elsewhere = tmp.path();
    let path = dir.to_str().expect("utf-8");
    ok(&tenet(elsewhere, &["apply", path, "--yes"]));
    for args in [
        vec!["history", path],
        vec!["show", "1", path],
        vec!["state", "list", path],
        vec!["state", "show", "index", path],
        vec!["audit", "verify", path],
        vec!["report", path],
        vec!["drift", path],
    ] {
        let o = tenet(elsewhere, &args);
        ok(&o);
        assert!(!stdout(&o).contains("no state"), "{args:?}: {}", stdout(&o));
    }
    let o = tenet(elsewhere, &["history", "-m", path]);
    ok(&o);
    assert!(stdout(&o).contains("#1"), "{}", stdout(&o));
    let o = tenet(elsewhere, &["history", path, "-m", path]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Without a path: the current directory, which has no state.
    let o = tenet(elsewhere, &["history"]);
    assert!(stderr(&o).contains("no state at"), "{}", stderr(&o));

    // Run as a service would (no USER, no LOGNAME): the history names the account.
    let o = crate::support::tenet_command(elsewhere, &["apply", path, "--yes"])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .expect("run tenet");
    ok(&o);
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    let me = String::from_utf8_lossy(&me.stdout).trim().to_owned();
    let newest = stdout(&tenet(elsewhere, &["history", path, "--limit", "1"]));
    assert!(
        newest.contains(&format!(" {me}@")) && !newest.contains("uid "),
        "{newest}"
    );
}

/// Issue 17, bounded history: a converged run is stored as a small record (the manifest
/// snapshot and the unchanged resources kept once), reads back whole, and `tenet state
/// prune` removes old runs while the chain still verifies and rollback still works.
#[test]
fn history_is_stored_once_per_digest_and_pruned_to_an_anchor() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut m = String::from(
        "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\nvars:\n  v: 1\nresources:\n  - {id: out, type: file.directory, properties: {path: ./out/d}}\n",
    );
    for i in 0..100 {
        m.push_str(&format!(
            "  - {{id: f{i:03}, type: file.file, depends_on: [out], properties: {{path: ./out/d/f{i:03}, content: \"v${{var.v}}\\n\"}}}}\n"
        ));
    }
    write_manifest(dir, &m);
    for v in ["1", "1", "2", "2", "2"] {
        ok(&tenet(dir, &["apply", "--yes", "--var", &format!("v={v}")]));
    }
    let db = dir.join(".tenet/state.db");
    let raw = rusqlite::Connection::open(&db).expect("raw");
    let size = |seq: u64| -> usize {
        raw.query_row(
            "SELECT length(record) FROM runs WHERE seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .expect("record")
    };
    // Converged runs of 101 resources: a few hundred bytes each, where the whole
    // snapshot and 101 outcomes used to be stored again.
    for seq in [2, 4, 5] {
        assert!(size(seq) < 1024, "run {seq} stored in {} bytes", size(seq));
    }
    let blobs: i64 = raw
        .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
        .expect("blobs");
    assert_eq!(
        blobs, 4,
        "two snapshots (v=1, v=2) and two id lists (all 101, and the directory alone)"
    );

    // Read back whole: every unchanged resource is listed by `tenet show`, counted by
    // `tenet history`, and in sync for `tenet report`.
    let o = tenet(dir, &["show", "5"]);
    ok(&o);
    has(&stdout(&o), "unchanged  f042 (file.file)");
    assert_eq!(stdout(&o).matches("unchanged  ").count(), 101);
    let o = tenet(dir, &["history"]);
    ok(&o);
    has(&stdout(&o), "101 unchanged");
    has(&stdout(&o), "1 unchanged, 100 updated");
    let o = tenet(dir, &["report", "--json"]);
    ok(&o);
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(r["compliance_rate"], 1.0);

    // Pruning needs a bound, keeps the chain verifiable, and says where it starts.
    let o = tenet(dir, &["state", "prune"]);
    assert!(!o.status.success());
    has(&stderr(&o), "--keep-runs N and/or --keep-days DAYS");
    let o = tenet(dir, &["state", "prune", "--keep-runs", "4"]);
    ok(&o);
    has(
        &stdout(&o),
        "Pruned 1 run (the history now starts after run #1",
    );
    let o = tenet(dir, &["audit", "verify"]);
    ok(&o);
    has(
        &stdout(&o),
        "History intact: 4 runs after 1 pruned (runs up to #1",
    );
    // A pruned run is gone for good, named as such; a kept one still rolls back
    // (its snapshot read back from the stored copy).
    let o = tenet(dir, &["rollback", "1", "--yes"]);
    assert!(!o.status.success());
    has(&stderr(&o), "runs up to 1 were pruned");
    let o = tenet(dir, &["rollback", "2", "--yes"]);
    ok(&o);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/d/f007")).expect("f007"),
        "v1\n"
    );
    let o = tenet(dir, &["state", "prune", "--keep-runs", "1"]);
    ok(&o);
    has(&stdout(&o), "Pruned 4 runs");
    let blobs: i64 = raw
        .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
        .expect("blobs");
    assert_eq!(blobs, 2, "only what the rollback run refers to is left");
    let o = tenet(dir, &["audit", "verify"]);
    ok(&o);
    has(&stdout(&o), "History intact: 1 runs after 5 pruned");
}

/// Issue 18, the shared state: `--state postgres://…` keeps the state in PostgreSQL —
/// applies recorded and read back, nothing written beside the manifest, the run lock an
/// advisory lock that another process is refused and that a killed run releases.
#[test]
fn a_postgresql_state_is_shared_and_locked_across_processes() {
    let Some(schema) = PgSchema::new("cli") else {
        return;
    };
    let url = schema.url();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);
    let state = ["--state", url.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(&state).map(|s| (*s).to_owned()).collect()
    };
    let run = |args: &[&str]| {
        let args = with(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tenet(dir, &args)
    };
    ok(&run(&["apply", "--yes"]));
    ok(&run(&["apply", "--yes", "--var", "v=2"]));
    assert!(
        !dir.join(".tenet/state.db").exists(),
        "nothing kept beside the manifest"
    );
    let o = run(&["history", "."]);
    ok(&o);
    has(&stdout(&o), "1 unchanged, 1 updated");
    let o = run(&["audit", "verify", "."]);
    ok(&o);
    has(&stdout(&o), "History intact: 2 runs");
    let o = run(&["state", "list", "."]);
    ok(&o);
    has(&stdout(&o), "index  file.file");

    // Another process holding the lock: refused, naming it.
    let holder = tenet::state::postgres::PgStore::open(&url).expect("open");
    let me = Holder::me();
    holder.lock(&me, Duration::ZERO).expect("lock");
    let o = run(&["apply", "--yes"]);
    assert!(!o.status.success());
    has(&stderr(&o), &format!("is locked by pid {}", me.pid));
    // Released by dropping the connection.
    drop(holder);
    ok(&run(&["apply", "--yes"]));

    // A run killed in the middle of its changes (SIGKILL: nothing of it runs again): the
    // server releases its lock with its connection, and the next run says what it was
    // changing and converges. (Another manifest on the same state: its resources apart.)
    let slow = tempfile::tempdir().expect("tmp");
    let mut body = format!(
        "providers:\n  bad:\n    source: {}\n    unsigned: true\n    consistency_check: false\n    grants:\n{}resources:\n",
        crate::support::MISBEHAVE_WASM,
        crate::support::MISBEHAVE_GRANTS
    );
    for i in 0..3 {
        body.push_str(&format!(
            "  - {{id: slow{i}, type: bad.probe, properties: {{action: slow-apply, value: {i}}}}}\n"
        ));
    }
    write_manifest(slow.path(), &body);
    let (mut child, _reader, _) = crate::support::started_applying(
        slow.path(),
        &["apply", "--yes", "--parallelism", "1", "--state", &url],
    );
    std::thread::sleep(Duration::from_millis(400));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let o = tenet(
        slow.path(),
        &["apply", "--yes", "--state", &url, "--lock-timeout", "10s"],
    );
    ok(&o);
    has(&stderr(&o), "was killed while changing: slow0");
    // The first manifest's resources were left alone.
    let o = run(&["state", "list", "."]);
    has(&stdout(&o), "index  file.file");
    // A password in the URL never shows.
    let o = tenet(
        dir,
        &[
            "history",
            ".",
            "--state",
            "postgres://tenet:s3cret@127.0.0.1:1/none",
        ],
    );
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    has(&stderr(&o), "tenet:***@127.0.0.1:1");
}
