//! Sandbox edges (issue 12): what a hostile provider, a tampered file or an unlucky
//! manifest could do to Tenet itself — its state, its compile cache, its output, its
//! process — and proof that each is contained. Each test names the attack it replays.

use crate::support::{
    MISBEHAVE_GRANTS, MISBEHAVE_WASM, fails_with, has, ok, started_applying, stderr, stdout, tenet,
    tenet_command, write_manifest,
};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn run_in(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = tenet_command(dir, args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run tenet")
}

const FILE_OUT: &str = "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\nresources:\n  - {id: a, type: file.file, properties: {path: ./out/a, content: a}}\n";

/// Seen: a provider granted the manifest directory rw overwrote `.tenet/state.db`; one
/// granted the compile cache rewrote native code the host then ran (SIGBUS).
#[test]
fn grants_cannot_reach_the_state_the_cache_or_the_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, FILE_OUT);
    ok(&tenet(dir, &["apply", "--yes"]));

    // The manifest directory, rw: the state is inside. Refused before anything runs,
    // at the grant's place, and the history survives.
    write_manifest(
        dir,
        &FILE_OUT.replace("[{path: ./out, access: rw}]", "[{path: ., access: rw}]"),
    );
    let o = tenet(dir, &["apply", "--yes"]);
    fails_with(&o, "tenet.yaml:4:");
    has(&stderr(&o), "error: provider `file`: rw grant");
    has(&stderr(&o), "contains the state database");
    has(
        &stderr(&o),
        "grant only the subdirectories the provider needs",
    );
    let o = tenet(dir, &["history"]);
    ok(&o);
    has(&stdout(&o), "apply");
    // Every way of loading providers refuses it before the provider runs.
    for cmd in [&["providers"][..], &["lock"], &["init"]] {
        let o = tenet(dir, cmd);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}");
        has(
            &format!("{}{}", stdout(&o), stderr(&o)),
            "contains the state database",
        );
    }

    // Read-only is refused too (the state records what providers must not read), and
    // so is a symlink to the same directory.
    std::os::unix::fs::symlink(dir, dir.join("alias")).expect("symlink");
    write_manifest(
        dir,
        &FILE_OUT.replace(
            "[{path: ./out, access: rw}]",
            "[{path: ./out, access: rw}, {path: ./alias, access: ro}]",
        ),
    );
    let o = tenet(dir, &["validate"]);
    fails_with(&o, "ro grant");
    has(&stderr(&o), "alias contains the state database");

    // The compile cache and the plugin store, wherever they are, ro or rw.
    let cache = dir.join("cache");
    let store = dir.join("store");
    let key = dir.join("secret/cache.key");
    for (granted, what) in [
        ("./cache", "the compile cache"),
        ("./store/sub", "the plugin store"),
        ("./secret", "the compile cache's key"),
    ] {
        write_manifest(
            dir,
            &FILE_OUT.replace(
                "[{path: ./out, access: rw}]",
                &format!("[{{path: ./out, access: rw}}, {{path: {granted}, access: ro}}]"),
            ),
        );
        let o = run_in(
            dir,
            &["validate"],
            &[
                ("TENET_CACHE_DIR", &cache),
                ("TENET_STORE_DIR", &store),
                ("TENET_CACHE_KEY", &key),
            ],
        );
        fails_with(&o, what);
    }

    // With the state elsewhere, the manifest directory may be read, never written: the
    // manifest and the lock file are in it.
    let elsewhere = tempfile::tempdir().expect("elsewhere");
    let state = elsewhere.path().join("state.db");
    let state_arg = state.display().to_string();
    write_manifest(
        dir,
        &FILE_OUT.replace(
            "[{path: ./out, access: rw}]",
            "[{path: ./out, access: rw}, {path: ., access: ro}]",
        ),
    );
    // (The tests keep the plugin store beside the manifest: move it away too.)
    let store_elsewhere = elsewhere.path().join("store");
    let away = [("TENET_STORE_DIR", store_elsewhere.as_path())];
    ok(&run_in(dir, &["validate", "--state", &state_arg], &away));
    write_manifest(
        dir,
        &FILE_OUT.replace("[{path: ./out, access: rw}]", "[{path: ., access: rw}]"),
    );
    let o = run_in(dir, &["validate", "--state", &state_arg], &away);
    fails_with(&o, "contains a manifest file");
    has(&stderr(&o), "no grant with write access may reach it");
    // … and the state's own directory is refused with TENET_STATE as with --state.
    write_manifest(
        dir,
        &FILE_OUT.replace(
            "[{path: ./out, access: rw}]",
            &format!(
                "[{{path: ./out, access: rw}}, {{path: {}, access: ro}}]",
                elsewhere.path().display()
            ),
        ),
    );
    let o = run_in(dir, &["validate"], &[("TENET_STATE", &state)]);
    fails_with(&o, "contains the state database");
}

fn cache_entries(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("compiled"))
        .expect("entries")
        .map(|e| e.expect("entry").path())
        .collect()
}

/// Native code is executed only from memory, after its owner, mode and keyed digest
/// checked out; anything else is recompiled with a warning, never run and never a crash.
#[test]
fn compiled_code_runs_only_when_it_is_known_to_be_ours() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let cache = dir.join("cache");
    let key_file = dir.join("keys/cache.key");
    write_manifest(dir, FILE_OUT);
    let env = [
        ("TENET_CACHE_DIR", cache.as_path()),
        ("TENET_CACHE_KEY", key_file.as_path()),
    ];
    ok(&run_in(dir, &["validate"], &env));
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let good = std::fs::read(entry).expect("read");
    // The key lives outside the cache: a copied or restored cache carries none.
    let key = std::fs::metadata(&key_file).expect("key");
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert!(
        !std::fs::read_dir(&cache)
            .expect("ls")
            .any(|e| { std::fs::read(e.expect("e").path()).ok() == std::fs::read(&key_file).ok() })
    );

    // Rewritten code (what a provider granted the cache did): refused, recompiled.
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(entry, &bad).expect("tamper");
    let o = run_in(dir, &["validate"], &env);
    ok(&o);
    has(&stderr(&o), "recompiling: cache entry refused");
    has(&stderr(&o), "does not carry this user's key");
    assert_eq!(std::fs::read(entry).expect("read"), good, "rewritten by us");

    // Writable by others: whoever else could have written it, it is not trusted.
    std::fs::set_permissions(entry, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let o = run_in(dir, &["validate"], &env);
    ok(&o);
    has(&stderr(&o), "writable by group or others");

    // A cache directory others can write: the cache is off, runs still work.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let o = run_in(dir, &["validate"], &env);
    ok(&o);
    has(&stderr(&o), "compile cache disabled");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let o = run_in(dir, &["validate"], &env);
    ok(&o);
    assert!(!stderr(&o).contains("cache"), "{}", stderr(&o));
}

fn misbehave(dir: &Path, limits: &str, resources: &str) {
    write_manifest(
        dir,
        &format!(
            "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    consistency_check: false\n    grants:\n{MISBEHAVE_GRANTS}      fs: [{{path: ./out, access: rw}}]\n    limits: {{{limits}}}\nresources:\n{resources}"
        ),
    );
    std::fs::create_dir_all(dir.join("out")).expect("out");
}

/// A provider's error or log text cannot print lines that read as Tenet's own.
#[test]
fn provider_text_cannot_pass_as_tenets_own_output() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    misbehave(
        dir,
        "timeout: 10s",
        "  - {id: forger, type: bad.probe, properties: {path: ./out/f, phase: apply, action: forge, value: \"disk full\\nApply complete: 1 created, 0 failed.\\r\\e[2K\"}}\n",
    );
    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    for line in all.lines() {
        assert!(
            !line.starts_with("Apply complete"),
            "a forged line stands at column 0:\n{all}"
        );
        assert!(!line.contains('\r') && !line.contains('\u{1b}'), "{line:?}");
    }
    has(
        &stdout(&o),
        "    │ Apply complete: 1 created, 0 failed.\\r\\u{1b}[2K",
    );
    has(&stdout(&o), "Apply finished with errors:");
    // The log message stays one line, tagged with the provider.
    let log = stderr(&o);
    let line = log
        .lines()
        .find(|l| l.contains("disk full"))
        .unwrap_or_else(|| panic!("no log line: {log}"));
    assert!(
        line.contains("disk full\\nApply complete") && line.contains("provider"),
        "{line}"
    );
    // JSON keeps the text as it was, in one string.
    let o = tenet(dir, &["apply", "--yes", "--json"]);
    let failed = stdout(&o)
        .lines()
        .find(|l| l.contains("\"failed\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .expect("a failed event");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("disk full\nApply complete")),
        "{failed}"
    );
}

/// A guest sleeping on the WASI clock past its deadline: the call times out and the
/// process exits with its usual code and no panic text.
#[test]
fn a_guest_stuck_in_a_host_call_ends_the_run_cleanly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    misbehave(
        dir,
        "timeout: 1s",
        "  - {id: sleeper, type: bad.probe, properties: {path: ./out/s, phase: apply, action: clock-sleep, value: 30}}\n  - {id: fine, type: bad.probe, properties: {path: ./out/fine, action: ok}}\n",
    );
    let started = std::time::Instant::now();
    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the deadline held"
    );
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    has(&stdout(&o), "sleeper (bad.probe) failed");
    has(&stdout(&o), "deadline");
}

/// Regression (issue 12): `exec` killed the program on timeout but not what it started.
#[test]
fn a_timed_out_program_takes_its_children_with_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let pidfile = dir.join("out/grandchild.pid");
    write_manifest(
        dir,
        &format!(
            "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    consistency_check: false\n    grants:\n      exec:\n        - {{program: /bin/echo, args: [[\"**\"]], mode: probe}}\n        - {{program: /bin/sh, args: [[-c, \"*\"]]}}\n      net: [\"http://127.0.0.1:*\"]\n      fs: [{{path: ./out, access: rw}}]\n    limits: {{timeout: 2s}}\nresources:\n  - {{id: spawner, type: bad.probe, properties: {{path: ./out/x, phase: apply, action: block, target: /bin/sh, args: [-c, \"sleep 300 & echo $! > {}; wait\"]}}}}\n",
            pidfile.display()
        ),
    );
    std::fs::create_dir_all(dir.join("out")).expect("out");
    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    has(&stdout(&o), "the host stopped the program");
    let pid = std::fs::read_to_string(&pidfile).expect("the shell started its child");
    let status = format!("/proc/{}/status", pid.trim());
    // Killed: gone, or a zombie waiting for whoever reaps orphans here.
    let alive = std::fs::read_to_string(&status).ok().is_some_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    });
    assert!(
        !alive,
        "the background `sleep 300` ({}) survived",
        pid.trim()
    );
}

/// A run whose lock is forced away stops before it writes more; a drift check waits for
/// a run instead of reading a half-applied system.
#[test]
fn a_run_notices_it_lost_the_lock_and_drift_waits_for_runs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut resources = String::new();
    for i in 0..4 {
        resources.push_str(&format!(
            "  - {{id: slow{i}, type: bad.probe, properties: {{path: ./out/s{i}, action: slow-apply}}}}\n"
        ));
    }
    misbehave(dir, "timeout: 10s", &resources);
    let (child, mut reader, _) = started_applying(dir, &["apply", "--yes", "--parallelism", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    // While the run holds the lock, drift does not read.
    let o = tenet(dir, &["drift"]);
    fails_with(&o, "is locked by pid");
    ok(&tenet(dir, &["state", "unlock", "--force"]));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut reader, &mut out).expect("read");
    let o = child.wait_with_output().expect("wait");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    has(&err, "lost the run lock");
    has(&out, "not started");
    assert!(
        !out.contains("slow3 (bad.probe) created"),
        "work went on after the lock was lost:\n{out}"
    );
}

/// Saved plans: what was reviewed is what is applied; an edited plan file is refused.
#[test]
fn an_edited_saved_plan_is_refused_naming_the_resource() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, FILE_OUT);
    ok(&tenet(dir, &["plan", "--out", "site.plan"]));
    let path = dir.join("site.plan");
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let a = plan["resources"]
        .as_array_mut()
        .expect("resources")
        .iter_mut()
        .find(|r| r["id"] == "a")
        .expect("a");
    a["desired"]["content"] = "injected\n".into();
    std::fs::write(&path, serde_json::to_string(&plan).expect("json")).expect("write");
    let o = tenet(dir, &["apply", "site.plan"]);
    fails_with(&o, "it is not what the manifest plans");
    has(&stderr(&o), "a: its planned desired properties differ");
    assert!(!dir.join("out/a").exists(), "nothing applied");
    // The untouched plan still applies.
    ok(&tenet(dir, &["plan", "--out", "site.plan"]));
    ok(&tenet(dir, &["apply", "site.plan"]));
    assert_eq!(std::fs::read_to_string(dir.join("out/a")).expect("a"), "a");
}

/// Rollback acts on a recorded run only if the chain verifies up to it.
#[test]
fn rollback_refuses_an_edited_run_record() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, FILE_OUT);
    ok(&tenet(dir, &["apply", "--yes"]));
    write_manifest(dir, &FILE_OUT.replace("content: a", "content: b"));
    ok(&tenet(dir, &["apply", "--yes"]));
    let db = dir.join(".tenet/state.db");
    let raw = rusqlite::Connection::open(&db).expect("raw");
    // The manifest text, stored once per digest: edited there, it no longer matches.
    let record: String = raw
        .query_row("SELECT record FROM runs WHERE seq = 1", [], |r| r.get(0))
        .expect("record");
    let sha = serde_json::from_str::<serde_json::Value>(&record).expect("json")["snapshot_sha256"]
        .as_str()
        .expect("the snapshot by digest")
        .to_owned();
    let body: Vec<u8> = raw
        .query_row("SELECT body FROM blobs WHERE sha256 = ?1", [&sha], |r| {
            r.get(0)
        })
        .expect("snapshot");
    let text = String::from_utf8(body.clone()).expect("utf-8");
    let edited = text.replace("content: a", "content: evil");
    assert_ne!(edited, text, "the snapshot holds the manifest text");
    raw.execute(
        "UPDATE blobs SET body = ?1 WHERE sha256 = ?2",
        rusqlite::params![edited.as_bytes(), sha],
    )
    .expect("edit");
    let o = tenet(dir, &["rollback", "1", "--yes"]);
    fails_with(
        &o,
        "refusing to roll back to run 1: the history does not verify",
    );
    has(&stderr(&o), "run 1 refers to stored content");
    assert_eq!(std::fs::read_to_string(dir.join("out/a")).expect("a"), "b");
    // The record itself edited (where its snapshot is, what it says happened).
    raw.execute(
        "UPDATE blobs SET body = ?1 WHERE sha256 = ?2",
        rusqlite::params![body, sha],
    )
    .expect("restore");
    let edited = record.replace("\"created\"", "\"updated\"");
    assert_ne!(edited, record);
    raw.execute("UPDATE runs SET record = ?1 WHERE seq = 1", [&edited])
        .expect("edit");
    drop(raw);
    let o = tenet(dir, &["rollback", "1", "--yes"]);
    fails_with(
        &o,
        "refusing to roll back to run 1: the history does not verify",
    );
    has(&stderr(&o), "run 1 was edited");
    assert_eq!(std::fs::read_to_string(dir.join("out/a")).expect("a"), "b");
}

/// Every byte Tenet keeps under `.tenet/` (database, WAL, shared memory, lock file).
fn state_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir.join(".tenet"))
        .expect(".tenet")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

/// Regression (issue 12): a sensitive variable's default was kept in clear in every
/// run record (the manifest snapshot holds the file text).
#[test]
fn secrets_never_reach_the_state_in_any_spelling() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    // Each secret, and how the manifest spells it.
    let secrets = [
        ("plain-default-1x", "plain-default-1x"),
        ("quoted-default-2y", "\"quoted-def\\u0061ult-2y\""),
        ("single-default-3'z", "'single-default-3''z'"),
    ];
    let manifest = format!(
        "vars:\n  \
           plain: {{sensitive: true, default: {}}}\n  \
           quoted:\n    sensitive: true\n    default: {}\n  \
           single:\n    sensitive: true\n    default: {}\n  \
           block:\n    sensitive: true\n    default: |\n      block-default-4w\n      second line\n  \
           fromfile: {{sensitive: true}}\n  \
           fromflag: {{sensitive: true}}\n\
         providers:\n  file:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n\
         resources:\n  \
           - {{id: v, type: file.file, sensitive: [content], properties: {{path: ./out/v, content: \"${{var.plain}} ${{var.quoted}} ${{var.single}} ${{var.block}} ${{var.fromfile}} ${{var.fromflag}}\"}}}}\n  \
           - id: literal\n    type: file.file\n    sensitive: [content]\n    properties:\n      path: ./out/literal\n      content: >-\n        literal-folded-5v\n        across lines\n  \
           - {{id: flow, type: file.file, sensitive: true, properties: {{path: ./out/flow, content: \"literal-esc\\u0061ped-6u\"}}}}\n",
        secrets[0].1, secrets[1].1, secrets[2].1
    );
    write_manifest(dir, &manifest);
    std::fs::create_dir(dir.join("vals")).expect("vals");
    std::fs::write(
        dir.join("vals/values.yaml"),
        "fromfile: \"values-file-7t\"\n",
    )
    .expect("values");
    let args = [
        "--values",
        "vals/values.yaml",
        "--var",
        "fromflag=command-line-8s",
    ];
    let with = |cmd: &[&str]| {
        let mut all: Vec<&str> = cmd.to_vec();
        all.extend_from_slice(&args);
        tenet(dir, &all)
    };
    ok(&with(&["apply", "--yes"]));
    ok(&with(&["plan"]));
    ok(&with(&["drift"]));
    std::fs::write(dir.join("out/v"), "drifted").expect("drift");
    ok(&with(&["apply", "--yes"]));
    let written = std::fs::read_to_string(dir.join("out/v")).expect("v");
    assert!(written.contains("values-file-7t") && written.contains("block-default-4w"));

    let mut needles: Vec<String> = secrets
        .iter()
        .flat_map(|(value, spelled)| {
            [
                value.to_string(),
                spelled.trim_matches(['"', '\'']).to_owned(),
            ]
        })
        .collect();
    needles.extend(
        [
            "block-default-4w",
            "literal-folded-5v",
            "literal-esc",
            "escaped-6u",
            "values-file-7t",
            "command-line-8s",
        ]
        .map(str::to_owned),
    );
    for (path, bytes) in state_bytes(dir) {
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} is in {} in clear",
                path.display()
            );
        }
    }
    // What is not secret is still recorded: the run can be read back.
    let o = tenet(dir, &["show", "1"]);
    ok(&o);
}

/// A values file with a `${…}` would be written literally: refused at its place.
#[test]
fn values_files_are_not_interpolated_and_say_so() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(
        dir,
        "vars:\n  name: {description: x}\nproviders:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\nresources:\n  - {id: a, type: file.file, properties: {path: ./out/a, content: \"${var.name}\"}}\n",
    );
    std::fs::create_dir(dir.join("vals")).expect("vals");
    std::fs::write(
        dir.join("vals/values.yaml"),
        "# prod\nname: \"${var.other}\"\n",
    )
    .expect("values");
    let o = tenet(dir, &["validate", "--values", "vals/values.yaml"]);
    fails_with(
        &o,
        "vals/values.yaml:2:7: error: the value of variable `name` in this values file contains `${`",
    );
}

/// Seen: 40 resources each keeping 200 MiB with `--parallelism 10` made tenet's peak RSS
/// 1.8 GiB under the default 256 MiB cap: pooled instances kept their memory. Now an
/// instance that grew large is retired after its call, and all instances together stay
/// within `memory_total`: growth past it fails the call, naming the budget.
#[test]
fn one_provider_holds_at_most_its_memory_budget() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut resources = String::new();
    for i in 0..24 {
        resources.push_str(&format!(
            "  - {{id: hog{i}, type: bad.probe, properties: {{path: ./out/h{i}, action: hold, value: 100}}}}\n"
        ));
    }
    misbehave(
        dir,
        "memory: 256MiB, memory_total: 512MiB, timeout: 20s",
        &resources,
    );
    // One call at a time: each instance that took 100 MiB is retired after its call, so
    // every call starts small (a pooled one would pile up 100 MiB per call and hit its
    // 256 MiB cap at the third).
    let (out, err, code, peak_kib) =
        crate::sandbox::run_measured(dir, &["plan", "--parallelism", "1"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    has(
        &out,
        "No changes. The system matches the manifest (24 resources).",
    );
    let peak_mib = peak_kib / 1024;
    eprintln!("peak RSS, 24 x 100 MiB one at a time: {peak_mib} MiB");
    assert!(peak_mib < 320, "peak RSS {peak_mib} MiB");

    // Ten at a time would be 1,000 MiB: the budget holds, refusing growth past it.
    let (out, err, _, peak_kib) =
        crate::sandbox::run_measured(dir, &["plan", "--parallelism", "10"], &[]);
    let peak_mib = peak_kib / 1024;
    eprintln!("peak RSS, 24 x 100 MiB ten at a time, budget 512 MiB: {peak_mib} MiB");
    assert!(peak_mib < 512 + 150, "peak RSS {peak_mib} MiB:\n{out}{err}");
    for line in out.lines().filter(|l| l.contains("failed to read")) {
        assert!(
            line.contains("memory budget exceeded: provider `bad` holds")
                && line.contains("its budget (`limits.memory_total`) is 512 MiB"),
            "{line}"
        );
    }
}

/// Seen: 29 `.fNNN.conf.tenet-XXXX-0.tmp` files beside managed files after 20 kills of a
/// 2,000-file apply. A write interrupted by SIGKILL leaves at most one temporary per file,
/// at a fixed name, and the next write of that file removes it.
#[test]
fn killed_applies_leave_no_temporary_files_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let files = 400;
    let manifest = |version: u32| {
        let mut m = String::from(
            "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\nresources:\n",
        );
        for d in 0..4 {
            m.push_str(&format!(
                "  - {{id: d{d}, type: file.directory, properties: {{path: ./out/d{d}}}}}\n"
            ));
        }
        for i in 0..files {
            m.push_str(&format!(
                "  - {{id: f{i}, type: file.file, properties: {{path: ./out/d{}/f{i}.conf, content: \"v{version} {i}\\n\"}}}}\n",
                i % 4
            ));
        }
        m
    };
    let count = |dir: &Path| -> (usize, Vec<String>) {
        let mut n = 0;
        let mut temps = Vec::new();
        for d in 0..4 {
            for e in std::fs::read_dir(dir.join(format!("out/d{d}"))).expect("ls") {
                let name = e.expect("entry").file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    temps.push(name);
                } else {
                    n += 1;
                }
            }
        }
        (n, temps)
    };
    write_manifest(dir, &manifest(0));
    ok(&tenet(dir, &["apply", "--yes"]));
    let mut killed_with_temps = 0;
    for round in 1..=6u32 {
        // Every file changes, so every file is rewritten; kill the run part-way.
        write_manifest(dir, &manifest(round));
        let (mut child, mut reader, _) = started_applying(dir, &["apply", "--yes"]);
        // Well inside the apply: wait until the first files changed, then kill.
        let mut applied = 0;
        while applied < 20 * u64::from(round) {
            let mut line = String::new();
            if reader.read_line(&mut line).expect("read") == 0 {
                break;
            }
            applied += u64::from(line.contains(" updated"));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        killed_with_temps += usize::from(!count(dir).1.is_empty());
    }
    // The next run converges and cleans up.
    ok(&tenet(dir, &["apply", "--yes"]));
    let (n, temps) = count(dir);
    assert_eq!(n, files, "every managed file, nothing else");
    assert!(temps.is_empty(), "temporaries left behind: {temps:?}");
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    eprintln!("{killed_with_temps} of 6 kills left a temporary file for the next run to remove");
}
