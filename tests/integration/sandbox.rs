//! The hostile-provider suite (issue 4): one run of `tenet apply` in which a provider
//! built from tests/guests/misbehave attacks the sandbox once per resource. Every attack
//! must fail its own resource with an error naming provider, resource and capability or
//! limit; the well-behaved resources of the same run must still converge; nothing outside
//! the grants may change; no forbidden HTTP request may reach a server; and the host's
//! peak memory must stay bounded.

use crate::support::{MISBEHAVE_WASM, snapshot, stderr, stdout, tenet, write_manifest};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A loopback TCP listener that answers every HTTP request with `200 ok` and records its
/// request line, to prove which requests reached a server at all.
struct HttpProbe {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

fn http_probe() -> HttpProbe {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            seen.lock().expect("lock").push(line.trim().to_owned());
            // Skip the headers; the test requests carry no body.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    HttpProbe { port, requests }
}

/// Run `tenet` and return its output, exit code and peak resident memory (KiB).
///
/// The peak is the kernel's high-water mark of the process's own memory (`VmHWM` in
/// /proc/PID/status, reset by exec), polled until it exits: `wait4`'s `ru_maxrss` would
/// also count the test process it was spawned from, which is large.
pub(crate) fn run_measured(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (String, String, i32, u64) {
    use std::process::Stdio;
    let mut child = crate::support::tenet_command(dir, args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tenet");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    (
        out.join().expect("stdout"),
        err.join().expect("stderr"),
        status.code().unwrap_or(-1),
        peak_kib,
    )
}

#[test]
fn hostile_providers_are_contained_and_the_rest_of_the_run_applies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let outside = tempfile::tempdir().expect("outside");
    let out = outside.path();
    std::fs::write(out.join("victim"), "untouched\n").expect("victim");
    std::fs::create_dir_all(dir.join("out")).expect("out");
    std::os::unix::fs::symlink(out, dir.join("out/link")).expect("symlink");
    let granted = http_probe();
    let other = http_probe();
    let before = snapshot(out);

    let d = dir.display();
    let o = out.display();
    let (gp, op) = (granted.port, other.port);
    // (id, properties): each attack, then the well-behaved resources.
    let attacks: Vec<(&str, String)> = vec![
        (
            "dotdot",
            format!("{{phase: apply, action: write, target: \"{d}/out/../escaped.txt\"}}"),
        ),
        (
            "absolute",
            format!("{{phase: apply, action: write, target: \"{o}/absolute.txt\"}}"),
        ),
        (
            "symlink-escape",
            format!("{{phase: apply, action: write, target: \"{d}/out/link/through-link.txt\"}}"),
        ),
        (
            "chmod-outside",
            format!("{{phase: apply, action: chmod, target: \"{o}/victim\"}}"),
        ),
        (
            "chown-outside",
            format!("{{phase: apply, action: chown, target: \"{o}/victim\"}}"),
        ),
        (
            "chmod-through-link",
            format!("{{phase: apply, action: chmod, target: \"{d}/out/link/victim\"}}"),
        ),
        (
            "write-during-plan",
            format!("{{action: write, target: \"{d}/out/plan.txt\"}}"),
        ),
        (
            "defect-after-many-refusals",
            format!(
                "{{action: refusals-then-chmod, target: \"{d}/out/id-defect-after-many-refusals\"}}"
            ),
        ),
        (
            "exec-ungranted",
            format!("{{action: exec, target: /bin/rm, args: [-rf, \"{o}\"]}}"),
        ),
        (
            "exec-bad-args",
            "{phase: apply, action: exec, target: /bin/sleep, args: [\"1\", \"2\"]}".to_owned(),
        ),
        (
            "exec-during-plan",
            "{action: exec, target: /bin/sleep, args: [\"0\"]}".to_owned(),
        ),
        (
            "exec-sneaky",
            "{action: exec-ignore, target: /bin/sleep, args: [\"0\"]}".to_owned(),
        ),
        (
            "http-ungranted",
            format!("{{action: http, target: \"http://127.0.0.1:{op}/steal\"}}"),
        ),
        (
            "http-post-during-plan",
            format!("{{action: http, method: POST, target: \"http://127.0.0.1:{gp}/mutate\"}}"),
        ),
        (
            "env-ungranted",
            "{action: env, target: TENET_TEST_SECRET, value: s3cret}".to_owned(),
        ),
        ("loop", "{action: loop}".to_owned()),
        ("recurse", "{action: recurse}".to_owned()),
        ("panic", "{action: panic}".to_owned()),
        ("memory-bomb", "{action: alloc}".to_owned()),
        ("output-flood", "{action: output-flood}".to_owned()),
        (
            "block-in-host",
            "{action: block, target: /bin/sleep, args: [\"30\"]}".to_owned(),
        ),
        ("malformed-json", "{action: malformed-json}".to_owned()),
        ("bad-schema", "{action: bad-schema}".to_owned()),
        ("lying-apply", "{action: lying-apply}".to_owned()),
    ];
    let mut body = format!(
        "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n      \
         exec:\n        - {{program: /bin/echo, args: [[\"**\"]], mode: probe}}\n        - {{program: /bin/sleep, args: [[\"*\"]]}}\n      \
         net: [\"http://127.0.0.1:{gp}\"]\n      env: [TENET_TEST_GRANTED]\n    \
         limits: {{memory: 64MiB, timeout: 2s, output: 1MiB, log_lines: 100}}\n  \
         file:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\nresources:\n"
    );
    let mut add = |id: &str, props: &str| {
        // Each probe needs its own identity (`path`); it is never written.
        let props = props.replacen('{', &format!("{{path: ./out/id-{id}, "), 1);
        body.push_str(&format!(
            "  - {{id: {id}, type: bad.probe, properties: {props}}}\n"
        ));
    };
    for (id, props) in &attacks {
        add(id, props);
    }
    add(
        "good-echo",
        "{action: exec, target: echo, args: [hello, world]}",
    );
    add(
        "good-http",
        &format!("{{action: http, target: \"http://127.0.0.1:{gp}/health\"}}"),
    );
    add(
        "good-env",
        "{action: env, target: TENET_TEST_GRANTED, value: granted-value}",
    );
    add("log-flood", "{action: log-flood}");
    body.push_str(
        "  - {id: good-file, type: file.file, properties: {path: ./out/good.txt, content: fine}}\n",
    );
    write_manifest(dir, &body);

    // Compile the providers into the cache first: the measured run is about containing
    // the attacks, not about Cranelift's own memory on a cold cache (~140 MiB).
    let warm = tenet(dir, &["validate"]);
    assert_eq!(warm.status.code(), Some(0), "{}", stderr(&warm));
    let (stdout_text, stderr_text, code, peak_kib) = run_measured(
        dir,
        &["apply", "--yes", "--json"],
        &[
            ("TENET_TEST_SECRET", "s3cret"),
            ("TENET_TEST_GRANTED", "granted-value"),
        ],
    );
    assert_eq!(code, 1, "stdout:\n{stdout_text}\nstderr:\n{stderr_text}");
    let finished: BTreeMap<String, serde_json::Value> = stdout_text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "resource_finished")
        .map(|e| (e["id"].as_str().unwrap_or_default().to_owned(), e))
        .collect();

    // What each attack's error must say besides the provider and the resource.
    let expected: &[(&str, &[&str])] = &[
        ("dotdot", &["capability denied", "escaped.txt"]),
        ("absolute", &["capability denied", "absolute.txt"]),
        ("symlink-escape", &["capability denied", "through-link.txt"]),
        (
            "chmod-outside",
            &["outside every directory granted", "capability fs write"],
        ),
        (
            "chown-outside",
            &["outside every directory granted", "capability fs write"],
        ),
        (
            "chmod-through-link",
            &["leaves the grant", "through a symlink"],
        ),
        ("write-during-plan", &["capability denied", "plan.txt"]),
        (
            "defect-after-many-refusals",
            &["provider defect", "capability fs write"],
        ),
        (
            "exec-ungranted",
            &["program `/bin/rm` is not granted", "capability exec"],
        ),
        (
            "exec-bad-args",
            &["no granted argument pattern matches", "capability exec"],
        ),
        (
            "exec-during-plan",
            &["provider defect", "mode: probe", "capability exec"],
        ),
        (
            "exec-sneaky",
            &["provider defect", "mode: probe", "capability exec"],
        ),
        ("http-ungranted", &["no net grant", "capability net"]),
        (
            "http-post-during-plan",
            &["provider defect", "only GET and HEAD", "capability net"],
        ),
        ("env-ungranted", &["TENET_TEST_SECRET is not visible"]),
        ("loop", &["deadline exceeded", "2s"]),
        ("recurse", &["provider trapped", "wasm trap"]),
        ("panic", &["provider trapped", "panicked on purpose"]),
        ("memory-bomb", &["memory limit exceeded", "64 MiB"]),
        ("output-flood", &["output limit exceeded", "stdout"]),
        ("block-in-host", &["the host stopped the program"]),
        ("malformed-json", &["contract violation", "not valid JSON"]),
        (
            "bad-schema",
            &["contract violation", "does not match the schema"],
        ),
        ("lying-apply", &["inconsistent result"]),
    ];
    assert_eq!(expected.len(), attacks.len());
    let mut wrong = Vec::new();
    for (id, needles) in expected {
        let e = &finished[*id];
        let error = e["error"].as_str().unwrap_or_default();
        let named = error.contains("`bad`") && error.contains(&format!("`{id}`"));
        if e["outcome"] != "failed" || !named || !needles.iter().all(|n| error.contains(n)) {
            wrong.push(format!("{id}: {e}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "attacks not contained as expected:\n{}",
        wrong.join("\n")
    );

    // The well-behaved resources of the same run converged.
    for id in [
        "good-echo",
        "good-http",
        "good-env",
        "log-flood",
        "good-file",
    ] {
        let outcome = finished.get(id).map(|e| e["outcome"].clone());
        assert!(
            outcome.is_none()
                || matches!(
                    outcome.as_ref().and_then(|o| o.as_str()),
                    Some("created" | "unchanged")
                ),
            "{id}: {outcome:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("out/good.txt")).expect("good"),
        "fine"
    );
    assert!(
        stderr_text.contains("log messages dropped (limit 100 per call)"),
        "{stderr_text}"
    );

    // Nothing outside the grants changed, and nothing was written during the plan.
    assert_eq!(
        snapshot(out),
        before,
        "the directory outside the grants changed"
    );
    assert!(!dir.join("escaped.txt").exists());
    assert!(!dir.join("out/plan.txt").exists());
    // Only GET requests reached the granted server; none reached the other one.
    let seen = granted.requests.lock().expect("lock").clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|r| r.starts_with("GET /health")),
        "{seen:?}"
    );
    assert!(other.requests.lock().expect("lock").is_empty());

    // Bounded host memory: 100 MB of output, a 1 GiB allocation and a deep recursion
    // did not reach the host. (Measured at about 36 MiB; 96 MiB leaves room for noise but
    // not for 100 MB of buffered output.)
    eprintln!("peak RSS of the hostile run: {} KiB", peak_kib);
    assert!(peak_kib < 96 * 1024, "peak RSS {peak_kib} KiB");
}

#[test]
fn imports_without_a_matching_grant_are_refused_at_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(
        dir,
        &format!(
            "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\nresources:\n  - {{id: p, type: bad.probe, properties: {{path: ./p, action: ok}}}}\n"
        ),
    );
    let o = tenet(dir, &["validate"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "provider `bad` imports `tenet:host/exec@0.1.1`, which needs the `exec` grant"
        ),
        "{err}"
    );

    // With only exec granted, the HTTP import is the one refused.
    write_manifest(
        dir,
        &format!(
            "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    grants:\n      exec: [{{program: /bin/echo}}]\nresources:\n  - {{id: p, type: bad.probe, properties: {{path: ./p, action: ok}}}}\n"
        ),
    );
    let err = stderr(&tenet(dir, &["validate"]));
    assert!(
        err.contains("imports `wasi:http/outgoing-handler@0.2")
            && err.contains("needs the `net` grant"),
        "{err}"
    );
}

#[test]
fn providers_and_plans_show_requested_granted_and_missing_capabilities() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(
        dir,
        &format!(
            "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    grants:\n      \
             fs: [{{path: ./out, access: rw}}]\n      \
             exec: [{{program: /bin/echo, args: [[\"**\"]], mode: probe}}]\n      net: [\"http://127.0.0.1:*\"]\n\
             resources:\n  - {{id: p, type: bad.probe, properties: {{path: ./out/p, action: ok}}}}\n"
        ),
    );
    let o = tenet(dir, &["providers"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    for line in [
        "    exec /bin/echo [**] (probe)",
        "    net http://127.0.0.1:*",
        "    exec /bin/echo (probe)  (granted: says hello during plans)",
        "    net http://127.0.0.1:*  (granted: talks to a test server)",
        "    env TENET_TEST_GRANTED  (MISSING: reads a granted variable)",
        "    fs rw /nonexistent-misbehave  (MISSING: a directory nobody grants)",
        "    import tenet:host/exec@0.1.1",
        "  missing: 2 (see MISSING above)",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    let o = tenet(dir, &["plan"]);
    let text = stdout(&o);
    assert!(
        text.contains("Sandbox (what each provider may do):"),
        "{text}"
    );
    assert!(
        text.contains("; exec /bin/echo [**] (probe); net http://127.0.0.1:*\n"),
        "{text}"
    );
    assert!(
        text.contains("    not granted: env TENET_TEST_GRANTED (reads a granted variable)"),
        "{text}"
    );
    let o = tenet(dir, &["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("plan JSON");
    assert_eq!(
        plan["providers"]["bad"]["granted"],
        serde_json::json!([
            format!("fs rw {}", dir.join("out").display()),
            "exec /bin/echo [**] (probe)",
            "net http://127.0.0.1:*"
        ])
    );
    assert_eq!(
        plan["providers"]["bad"]["missing"].as_array().map(Vec::len),
        Some(2)
    );
}

/// The built-in `exec` provider end to end: guards run as probes during plans, a command
/// runs once and then stays converged, and a `refresh_only` handler runs only when a
/// resource that notifies it changed in the same run.
#[test]
fn exec_commands_converge_and_handlers_run_only_when_notified() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let out = dir.join("out");
    write_manifest(
        dir,
        "vars:\n  v: 1\n\
         providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\n  \
         exec:\n    grants:\n      fs: [{path: ./out, access: rw}]\n      exec:\n        \
         - {program: /bin/sh, args: [[-c, \"*\"]]}\n        \
         - {program: /usr/bin/test, args: [[-e, \"*\"]], mode: probe}\n\
         resources:\n  \
         - {id: config, type: file.file, properties: {path: ./out/app.conf, content: \"v=${var.v}\\n\"}, notify: [reload]}\n  \
         - id: init\n    type: exec.command\n    properties:\n      \
         command: [/bin/sh, -c, \"echo once >> init.log\"]\n      cwd: ./out\n      \
         unless: [/usr/bin/test, -e, init.log]\n  \
         - id: reload\n    type: exec.command\n    properties:\n      \
         command: [/bin/sh, -c, \"echo reloaded >> reloads.log\"]\n      cwd: ./out\n      refresh_only: true\n",
    );
    let lines = |name: &str| {
        std::fs::read_to_string(out.join(name))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };

    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("reload (exec.command) refreshed (notified)"),
        "{}",
        stdout(&o)
    );
    assert_eq!((lines("init.log"), lines("reloads.log")), (1, 1));

    // Converged: a second apply runs nothing.
    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("No changes."), "{}", stdout(&o));
    assert_eq!((lines("init.log"), lines("reloads.log")), (1, 1));

    // A changed config plans a refresh of its handler, and the plan runs nothing.
    let o = tenet(dir, &["plan", "--var", "v=2", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("reload (exec.command) will be refreshed: notified by `config`"),
        "{text}"
    );
    assert!(text.contains("1 to refresh."), "{text}");
    assert_eq!((lines("init.log"), lines("reloads.log")), (1, 1));

    let o = tenet(dir, &["apply", "--yes", "--var", "v=2"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!((lines("init.log"), lines("reloads.log")), (1, 2));

    // Drift: the guard notices the marker is gone, and the command runs again.
    std::fs::remove_file(out.join("init.log")).expect("rm");
    let o = tenet(dir, &["apply", "--yes", "--var", "v=2"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("init (exec.command) created"),
        "{}",
        stdout(&o)
    );
    assert_eq!((lines("init.log"), lines("reloads.log")), (1, 2));

    // A guard that is not a granted probe cannot run during a plan.
    let manifest = std::fs::read_to_string(dir.join("tenet.yaml")).expect("read");
    write_manifest(dir, &manifest.replace(", mode: probe", ""));
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains("provider defect") && text.contains("mode: probe") && text.contains("`init`"),
        "{text}"
    );
}

/// Issue 14: what a provider declares about itself (`execution.settings`) is checked at
/// load. Environment values that load code or point a granted program at planted
/// binaries, a concurrency of 0, a lock that is not a name, a batched kind it does not
/// have: each is refused, naming the provider and what it declared.
#[test]
fn hostile_execution_settings_are_refused_at_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(
        dir,
        &format!(
            "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n      exec: [{{program: /bin/echo}}]\n      net: [http://127.0.0.1:1]\n      env: [MISBEHAVE_SETTINGS]\nresources:\n  - {{id: p, type: bad.probe, properties: {{path: ./out/p, action: ok}}}}\n"
        ),
    );
    for (mode, expected) in [
        (
            "ld-preload",
            "fixed environment variable `LD_PRELOAD` is not one a provider may set",
        ),
        (
            "planted-path",
            "fixed `PATH=/tmp:/usr/bin` may list only the system directories",
        ),
        ("zero", "max-concurrency 0"),
        ("bad-lock", "`../dpkg` is not a lock name"),
        (
            "phantom-kind",
            "batched kind `nope` is not one of its kinds",
        ),
    ] {
        let o = crate::support::tenet_command(dir, &["validate"])
            .env("MISBEHAVE_SETTINGS", mode)
            .output()
            .expect("tenet");
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{mode}: {err}");
        assert!(
            err.contains("provider `bad`") && err.contains(expected),
            "{mode}: {err}"
        );
    }
    // Declaring nothing loads.
    let o = crate::support::tenet_command(dir, &["validate"])
        .env("MISBEHAVE_SETTINGS", "none")
        .output()
        .expect("tenet");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Issue 14: a provider that batches reads is read in one call, and one that answers a
/// batch with the wrong number of states fails every resource of that batch (naming
/// each) instead of pairing states with the wrong resources.
#[test]
fn a_short_batch_fails_its_resources_and_never_shifts_states() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let manifest = |second: &str| {
        format!(
            "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n      exec: [{{program: /bin/echo}}]\n      net: [http://127.0.0.1:1]\n      env: [MISBEHAVE_SETTINGS]\nresources:\n  - {{id: one, type: bad.probe, properties: {{path: ./out/p1, action: ok}}}}\n  - {{id: two, type: bad.probe, properties: {{path: ./out/p2, action: {second}}}}}\n"
        )
    };
    let plan = |dir: &std::path::Path| {
        crate::support::tenet_command(dir, &["plan", "--json"])
            .env("MISBEHAVE_SETTINGS", "batch")
            .output()
            .expect("tenet")
    };
    write_manifest(dir, &manifest("ok"));
    let o = plan(dir);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    write_manifest(dir, &manifest("short-batch"));
    let o = plan(dir);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        out.contains("read-many returned 1 states for 2 resources"),
        "{out}"
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("plan json");
    for r in plan["resources"].as_array().expect("resources") {
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("contract violation")),
            "{r}"
        );
    }
}
