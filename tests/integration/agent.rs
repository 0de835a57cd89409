//! `tenet agent`: real processes, real files, real signals. The agent is started on a
//! temp manifest and driven the way an operator's hand would: edits, rename
//! replacements, deleted directories, bursts, an invalid manifest, SIGHUP, SIGTERM, a
//! second agent; its `/metrics` are checked with `promtool`.

use super::support::{self, tenet, tenet_command};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A GET (or POST) on the agent's endpoint: status and body.
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    support::http_request(addr, method, path, &[], "")
}

/// The sum of a metric's samples whose line contains every one of `having`.
fn metric(body: &str, name: &str, having: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| having.iter().all(|h| l.contains(h)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Send `sig` (`TERM`, `HUP`, …) to `pid`.
fn kill(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A manifest of `exec.command` resources (YAML list items) run by /bin/sh in ./out.
fn exec_manifest(resources: &str) -> String {
    format!(
        "providers:\n  exec:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n      \
         exec: [{{program: /bin/sh, args: [[-c, \"*\"]]}}]\nresources:\n{resources}"
    )
}

struct Agent {
    child: Child,
    addr: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Agent {
    /// Start the agent and wait for its first run to complete.
    fn start(dir: &Path, extra: &[&str]) -> Agent {
        let agent = Agent::spawn(dir, extra);
        agent.wait("the first run", Duration::from_secs(60), || {
            agent.get("/readyz").0 == 200
        });
        agent
    }

    /// Start the agent; back once it serves its endpoint.
    fn spawn(dir: &Path, extra: &[&str]) -> Agent {
        let mut args = vec!["agent", ".", "--listen", "127.0.0.1:0", "--interval", "1h"];
        args.extend_from_slice(extra);
        let mut child = tenet_command(dir, &args)
            .env("TENET_LOG", "tenet=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the agent");
        let (addr, stderr) = support::serving_address(&mut child);
        Agent {
            child,
            addr,
            stderr,
        }
    }

    /// Wait until `ok`, or fail showing what the agent logged and its metrics.
    fn wait(&self, what: &str, timeout: Duration, ok: impl FnMut() -> bool) {
        wait_until(what, timeout, ok, || {
            format!(
                "--- agent log:\n{}\n--- metrics:\n{}",
                self.stderr(),
                self.get("/metrics").1
            )
        });
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(&self.addr, "GET", path)
    }

    fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        body
    }

    fn runs(&self) -> f64 {
        metric(&self.metrics(), "tenet_agent_runs_total", &[])
    }

    fn signal(&self, sig: &str) {
        kill(self.child.id(), sig);
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGTERM, and the exit code.
    fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the agent did not stop: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MANIFEST: &str = concat!(
    "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\n",
    "resources:\n",
    "  - {id: conf, type: file.directory, properties: {path: ./out/conf}}\n",
    "  - {id: app, type: file.file, depends_on: [conf], properties: {path: ./out/conf/app.conf, content: \"port = 80\\n\"}}\n",
    "  - {id: motd, type: file.file, properties: {path: ./out/motd, content: \"hello\\n\"}}\n",
);

/// Poll `ok` until it holds, or fail after `timeout` with `context` (what the thing
/// waited on says about itself).
fn wait_until(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() <= timeout,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn the_agent_heals_hand_edits_renames_and_deleted_directories_and_counts_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).expect("out");
    support::write_manifest(dir, MANIFEST);
    let agent = Agent::start(dir, &["--debounce", "50ms"]);
    let app = dir.join("out/conf/app.conf");
    assert_eq!(read(&app), "port = 80\n", "converged at start");
    let (status, ready) = agent.get("/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(agent.get("/healthz").0, 200);

    // A hand edit is put back, and counted as drift repaired.
    std::fs::write(&app, "port = 8080\n").expect("edit");
    agent.wait("the edit to be put back", Duration::from_secs(10), || {
        read(&app) == "port = 80\n"
    });
    agent.wait("the drift to be counted", Duration::from_secs(5), || {
        let m = agent.metrics();
        metric(&m, "tenet_agent_drift_events_total", &[]) >= 1.0
            && metric(
                &m,
                "tenet_agent_changes_total",
                &["kind=\"corrective\"", "result=\"ok\""],
            ) >= 1.0
            && metric(&m, "tenet_agent_time_to_repair_seconds_count", &[]) >= 1.0
    });

    // Replaced by rename (an editor's atomic save): seen through the directory.
    let tmpfile = dir.join("out/conf/.app.conf.swp");
    std::fs::write(&tmpfile, "port = 9090\n").expect("write");
    std::fs::rename(&tmpfile, &app).expect("rename");
    agent.wait("the rename to be put back", Duration::from_secs(10), || {
        read(&app) == "port = 80\n"
    });

    // The whole directory deleted: recreated with its file, and watched again.
    std::fs::remove_dir_all(dir.join("out/conf")).expect("rm");
    agent.wait(
        "the directory to come back",
        Duration::from_secs(10),
        || read(&app) == "port = 80\n",
    );
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&app, "edited again\n").expect("edit");
    agent.wait(
        "an edit in the recreated directory",
        Duration::from_secs(10),
        || read(&app) == "port = 80\n",
    );

    // Settled: an unmanaged file beside managed ones wakes nothing, and the agent's
    // own writes did not wake it either (no run after the last repair).
    std::thread::sleep(Duration::from_millis(500));
    let before = agent.runs();
    std::fs::write(dir.join("out/conf/notes.txt"), "mine").expect("unmanaged");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(agent.runs(), before, "an unmanaged file woke the agent");

    // A burst of 1,000 edits: coalesced into at most one run per debounce window of
    // the burst (plus the one that ends it), and the file ends as desired.
    let burst = Instant::now();
    for i in 0..1000 {
        std::fs::write(&app, format!("burst {i}\n")).expect("burst");
    }
    let windows = (burst.elapsed().as_millis() / 50) as f64;
    agent.wait("the burst to be put back", Duration::from_secs(20), || {
        read(&app) == "port = 80\n"
    });
    std::thread::sleep(Duration::from_millis(500));
    let burst_runs = agent.runs() - before;
    assert!(
        burst_runs >= 1.0 && burst_runs <= windows + 3.0,
        "1,000 edits over {windows} debounce windows made {burst_runs} runs"
    );
    let m = agent.metrics();
    assert!(
        metric(&m, "tenet_agent_run_in_progress", &[]) == 0.0,
        "no run in flight once settled"
    );
    // The metrics and `tenet report` agree: one definition of compliance and drift.
    let report = tenet(dir, &["report", ".", "--json"]);
    support::ok(&report);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).expect("report --json");
    let rate = report["compliance_rate"]
        .as_f64()
        .expect("a compliance rate");
    assert!(
        (metric(&m, "tenet_agent_compliance_ratio", &[]) - rate).abs() < 1e-9,
        "report says {rate}:\n{m}"
    );
    assert_eq!(
        metric(&m, "tenet_agent_drift_events_total", &[]),
        report["drift_events"].as_f64().expect("drift events"),
        "{m}"
    );
    assert_eq!(
        metric(&m, "tenet_agent_time_to_repair_seconds_count", &[]),
        report["repairs"].as_f64().expect("repairs"),
        "{m}"
    );

    // promtool accepts what Prometheus would scrape.
    if let Some(promtool) = support::tool("promtool") {
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(m.as_bytes())
            .expect("feed promtool");
        let out = child.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}\n{m}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // No resource id or path is a label value.
    assert!(!m.contains("app.conf") && !m.contains("\"motd\""), "{m}");

    // A second agent on the same state refuses.
    let second = tenet(dir, &["agent", ".", "--once"]);
    support::fails_with(&second, "another agent manages this state");

    // An invalid manifest is reported and the last good one stays in force.
    support::write_manifest(dir, "resources: [ {id: broken\n");
    agent.wait("the reload failure", Duration::from_secs(10), || {
        metric(
            &agent.metrics(),
            "tenet_agent_manifest_reloads_total",
            &["result=\"invalid\""],
        ) >= 1.0
    });
    let (_, ready) = agent.get("/readyz");
    assert!(ready.contains("not reloaded"), "{ready}");
    std::fs::write(&app, "after a bad manifest\n").expect("edit");
    agent.wait(
        "healing under the last good manifest",
        Duration::from_secs(10),
        || read(&app) == "port = 80\n",
    );

    // A valid change is the desired state from the next run on; SIGHUP reloads too.
    support::write_manifest(dir, &MANIFEST.replace("port = 80", "port = 81"));
    agent.wait("the new manifest applied", Duration::from_secs(10), || {
        read(&app) == "port = 81\n"
    });
    support::write_manifest(dir, &MANIFEST.replace("port = 80", "port = 82"));
    agent.signal("HUP");
    agent.wait(
        "the manifest reloaded by SIGHUP",
        Duration::from_secs(10),
        || read(&app) == "port = 82\n",
    );

    assert_eq!(agent.stop(), Some(0), "SIGTERM: exit 0");
}

#[test]
fn detect_mode_changes_nothing_and_once_exits_with_the_outcome() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).expect("out");
    support::write_manifest(dir, MANIFEST);
    let first = tenet(dir, &["agent", ".", "--once"]);
    support::ok(&first);
    let motd = dir.join("out/motd");
    assert_eq!(read(&motd), "hello\n");
    std::fs::write(&motd, "edited\n").expect("edit");

    let detect = tenet(dir, &["agent", ".", "--once", "--mode", "detect"]);
    assert_eq!(
        detect.status.code(),
        Some(2),
        "drift found: exit 2\n{}",
        support::stderr(&detect)
    );
    assert_eq!(read(&motd), "edited\n", "detect never changes anything");
    let history = tenet(dir, &["history"]);
    support::has(&support::stdout(&history), "drift");

    let enforce = tenet(dir, &["agent", ".", "--once"]);
    support::ok(&enforce);
    assert_eq!(read(&motd), "hello\n", "enforce puts it back");
}

#[test]
fn a_resource_that_always_fails_backs_off_without_stopping_the_others() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).expect("out");
    // `blocked` can never be created: its parent is a file.
    std::fs::write(dir.join("out/blocker"), "a file").expect("blocker");
    let manifest = format!(
        "{MANIFEST}  - {{id: blocked, type: file.file, properties: {{path: ./out/blocker/x, content: \"x\"}}}}\n"
    );
    support::write_manifest(dir, &manifest);
    let agent = Agent::start(dir, &["--debounce", "50ms", "--retry", "200ms"]);
    agent.wait("retries that back off", Duration::from_secs(20), || {
        metric(
            &agent.metrics(),
            "tenet_agent_runs_total",
            &["outcome=\"failed\"", "trigger=\"retry\""],
        ) >= 2.0
    });
    let m = agent.metrics();
    assert!(
        metric(&m, "tenet_agent_consecutive_failures", &[]) >= 3.0,
        "{m}"
    );
    // Backoff: 3 failures took at least 200 + 400 ms of waiting (half jittered).
    let (_, ready) = agent.get("/readyz");
    assert!(
        ready.contains("blocked"),
        "the last error names the resource: {ready}"
    );
    // The others are still healed.
    let motd = dir.join("out/motd");
    std::fs::write(&motd, "edited\n").expect("edit");
    agent.wait(
        "the healthy resource put back",
        Duration::from_secs(10),
        || read(&motd) == "hello\n",
    );
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn sigterm_during_a_slow_apply_lets_the_run_finish_and_exits_zero() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).expect("out");
    support::write_manifest(
        dir,
        &exec_manifest(
            "  - {id: slow, type: exec.command, properties: {command: [/bin/sh, -c, \"sleep 1.5; echo done > done\"], cwd: ./out, creates: ./out/done}}\n",
        ),
    );
    let mut child = tenet_command(dir, &["agent", ".", "--interval", "1h"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The run is in flight once the command started (give it a moment past start-up).
    std::thread::sleep(Duration::from_millis(700));
    assert!(child.try_wait().expect("wait").is_none(), "still running");
    kill(child.id(), "TERM");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read(&dir.join("out/done")),
        "done\n",
        "the run in flight finished"
    );
    let history = tenet(dir, &["history"]);
    support::ok(&history);
    support::has(&support::stdout(&history), "apply");
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).expect("out");
    support::write_manifest(dir, MANIFEST);
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // As systemd starts a `Type=notify` service with `WatchdogSec=1`: the watchdog is
    // meant for the process whose pid is WATCHDOG_PID (the shell execs the agent).
    let mut child = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            "WATCHDOG_PID=$$ exec \"$0\" agent . --interval 1h",
            env!("CARGO_BIN_EXE_tenet"),
        ])
        .current_dir(dir)
        .env("TENET_CACHE_DIR", support::cache_dir())
        .env("TENET_CACHE_KEY", support::cache_key())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut heard = String::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while !(heard.contains("READY=1")
        && heard.contains("STATUS=last run")
        && heard.contains("WATCHDOG=1"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "heard only: {heard}"
        );
        let n = sock.recv(&mut buf).expect("a notification");
        heard.push_str(&String::from_utf8_lossy(&buf[..n]));
        heard.push('\n');
    }
    kill(child.id(), "TERM");
    while !heard.contains("STOPPING=1") {
        let n = sock.recv(&mut buf).expect("STOPPING=1");
        heard.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

#[test]
fn a_run_past_its_deadline_is_cancelled_failed_and_unhealthy_meanwhile() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).expect("out");
    support::write_manifest(
        dir,
        &exec_manifest(concat!(
            "  - {id: slow, type: exec.command, properties: {command: [/bin/sh, -c, \"sleep 2; echo done > done\"], cwd: ./out, creates: ./out/done}}\n",
            "  - {id: after, type: exec.command, depends_on: [slow], properties: {command: [/bin/sh, -c, \"echo after > after\"], cwd: ./out, creates: ./out/after}}\n",
        )),
    );
    let agent = Agent::spawn(dir, &["--run-timeout", "300ms", "--retry", "1h"]);
    agent.wait(
        "/healthz to say the run is past its deadline",
        Duration::from_secs(10),
        || agent.get("/healthz").0 == 503,
    );
    agent.wait("the run to end", Duration::from_secs(20), || {
        agent.get("/readyz").0 == 200
    });
    let (_, ready) = agent.get("/readyz");
    assert!(
        ready.contains("deadline") && ready.contains("\"failed\""),
        "{ready}"
    );
    assert_eq!(agent.get("/healthz").0, 200, "healthy again");
    assert!(
        !dir.join("out/after").exists(),
        "nothing new started after the deadline"
    );
    let m = agent.get("/metrics").1;
    assert!(
        metric(&m, "tenet_agent_runs_total", &["outcome=\"failed\""]) == 1.0,
        "{m}"
    );
}

/// The endpoint is what a remote peer can reach (with `--listen` off loopback): it
/// serves three reads and one trigger, and nothing a peer sends can do more than wake
/// one run, stop it answering, or stop the agent.
#[test]
fn the_endpoint_withstands_what_a_hostile_peer_sends() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).expect("out");
    support::write_manifest(dir, MANIFEST);
    let agent = Agent::start(dir, &["--no-watch"]);
    let runs = agent.runs();

    // Nothing but the four routes; no write methods.
    assert_eq!(agent.get("/state.db").0, 404);
    assert_eq!(agent.get("/../../etc/passwd").0, 404);
    for method in ["PUT", "DELETE", "PATCH"] {
        assert_eq!(http(&agent.addr, method, "/metrics").0, 405, "{method}");
        assert_eq!(http(&agent.addr, method, "/run").0, 405, "{method}");
    }
    assert_eq!(http(&agent.addr, "POST", "/metrics").0, 405);

    // Garbage, a header flood and a large body: refused or ignored, never a crash.
    let raw = |bytes: &[u8]| {
        let mut s = TcpStream::connect(&agent.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    raw(b"\x00\x01\x02 NOT HTTP\r\n\r\n");
    let mut flood = String::from("GET /metrics HTTP/1.1\r\nHost: x\r\n");
    for i in 0..5000 {
        flood.push_str(&format!("X-{i}: {}\r\n", "a".repeat(64)));
    }
    flood.push_str("\r\n");
    let answer = raw(flood.as_bytes());
    assert!(
        !answer.contains("tenet_agent_runs_total"),
        "a header flood was served"
    );
    let mut big = format!(
        "POST /run?mode=detect&path=/etc HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        8 << 20
    )
    .into_bytes();
    big.extend(std::iter::repeat_n(b'x', 8 << 20));
    raw(&big);

    // Idle connections held open do not stop it answering.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&agent.addr).expect("connect"))
        .collect();
    assert_eq!(agent.get("/healthz").0, 200);
    drop(idle);

    // What all that could do: wake runs (the parameters of /run ask for nothing).
    agent.wait("the woken run", Duration::from_secs(10), || {
        agent.runs() > runs
    });
    let m = agent.metrics();
    assert_eq!(
        metric(&m, "tenet_agent_runs_total", &["mode=\"enforce\""]),
        agent.runs(),
        "every run enforced the manifest as given: {m}"
    );
    assert_eq!(read(&dir.join("out/motd")), "hello\n");
    assert_eq!(agent.stop(), Some(0), "still alive, and stops cleanly");
}

/// Bounded history: with `--keep-runs`, every run's record is kept in a few hundred
/// bytes and the oldest runs are pruned after each run, while the chain still verifies.
#[test]
fn the_agent_keeps_a_bounded_history_that_still_verifies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).expect("out");
    support::write_manifest(dir, MANIFEST);
    let agent = Agent::start(dir, &["--keep-runs", "3", "--no-watch"]);
    for _ in 0..5 {
        let before = agent.runs();
        assert_eq!(http(&agent.addr, "POST", "/run").0, 202);
        agent.wait("the run asked for", Duration::from_secs(10), || {
            agent.runs() > before
                && metric(&agent.metrics(), "tenet_agent_run_in_progress", &[]) == 0.0
        });
    }
    agent.wait("the pruning", Duration::from_secs(5), || {
        metric(
            &agent.metrics(),
            "tenet_agent_history_pruned_runs_total",
            &[],
        ) >= 3.0
    });
    let history = tenet(dir, &["history", "--json"]);
    support::ok(&history);
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    let seqs: Vec<u64> = runs
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [6, 5, 4], "the newest three of six runs");
    let verify = tenet(dir, &["audit", "verify"]);
    support::ok(&verify);
    support::has(
        &support::stdout(&verify),
        "History intact: 3 runs after 3 pruned (runs up to #3",
    );
    let raw = rusqlite::Connection::open(dir.join(".tenet/state.db")).expect("raw");
    let stored: i64 = raw
        .query_row("SELECT length(record) FROM runs WHERE seq = 6", [], |r| {
            r.get(0)
        })
        .expect("run 6");
    assert!(stored < 1024, "a converged run stored in {stored} bytes");
    // The run read back whole: every resource counted in sync.
    assert_eq!(
        metric(
            &agent.metrics(),
            "tenet_agent_resources",
            &["state=\"in_sync\""]
        ),
        3.0
    );
    assert_eq!(agent.stop(), Some(0));
}

/// The service examples as written (`examples/agent/`): the systemd unit's `ExecStart`
/// with its environment, and the runit `run` script under a real `runsv` — started,
/// healing, reloaded by `sv hup`, stopped by `sv down`. Only the binary, the manifest
/// directory and the port are put where the test can have them.
#[test]
fn the_systemd_and_runit_examples_start_the_agent_as_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).expect("out");
    support::write_manifest(dir, MANIFEST);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let fill = |text: &str| -> String {
        let mut text = text.to_owned();
        for (written, here) in [
            ("/usr/local/bin/tenet", env!("CARGO_BIN_EXE_tenet")),
            ("/etc/tenet", &dir.display().to_string()),
            ("127.0.0.1:9464", &addr),
        ] {
            assert!(
                text.contains(written),
                "the example no longer says {written}"
            );
            text = text.replace(written, here);
        }
        text
    };
    let example = |name: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/agent")
                .join(name),
        )
        .expect("example")
    };
    let cache = [
        ("TENET_CACHE_DIR", support::cache_dir()),
        ("TENET_CACHE_KEY", support::cache_key()),
    ];

    // systemd: the command line and environment of the unit, for one run.
    let unit = example("tenet-agent.service");
    let exec = fill(
        unit.lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart"),
    );
    let env = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment="))
        .and_then(|e| e.split_once('='))
        .expect("Environment");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    let once = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .arg("--once")
        .env(env.0, env.1)
        .envs(cache.clone())
        .output()
        .expect("ExecStart");
    support::ok(&once);
    assert_eq!(read(&dir.join("out/motd")), "hello\n");

    // runit: the run script under runsv, as a supervisor would run it.
    let (Some(runsv), Some(sv)) = (support::tool("runsv"), support::tool("sv")) else {
        return;
    };
    let service = dir.join("sv/tenet-agent");
    std::fs::create_dir_all(&service).expect("service dir");
    let run = service.join("run");
    std::fs::write(&run, fill(&example("runit/tenet-agent/run"))).expect("run");
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    struct Supervised(Child, std::path::PathBuf, std::path::PathBuf);
    impl Drop for Supervised {
        fn drop(&mut self) {
            let _ = std::process::Command::new(&self.1)
                .args(["-w", "30", "force-shutdown"])
                .arg(&self.2)
                .output();
            let _ = std::process::Command::new(&self.1)
                .arg("exit")
                .arg(&self.2)
                .output();
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let supervised = Supervised(
        std::process::Command::new(runsv)
            .arg(&service)
            .envs(cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runsv"),
        sv.clone(),
        service.clone(),
    );
    let sv = |cmd: &str| {
        let o = std::process::Command::new(&sv)
            .arg(cmd)
            .arg(&service)
            .output()
            .expect("sv");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let wait = |what: &str, ok: &mut dyn FnMut() -> bool| {
        wait_until(what, Duration::from_secs(60), ok, || {
            format!("sv status: {}", sv("status"))
        });
    };
    let up = || TcpStream::connect(&addr).is_ok() && http(&addr, "GET", "/readyz").0 == 200;
    wait("the agent under runsv", &mut { up });
    let motd = dir.join("out/motd");
    std::fs::write(&motd, "edited\n").expect("edit");
    wait("the edit put back", &mut || read(&motd) == "hello\n");
    // `sv hup`: the manifest is loaded again.
    support::write_manifest(dir, &MANIFEST.replace("hello", "reloaded"));
    let _ = sv("hup");
    wait("the reloaded manifest applied", &mut || {
        read(&motd) == "reloaded\n"
    });
    // `sv down`: SIGTERM; the agent stops and runsv keeps it down.
    let _ = sv("down");
    wait("the agent to stop", &mut || {
        sv("status").starts_with("down:") && TcpStream::connect(&addr).is_err()
    });
    drop(supervised);
}

/// `--source`: the agent follows a channel tag in a real registry — a new signed
/// artifact is applied on the next poll and recorded in every run; an unsigned or
/// untrusted one is refused and the last good stays in force (across a restart with the
/// registry down too); a node pinned by digest stays where it is.
#[test]
fn the_agent_follows_a_signed_channel_and_keeps_the_last_good_when_refused() {
    use crate::artifacts::{pushed_digest, site};
    let Some(mut registry) = support::Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let s = |p: &str| d.join(p).display().to_string();
    support::key(d, "release");
    support::key(d, "stranger");
    let channel = format!("oci://{}/fleet/web:stable", registry.addr);
    let publish = |name: &str, signer: Option<&str>| {
        site(&d.join(name), d, name);
        let dir = s(name);
        let key = signer.map(|k| s(&format!("{k}.key")));
        let mut args = vec!["config", "push", &dir, &channel];
        match &key {
            Some(k) => args.extend(["--key", k.as_str()]),
            None => args.push("--unsigned"),
        }
        pushed_digest(&tenet(d, &args))
    };
    let motd = d.join("out/motd");
    let node = d.join("node");
    std::fs::create_dir_all(&node).expect("node");
    let trust = s("release.pub");
    let v1 = publish("v1", Some("release"));

    // Once: pulled, verified, applied, recorded with its digest.
    let o = tenet(
        &node,
        &[
            "agent", ".", "--once", "--source", &channel, "--trust", &trust,
        ],
    );
    support::ok(&o);
    assert_eq!(read(&motd), "v1\n");
    let artifact_of_runs = || -> Vec<String> {
        let h = tenet(&node, &["history", "--json"]);
        support::ok(&h);
        let runs: serde_json::Value = serde_json::from_slice(&h.stdout).expect("json");
        runs.as_array()
            .expect("runs")
            .iter()
            .map(|r| {
                assert_eq!(r["record"]["artifact"]["reference"], channel.as_str());
                r["record"]["artifact"]["digest"]
                    .as_str()
                    .expect("every run names its artifact")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(artifact_of_runs(), std::slice::from_ref(&v1));
    let shown = tenet(&node, &["show", "1"]);
    support::has(
        &support::stdout(&shown),
        &format!("artifact {v1} ({channel})"),
    );
    assert!(
        node.join(".tenet/state.db").is_file(),
        "the agent's own state"
    );

    // Following the channel.
    let agent = Agent::start(
        &node,
        &[
            "--source",
            &channel,
            "--trust",
            &trust,
            "--source-interval",
            "200ms",
            "--no-watch",
        ],
    );
    let v2 = publish("v2", Some("release"));
    agent.wait("v2 applied", Duration::from_secs(30), || {
        read(&motd) == "v2\n"
    });
    agent.wait("the artifact metric", Duration::from_secs(5), || {
        metric(
            &agent.metrics(),
            "tenet_agent_artifact_info",
            &[&format!("digest=\"{v2}\"")],
        ) == 1.0
    });
    // Moved to something unsigned, then to something a stranger signed: refused, the
    // last good stays, and each refused digest is pulled once, not on every poll.
    let failures = |reason: &str| {
        metric(
            &agent.metrics(),
            "tenet_agent_source_failures_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    let v3 = publish("v3", None);
    agent.wait("the unsigned one refused", Duration::from_secs(30), || {
        failures("unsigned") >= 1.0
    });
    publish("v4", Some("stranger"));
    agent.wait("the untrusted one refused", Duration::from_secs(30), || {
        failures("untrusted") >= 1.0
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        failures("untrusted"),
        1.0,
        "not pulled again while the tag stays"
    );
    assert_eq!(read(&motd), "v2\n", "the last good in force");
    support::has(&agent.stderr(), "not signed; refusing");
    support::has(&agent.stderr(), "which is not trusted");
    let v5 = publish("v5", Some("release"));
    agent.wait("v5 applied", Duration::from_secs(30), || {
        read(&motd) == "v5\n"
    });
    assert_eq!(agent.stop(), Some(0));
    let seen = artifact_of_runs();
    assert!(seen.contains(&v2) && seen.contains(&v5), "{seen:?}");
    let refused: Vec<&String> = seen
        .iter()
        .filter(|d| *d != &v1 && *d != &v2 && *d != &v5)
        .collect();
    assert!(
        refused.is_empty(),
        "no run of a refused artifact: {refused:?}"
    );

    // A forged roll-out selector on the channel (whoever can write tags can write one):
    // it can only choose an artifact, and the one it chooses is verified as always.
    use tenet::distribution::oci::{self, Blob, OciRef};
    use tenet::fleet::rollout::{EMPTY_MEDIA_TYPE, SELECTOR_MEDIA_TYPE};
    let ch = OciRef::parse(&channel).expect("channel");
    let forged = serde_json::json!({
        "format_version": 1, "rollout": 99, "next": v3, "previous": v3, "below": u64::MAX,
    });
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(oci::push_artifact(
            &ch.with_tag("forged"),
            Blob {
                data: serde_json::to_vec(&forged).expect("json"),
                media_type: SELECTOR_MEDIA_TYPE,
                title: None,
            },
            vec![Blob {
                data: b"{}".to_vec(),
                media_type: EMPTY_MEDIA_TYPE,
                title: None,
            }],
            Default::default(),
            &oci::Options::default(),
        ))
        .expect("push the forged selector");
    support::ok(&tenet(
        d,
        &["config", "tag", &ch.with_tag("forged").text, &channel],
    ));
    let o = tenet(
        &node,
        &[
            "agent", ".", "--once", "--source", &channel, "--trust", &trust,
        ],
    );
    support::ok(&o);
    support::has(&support::stderr(&o), "not signed; refusing");
    assert_eq!(read(&motd), "v5\n", "the last good in force");

    // Pinned by digest: the tag's moves do not concern it.
    let pinned = d.join("pinned");
    std::fs::create_dir_all(&pinned).expect("pinned");
    let at_v1 = format!("oci://{}/fleet/web@{v1}", registry.addr);
    support::ok(&tenet(
        &pinned,
        &[
            "agent", ".", "--once", "--source", &at_v1, "--trust", &trust,
        ],
    ));
    assert_eq!(read(&motd), "v1\n");

    // The registry away: a node keeps what it has; a new node has nothing to apply.
    registry.stop();
    let o = tenet(
        &node,
        &[
            "agent", ".", "--once", "--source", &channel, "--trust", &trust,
        ],
    );
    support::ok(&o);
    support::has(&support::stderr(&o), "cannot reach registry");
    support::has(
        &support::stderr(&o),
        "the last good desired state stays in force",
    );
    assert_eq!(read(&motd), "v5\n");
    let fresh = d.join("fresh");
    std::fs::create_dir_all(&fresh).expect("fresh");
    support::fails_with(
        &tenet(
            &fresh,
            &[
                "agent", ".", "--once", "--source", &channel, "--trust", &trust,
            ],
        ),
        "no desired state to apply",
    );
    // And --source without a trusted key is refused before anything is pulled.
    support::fails_with(
        &tenet(&fresh, &["agent", ".", "--once", "--source", &channel]),
        "--source needs --trust",
    );
}
