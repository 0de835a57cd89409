//! Fleet reports (issue 18): real agent processes report their runs to `tenet fleet
//! serve`, which stores them in a real PostgreSQL; the database goes away in the middle
//! (a proxy the test cuts) and the nodes catch up with nothing lost and nothing stored
//! twice; the fleet queries answer from what was stored; a node cannot report for
//! another, and what a hostile peer sends is refused.

use crate::support::{PgSchema, fails_with, has, ok, stdout, tenet, tenet_command};
use serde_json::Value;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TCP proxy to PostgreSQL that the test can cut (every connection through it closed,
/// new ones refused: the database is down for whoever uses it) and restore.
struct Proxy {
    addr: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(to: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (u, c, to) = (up.clone(), conns.clone(), to.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !u.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&to) else {
                    continue;
                };
                if let Ok(mut all) = c.lock() {
                    all.extend(client.try_clone().ok());
                    all.extend(server.try_clone().ok());
                }
                for (mut from, mut into) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut all) = self.conns.lock() {
            for c in all.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `tenet fleet serve` on a free loopback port; killed when dropped.
struct Service {
    child: Child,
    addr: String,
}

impl Service {
    fn start(dir: &Path, db: &str) -> Service {
        let mut child = tenet_command(
            dir,
            &["fleet", "serve", "--db", db, "--listen", "127.0.0.1:0"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fleet serve");
        let (addr, _) = crate::support::serving_address(&mut child);
        Service { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A raw request: status and body.
    fn request(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut headers = vec!["Content-Type: application/json"];
        headers.extend(auth.as_deref());
        crate::support::http_request(&self.addr, method, path, &headers, body)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(o), crate::support::stderr(o)))
}

/// A node's directory: a manifest of files under its own `out/`, and its token.
fn node(d: &Path, name: &str, db: &str, extra: &str) -> std::path::PathBuf {
    let dir = d.join(name);
    std::fs::create_dir_all(dir.join("out")).expect("node");
    crate::support::write_manifest(
        &dir,
        &format!(
            concat!(
                "providers:\n  file:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n",
                "resources:\n",
                "  - {{id: motd, type: file.file, properties: {{path: ./out/motd, content: \"hello\\n\"}}}}\n",
                "  - {{id: app, type: file.file, properties: {{path: ./out/app.conf, content: \"port = 80\\n\"}}}}\n",
                "{}"
            ),
            extra
        ),
    );
    ok(&tenet(
        d,
        &[
            "fleet",
            "enroll",
            name,
            "--db",
            db,
            "--label",
            "role=web",
            "--token-file",
            &dir.join("token").display().to_string(),
        ],
    ));
    dir
}

/// One agent run of `dir` reporting to `service` as its directory's name.
fn run(dir: &Path, service: &Service) -> std::process::Output {
    let name = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    tenet(
        dir,
        &[
            "agent",
            ".",
            "--once",
            "--node-id",
            &name,
            "--report",
            &service.url(),
            "--report-token-file",
            "token",
        ],
    )
}

fn report_json(node: &str, seq: u64, started_at: &str) -> String {
    serde_json::json!([{
        "version": 1, "node": node, "seq": seq, "hash": "h", "command": "apply",
        "started_at": started_at, "finished_at": started_at, "outcome": "converged",
        "counts": {"resources": 1, "in_sync": 1, "changed": 0, "corrective": 0, "drifted": 0, "failed": 0},
        "facts": {}, "events": [], "policy": {"denied": [], "warnings": 0},
        "agent_version": "test"
    }])
    .to_string()
}

#[test]
fn agents_report_runs_that_survive_a_database_outage_once_each_and_answer_fleet_queries() {
    let Some(schema) = PgSchema::new("fleet") else {
        return;
    };
    let pg_host = schema
        .base
        .split('@')
        .nth(1)
        .and_then(|h| h.split('/').next())
        .expect("host:port")
        .to_owned();
    let proxy = Proxy::start(&pg_host);
    let db = schema.url().replace(&pg_host, &proxy.addr);
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let web1 = node(d, "web-1", &db, "");
    let web2 = node(d, "web-2", &db, "");
    // web-3 has a resource that can never be created (its parent is a file).
    let web3 = node(
        d,
        "web-3",
        &db,
        "  - {id: blocked, type: file.file, properties: {path: ./out/blocker/x, content: x}}\n",
    );
    std::fs::write(web3.join("out/blocker"), "a file").expect("blocker");
    let service = Service::start(d, &db);

    // Each node: a first run (changes), a second (converged).
    for n in [&web1, &web2, &web3] {
        run(n, &service);
        run(n, &service);
    }
    // Someone edits web-2's file: the next run puts it back (a corrective change).
    std::fs::write(web2.join("out/app.conf"), "port = 8080\n").expect("edit");
    ok(&run(&web2, &service));

    let fleet = |args: &[&str]| {
        let mut all = vec!["fleet"];
        all.extend_from_slice(args);
        all.extend(["--db", &db]);
        tenet(d, &all)
    };
    let status = fleet(&["status", "--json"]);
    assert_eq!(
        status.status.code(),
        Some(2),
        "a failed node: exit 2: {}{}",
        stdout(&status),
        crate::support::stderr(&status)
    );
    let st = json(&status);
    assert_eq!(st["nodes"], 3);
    assert_eq!(st["by_outcome"]["converged"], 1, "{st}");
    assert_eq!(st["by_outcome"]["changed"], 1, "{st}");
    assert_eq!(st["by_outcome"]["failed"], 1, "{st}");
    assert_eq!(st["not_reporting"], 0);
    assert_eq!(st["resources"], 7);
    assert_eq!(st["in_sync"], 6, "all but web-3's failed one: {st}");
    let text = stdout(&fleet(&["status"]));
    has(&text, "3 nodes; compliance 85.7% (6 of 7 resources");
    let failed = json(&fleet(&["nodes", "--outcome", "failed", "--json"]));
    assert_eq!(failed.as_array().expect("rows").len(), 1);
    assert_eq!(failed[0]["name"], "web-3");
    let drift = json(&fleet(&["drift", "--json"]));
    assert_eq!(drift[0]["resource"], "app", "{drift}");
    assert_eq!(drift[0]["nodes"], 1);
    let failures = json(&fleet(&["failures", "--json"]));
    assert!(
        failures
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["node"] == "web-3"),
        "{failures}"
    );

    // The database away: runs go on and are recorded locally; nothing is lost.
    proxy.cut();
    for _ in 0..3 {
        let o = run(&web1, &service);
        ok(&o);
        has(
            &crate::support::stderr(&o),
            "the runs not delivered are sent by the next start",
        );
        has(
            &crate::support::stderr(&o),
            "the fleet database is unavailable",
        );
        assert!(
            !crate::support::stderr(&o).contains("schema="),
            "no database detail leaks to nodes"
        );
    }
    let (code, _) = service.request("GET", "/healthz", None, "");
    assert_eq!(code, 503, "the service says the database is away");
    proxy.restore();
    ok(&run(&web1, &service));
    let runs = json(&fleet(&["runs", "web-1", "--json", "--limit", "100"]));
    let seqs: Vec<u64> = runs
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [6, 5, 4, 3, 2, 1], "every run once, in order");
    // Sent again from the start (a lost cursor): stored once still.
    std::fs::remove_file(web1.join(".tenet/state.reported")).expect("cursor");
    ok(&run(&web1, &service));
    let again = json(&fleet(&["runs", "web-1", "--json", "--limit", "100"]));
    assert_eq!(again.as_array().expect("runs").len(), 7);
    let (code, body) = service.request("GET", "/healthz", None, "");
    assert_eq!(code, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("json");
    assert!(
        health["duplicates"].as_u64().expect("dups") >= 6,
        "{health}"
    );

    // No node reports for another; what a hostile peer sends is refused.
    let token1 = std::fs::read_to_string(web1.join("token")).expect("token");
    let token1 = token1.trim();
    let (code, body) = service.request(
        "POST",
        "/v1/reports",
        Some(token1),
        &report_json("web-2", 99, "2026-12-07T10:00:00Z"),
    );
    assert_eq!(code, 403, "{body}");
    has(&body, "a node reports only for itself");
    let (code, _) = service.request(
        "POST",
        "/v1/reports",
        Some("tnt_forged"),
        &report_json("web-1", 99, "2026-12-07T10:00:00Z"),
    );
    assert_eq!(code, 401);
    let (code, _) = service.request("POST", "/v1/reports", None, "[]");
    assert_eq!(code, 401);
    let (code, body) = service.request("POST", "/v1/reports", Some(token1), "{not json");
    assert_eq!(code, 400, "{body}");
    let many: Vec<Value> = (0..201)
        .map(|i| {
            serde_json::from_str::<Vec<Value>>(&report_json(
                "web-1",
                500 + i,
                "2026-12-07T10:00:00Z",
            ))
            .expect("json")
            .remove(0)
        })
        .collect();
    let (code, body) = service.request(
        "POST",
        "/v1/reports",
        Some(token1),
        &serde_json::to_string(&many).expect("json"),
    );
    assert_eq!(code, 413, "{body}");
    let mut bad: Vec<Value> =
        serde_json::from_str(&report_json("web-1", 98, "yesterday")).expect("json");
    bad[0]["outcome"] = "excellent".into();
    bad[0]["node"] = "web-1".into();
    let (code, body) = service.request(
        "POST",
        "/v1/reports",
        Some(token1),
        &serde_json::to_string(&bad).expect("json"),
    );
    assert_eq!(code, 422, "{body}");
    has(&body, "outcome `excellent`");
    has(&body, "`started_at` `yesterday` is not an RFC 3339 time");
    // A deactivated node's token stops working.
    ok(&fleet(&["deactivate", "web-3"]));
    let token3 = std::fs::read_to_string(web3.join("token")).expect("token");
    let (code, _) = service.request(
        "POST",
        "/v1/reports",
        Some(token3.trim()),
        &report_json("web-3", 99, "2026-12-07T10:00:00Z"),
    );
    assert_eq!(code, 401);
    assert_eq!(json(&fleet(&["status", "--json"]))["nodes"], 2);

    // Retention drops whole days: a report from five days ago, then keep two days.
    let five_days_ago = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - Duration::from_secs(5 * 86_400),
    )
    .to_string();
    let (code, body) = service.request(
        "POST",
        "/v1/reports",
        Some(token1),
        &report_json("web-1", 1000, &five_days_ago),
    );
    assert_eq!(code, 200, "{body}");
    has(&body, "\"accepted\":1");
    let runs = json(&fleet(&["runs", "web-1", "--json", "--limit", "100"]));
    assert!(
        runs.as_array()
            .expect("runs")
            .iter()
            .any(|r| r["run_seq"] == 1000)
    );
    let o = fleet(&["maintain", "--keep-days", "2"]);
    ok(&o);
    has(&stdout(&o), "2 dropped");
    let runs = json(&fleet(&["runs", "web-1", "--json", "--limit", "100"]));
    assert!(
        !runs
            .as_array()
            .expect("runs")
            .iter()
            .any(|r| r["run_seq"] == 1000)
    );
    assert_eq!(runs.as_array().expect("runs").len(), 7, "today's kept");
    fails_with(&fleet(&["deactivate", "nobody"]), "no node `nobody`");
}

/// A desired state for every node: `motd` and `app.conf` under `${var.root}/out`, the
/// node passing its own root; `broken` adds a resource no node can create.
fn release(dir: &Path, text: &str, broken: bool) {
    std::fs::create_dir_all(dir).expect("release dir");
    let extra = if broken {
        "  - {id: broken, type: file.file, properties: {path: \"${ var.root }/out/motd/x\", content: x}}\n"
    } else {
        ""
    };
    crate::support::write_manifest(
        dir,
        &format!(
            concat!(
                "vars:\n  root: {{default: /nonexistent}}\n",
                "providers:\n  file:\n    grants:\n      fs: [{{path: \"${{ var.root }}/out\", access: rw}}]\n",
                "resources:\n",
                "  - {{id: motd, type: file.file, properties: {{path: \"${{ var.root }}/out/motd\", content: \"{text}\\n\"}}}}\n",
                "{extra}"
            ),
            text = text,
            extra = extra
        ),
    );
}

/// Staged roll-outs against a real registry and database, with real agents (one run
/// each per round): a release that passes every wave, one that fails its first wave and
/// is rolled back, and one whose controller is killed mid-way, refused a second
/// controller, and resumed.
#[test]
fn rollouts_advance_by_wave_roll_back_a_failing_release_and_resume_after_a_crash() {
    let Some(schema) = PgSchema::new("rollout") else {
        return;
    };
    let Some(registry) = crate::support::Registry::start() else {
        return;
    };
    let db = schema.url();
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let s = |p: &str| d.join(p).display().to_string();
    crate::support::key(d, "release");
    let repo = format!("oci://{}/fleet/site", registry.addr);
    let channel = format!("{repo}:stable");
    let push = |name: &str, text: &str, broken: bool| -> String {
        release(&d.join(name), text, broken);
        crate::artifacts::pushed_digest(&tenet(
            d,
            &[
                "config",
                "push",
                &s(name),
                &format!("{repo}:{name}"),
                "--key",
                &s("release.key"),
            ],
        ))
    };
    let v1 = push("v1", "one", false);
    ok(&tenet(
        d,
        &["config", "tag", &format!("{repo}@{v1}"), &channel],
    ));
    let service = Service::start(d, &db);
    let nodes: Vec<std::path::PathBuf> = (1..=5)
        .map(|i| {
            let name = format!("n{i}");
            let dir = d.join(&name);
            std::fs::create_dir_all(&dir).expect("node");
            ok(&tenet(
                d,
                &[
                    "fleet",
                    "enroll",
                    &name,
                    "--db",
                    &db,
                    "--token-file",
                    &dir.join("token").display().to_string(),
                ],
            ));
            dir
        })
        .collect();
    let round = || {
        for n in &nodes {
            let name = n.file_name().expect("name").to_string_lossy().into_owned();
            let root = format!("root={}", n.display());
            tenet(
                n,
                &[
                    "agent",
                    ".",
                    "--once",
                    "--node-id",
                    &name,
                    "--var",
                    &root,
                    "--source",
                    &channel,
                    "--trust",
                    &s("release.pub"),
                    "--report",
                    &service.url(),
                    "--report-token-file",
                    "token",
                ],
            );
        }
    };
    let motd = |n: &Path| std::fs::read_to_string(n.join("out/motd")).unwrap_or_default();
    round();
    assert!(nodes.iter().all(|n| motd(n) == "one\n"), "everyone on v1");

    // Runs the controller in the background while the nodes run rounds; its output.
    let controller = |args: &[&str]| -> Child {
        let mut all = vec!["rollout"];
        all.extend_from_slice(args);
        all.extend(["--db", &db, "--poll", "100ms"]);
        tenet_command(d, &all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("controller")
    };
    let until_done = |mut c: Child| -> (Option<i32>, String) {
        let start = std::time::Instant::now();
        loop {
            if c.try_wait().expect("wait").is_some() {
                let o = c.wait_with_output().expect("output");
                return (
                    o.status.code(),
                    format!("{}{}", stdout(&o), crate::support::stderr(&o)),
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the roll-out did not end"
            );
            round();
        }
    };
    let status = |id: &str| json(&tenet(d, &["rollout", "status", id, "--db", &db, "--json"]));

    // A good release: three waves, each gated on the reports of its nodes.
    let v2 = push("v2", "two", false);
    let c = controller(&[
        "start",
        &format!("{repo}@{v2}"),
        "--channel",
        &channel,
        "--waves",
        "20%,60%,100%",
        "--max-failure-rate",
        "0%",
        "--min-reported",
        "100%",
        "--trust",
        &s("release.pub"),
    ]);
    let (code, out) = until_done(c);
    assert_eq!(code, Some(0), "{out}");
    has(&out, "wave 1 passed: 1 of 1 nodes reported, 0 failed");
    has(&out, "wave 2 passed: 3 of 3 nodes reported");
    has(&out, "succeeded");
    round();
    assert!(nodes.iter().all(|n| motd(n) == "two\n"), "everyone on v2");
    let r = status("1");
    assert_eq!(r[0]["state"], "succeeded");
    let events: Vec<&str> = r[0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().expect("event"))
        .collect();
    assert_eq!(
        events,
        [
            "started",
            "wave",
            "passed",
            "wave",
            "passed",
            "wave",
            "passed",
            "succeeded"
        ]
    );
    let digests = json(&tenet(d, &["fleet", "nodes", "--db", &db, "--json"]));
    assert!(
        digests
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["artifact_digest"] == v2.as_str()),
        "{digests}"
    );

    // A broken release: its first wave fails, the channel goes back to v2 by itself.
    let v3 = push("v3", "three", true);
    let (code, out) = until_done(controller(&[
        "start",
        &format!("{repo}@{v3}"),
        "--channel",
        &channel,
        "--waves",
        "20%,100%",
        "--max-failure-rate",
        "0%",
    ]));
    assert_eq!(code, Some(3), "{out}");
    has(&out, "wave 1 halted: 1 of 1 reporting nodes failed");
    has(&out, &format!("names {v2} again"));
    let r = status("2");
    assert_eq!(r[0]["state"], "rolled_back");
    round();
    assert!(
        nodes.iter().all(|n| motd(n) == "two\n"),
        "back on v2 everywhere"
    );
    // The failed node put its file back on that round; the next one finds all as desired.
    round();
    let st = json(&tenet(d, &["fleet", "status", "--db", &db, "--json"]));
    assert_eq!(st["by_outcome"]["converged"], 5, "{st}");

    // A controller killed mid-way: a second one is refused while it lives; resumed after.
    let v4 = push("v4", "four", false);
    let mut first = controller(&[
        "start",
        &format!("{repo}@{v4}"),
        "--channel",
        &channel,
        "--waves",
        "40%,100%",
        "--max-failure-rate",
        "0%",
        "--min-reported",
        "100%",
    ]);
    let start = std::time::Instant::now();
    let waves_started = || {
        let o = tenet(d, &["rollout", "status", "3", "--db", &db, "--json"]);
        serde_json::from_slice::<Value>(&o.stdout)
            .ok()
            .and_then(|r| r[0]["events"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    while waves_started() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the first wave did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = tenet(d, &["rollout", "resume", "3", "--db", &db]);
    fails_with(&second, "another roll-out controller is running");
    fails_with(
        &tenet(
            d,
            &[
                "rollout",
                "start",
                &format!("{repo}@{v4}"),
                "--channel",
                &channel,
                "--db",
                &db,
            ],
        ),
        "roll-out 3 of",
    );
    first.kill().expect("kill");
    first.wait().expect("wait");
    assert_eq!(
        status("3")[0]["state"],
        "running",
        "recorded where it stopped"
    );
    let (code, out) = until_done(controller(&["resume", "3"]));
    assert_eq!(code, Some(0), "{out}");
    has(&out, "roll-out 3 succeeded");
    round();
    assert!(nodes.iter().all(|n| motd(n) == "four\n"), "everyone on v4");
}

/// `tenet fleet simulate` (the benchmark's engine) at a small size: simulated agents
/// really report through the ingest service, the seeded history is there, the figures
/// come out. (The figures themselves are bench/fleet.sh's, never asserted on.)
#[test]
fn the_fleet_simulator_reports_through_the_service_over_a_seeded_history() {
    let Some(schema) = PgSchema::new("simulate") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let o = tenet(
        tmp.path(),
        &[
            "fleet",
            "simulate",
            "--db",
            &schema.url(),
            "--agents",
            "5",
            "--interval",
            "300ms",
            "--duration",
            "2s",
            "--seed-runs",
            "500",
            "--json",
        ],
    );
    ok(&o);
    let r = json(&o);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["reports"].as_u64().expect("reports") >= 20, "{r}");
    assert_eq!(r["seeded_runs"], 500);
    assert!(
        r["runs_in_table"].as_i64().expect("runs") >= 520,
        "seeded and live runs stored: {r}"
    );
    for q in [
        "status",
        "nodes",
        "drift_24h",
        "failures_24h",
        "runs_of_a_node",
    ] {
        assert!(r["queries_ms"][q][0].as_f64().is_some(), "{q}: {r}");
    }
    let st = json(&tenet(
        tmp.path(),
        &["fleet", "status", "--db", &schema.url(), "--json"],
    ));
    assert_eq!(st["nodes"], 5);
    assert_eq!(st["not_reporting"], 0, "{st}");
}
