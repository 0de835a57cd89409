//! Orchestration against real loopback HTTP services (`tests/fixtures/http/server.py`,
//! Python's standard library): `http.check` health gates, `http.resource` REST objects,
//! credentials brokered by the host, retries of transient failures, failure handlers and
//! rolling groups.

use crate::support::*;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/http/server.py"
);

/// The test service, killed when dropped.
struct Rest {
    child: Child,
    port: u16,
}

impl Rest {
    fn start(args: &[&str]) -> Rest {
        let mut child = Command::new("python3")
            .arg(SERVER)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the test service (python3)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        let port = line.trim().parse().expect("the service prints its port");
        Rest { child, port }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http_request(&format!("127.0.0.1:{}", self.port), method, path, &[], body)
    }

    /// Every request so far: (method, path, had an authorization header).
    fn log(&self) -> Vec<(String, String, bool)> {
        let (_, body) = self.request("GET", "/log", "");
        serde_json::from_str::<Vec<(String, String, bool)>>(&body).expect("log")
    }

    fn object(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = self.request("GET", path, "");
        (status == 200).then(|| serde_json::from_str(&body).expect("json"))
    }
}

impl Drop for Rest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A manifest granting the http provider `origins` (each a grant line's YAML).
fn manifest(dir: &Path, grants: &str, resources: &str) {
    write_manifest(
        dir,
        &format!(
            "providers:\n  http:\n    grants:\n      net: [{grants}]\n    limits: {{timeout: 2m}}\nresources:\n{resources}"
        ),
    );
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_check_waits_for_a_service_that_comes_up_late_and_is_never_a_change() {
    let d = tempfile::tempdir().expect("tmp");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let origin = format!("http://127.0.0.1:{port}");
    manifest(
        d.path(),
        &format!("\"{origin}\""),
        &format!(
            "  - {{id: up, type: http.check, properties: {{url: \"{origin}/health\", interval: 100ms, timeout: 20s, json_pointer: /status, equals: ok}}}}
  - {{id: obj, type: http.resource, depends_on: [up], properties: {{url: \"{origin}/api/objects/a\", body: {{x: 1}}}}}}
"
        ),
    );
    let plan = tenet(d.path(), &["plan"]);
    ok(&plan);
    has(
        &stdout(&plan),
        "up (http.check) will be waited for: not healthy now",
    );
    has(&stdout(&plan), "1 health check(s) to wait for");
    // The service starts a second after the apply does.
    let child = tenet_command(d.path(), &["apply", "--yes", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apply");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let rest = Rest::start(&["--port", &port.to_string()]);
    let out = child.wait_with_output().expect("apply ends");
    ok(&out);
    let events = json_lines(&stdout(&out));
    let up = events
        .iter()
        .find(|e| e["event"] == "resource_finished" && e["id"] == "up")
        .expect("up finished");
    assert_eq!(up["outcome"], "checked", "{up}");
    assert!(up["duration_ms"].as_f64().expect("ms") >= 500.0, "{up}");
    let done = events.last().expect("run_finished");
    assert_eq!(done["counts"]["created"], 1, "{done}");
    assert!(rest.object("/api/objects/a").is_some());
    // Converged: nothing to change, the check passes again and is no change.
    let again = tenet(d.path(), &["apply", "--yes"]);
    ok(&again);
    has(&stdout(&again), "No changes");
}

#[test]
fn a_check_that_never_passes_fails_naming_what_it_last_saw_and_skips_its_dependents() {
    let d = tempfile::tempdir().expect("tmp");
    let rest = Rest::start(&["--health", "503"]);
    let o = rest.origin();
    manifest(
        d.path(),
        &format!("\"{o}\""),
        &format!(
            "  - {{id: up, type: http.check, properties: {{url: \"{o}/health\", interval: 200ms, timeout: 1s}}}}
  - {{id: obj, type: http.resource, depends_on: [up], properties: {{url: \"{o}/api/objects/a\", body: {{x: 1}}}}}}
"
        ),
    );
    let out = tenet(d.path(), &["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    has(&stdout(&out), "was not healthy within 1.0 s");
    has(&stdout(&out), "last saw status 503 (expected 200)");
    has(
        &stdout(&out),
        "obj (http.resource) skipped: it depends on `up`",
    );
    assert!(rest.object("/api/objects/a").is_none());
}

#[test]
fn rest_objects_are_created_kept_corrected_and_deleted_on_declared_fields_only() {
    let d = tempfile::tempdir().expect("tmp");
    let rest = Rest::start(&[]);
    let o = rest.origin();
    let body = |replicas: u32| {
        format!(
            "  - id: web
    type: http.resource
    properties:
      url: \"{o}/api/objects/web\"
      body: {{replicas: {replicas}, spec: {{port: 80, tags: [a, b]}}}}
  - id: item
    type: http.resource
    properties:
      url: \"{o}/api/items\"
      find: {{key: /name, list: /items}}
      body: {{name: alpha, size: 2}}
"
        )
    };
    manifest(d.path(), &format!("\"{o}\""), &body(3));
    ok(&tenet(d.path(), &["apply", "--yes"]));
    let web = rest.object("/api/objects/web").expect("created");
    assert_eq!(web["replicas"], 3);
    assert_eq!(web["version"], 1, "the server adds fields: {web}");
    let (_, items) = rest.request("GET", "/api/items", "");
    has(&items, "\"name\": \"alpha\"");
    // Server-added fields (created_at, version, id) never cause a diff.
    let again = tenet(d.path(), &["apply", "--yes"]);
    ok(&again);
    has(&stdout(&again), "No changes");
    // Someone edits the object on the server: drift, then a corrective apply.
    rest.request("PATCH", "/api/objects/web", "{\"replicas\": 9}");
    let drift = tenet(d.path(), &["drift", "--detailed-exitcode"]);
    assert_eq!(
        drift.status.code(),
        Some(2),
        "{}{}",
        stdout(&drift),
        stderr(&drift)
    );
    has(&stdout(&drift), "web");
    let fix = tenet(d.path(), &["apply", "--yes", "--json"]);
    ok(&fix);
    let events = json_lines(&stdout(&fix));
    assert!(
        events
            .iter()
            .any(|e| e["id"] == "web" && e["outcome"] == "updated" && e["change"] == "corrective"),
        "{events:?}"
    );
    assert_eq!(rest.object("/api/objects/web").expect("web")["replicas"], 3);
    // An intentional update.
    manifest(d.path(), &format!("\"{o}\""), &body(4));
    ok(&tenet(d.path(), &["apply", "--yes"]));
    assert_eq!(rest.object("/api/objects/web").expect("web")["replicas"], 4);
    // Deleted on the server: planned as a create again.
    rest.request("DELETE", "/api/objects/web", "");
    let plan = tenet(d.path(), &["plan"]);
    has(&stdout(&plan), "web (http.resource) will be created");
    ok(&tenet(d.path(), &["apply", "--yes"]));
    // Removed from the manifest: deleted on the server.
    manifest(d.path(), &format!("\"{o}\""), "  []\n");
    write_manifest(
        d.path(),
        &format!("providers:\n  http:\n    grants:\n      net: [\"{o}\"]\nresources: []\n"),
    );
    let gone = tenet(d.path(), &["apply", "--yes"]);
    ok(&gone);
    assert!(rest.object("/api/objects/web").is_none());
    let (_, items) = rest.request("GET", "/api/items", "");
    assert_eq!(items.trim(), "{\"items\": []}");
    // A paginated collection cannot be searched page by page: refused, never a duplicate.
    write_manifest(
        d.path(),
        &format!(
            "providers:\n  http:\n    grants:\n      net: [\"{o}\"]\nresources:\n  - {{id: p, type: http.resource, properties: {{url: \"{o}/api/paged\", find: {{key: /name, list: /items}}, body: {{name: x}}}}}}\n"
        ),
    );
    let paged = tenet(d.path(), &["apply", "--yes"]);
    assert_eq!(paged.status.code(), Some(1));
    has(
        &stdout(&paged),
        "one page of a paginated collection (`next` in the body)",
    );
    assert!(
        rest.log()
            .iter()
            .all(|(m, p, _)| !(m == "POST" && p == "/api/paged"))
    );
}

#[test]
fn plans_and_drift_checks_only_read() {
    let d = tempfile::tempdir().expect("tmp");
    let rest = Rest::start(&[]);
    let o = rest.origin();
    manifest(
        d.path(),
        &format!("\"{o}\""),
        &format!(
            "  - {{id: web, type: http.resource, properties: {{url: \"{o}/api/objects/web\", body: {{x: 1}}}}}}
  - {{id: item, type: http.resource, properties: {{url: \"{o}/api/items\", find: {{key: /name, list: /items}}, body: {{name: n}}}}}}
  - {{id: up, type: http.check, properties: {{url: \"{o}/health\"}}}}
"
        ),
    );
    ok(&tenet(d.path(), &["plan"]));
    let _ = tenet(d.path(), &["drift"]);
    let log = rest.log();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|(m, _, _)| m == "GET" || m == "HEAD"),
        "a plan or drift check sent more than GET/HEAD: {log:?}"
    );
}

#[test]
fn an_ungranted_origin_is_refused_without_a_connection() {
    let d = tempfile::tempdir().expect("tmp");
    let granted = Rest::start(&[]);
    let other = Rest::start(&[]);
    manifest(
        d.path(),
        &format!("\"{}\"", granted.origin()),
        &format!(
            "  - {{id: web, type: http.resource, properties: {{url: \"{}/api/objects/web\", body: {{x: 1}}}}}}
",
            other.origin()
        ),
    );
    let plan = tenet(d.path(), &["plan"]);
    has(&stdout(&plan), "cannot be planned");
    has(&stdout(&plan), "not granted");
    let apply = tenet(d.path(), &["apply", "--yes"]);
    assert_eq!(apply.status.code(), Some(1));
    // The ungranted service's log holds only the test's own request for it.
    assert_eq!(other.log(), vec![("GET".into(), "/log".into(), false)]);
}

#[test]
fn a_transient_failure_is_retried_and_recorded_with_its_attempts() {
    let d = tempfile::tempdir().expect("tmp");
    let rest = Rest::start(&[]);
    let o = rest.origin();
    manifest(
        d.path(),
        &format!("\"{o}\""),
        &format!(
            "  - id: web
    type: http.resource
    retry: {{attempts: 3, delay: 100ms}}
    properties: {{url: \"{o}/api/objects/web\", body: {{x: 1}}}}
"
        ),
    );
    // The first write answers 503, the second succeeds.
    rest.request("POST", "/control", "{\"fail_writes\": 1}");
    let out = tenet(d.path(), &["apply", "--yes", "--json"]);
    ok(&out);
    let events = json_lines(&stdout(&out));
    let retrying: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "resource_retrying")
        .collect();
    assert_eq!(retrying.len(), 1, "{events:?}");
    assert_eq!(retrying[0]["attempt"], 1);
    assert_eq!(retrying[0]["wait_ms"], 100);
    has(
        retrying[0]["error"].as_str().expect("error"),
        "answered 503",
    );
    let done = events
        .iter()
        .find(|e| e["event"] == "resource_finished" && e["id"] == "web")
        .expect("finished");
    assert_eq!(done["outcome"], "created");
    assert_eq!(done["retried"].as_array().map(Vec::len), Some(1), "{done}");
    assert_eq!(events.last().expect("end")["counts"]["attempts"], 2);
    // Recorded in the run.
    let show = tenet(d.path(), &["history", "--json"]);
    ok(&show);
    has(&stdout(&show), "\"attempts\": 2");
    // The text summary says so too.
    rest.request("DELETE", "/api/objects/web", "");
    rest.request("POST", "/control", "{\"fail_writes\": 1}");
    let text = tenet(d.path(), &["apply", "--yes"]);
    ok(&text);
    has(
        &stdout(&text),
        "web attempt 1 failed, trying again in 100ms",
    );
    has(
        &stdout(&text),
        "Retried: 1 resource needed 2 attempts in all.",
    );
    // A write that keeps failing fails after its attempts.
    rest.request("DELETE", "/api/objects/web", "");
    rest.request("POST", "/control", "{\"fail_writes\": 10}");
    let failed = tenet(d.path(), &["apply", "--yes"]);
    assert_eq!(failed.status.code(), Some(1));
    has(&stdout(&failed), "(attempt 3 of 3)");
}

#[test]
fn brokered_credentials_never_reach_the_provider_nor_anything_it_writes() {
    let d = tempfile::tempdir().expect("tmp");
    let secret = "s3cr3t-t0ken-for-the-test";
    let rest = Rest::start(&["--token", &format!("Bearer {secret}")]);
    let other = Rest::start(&[]);
    let (o, x) = (rest.origin(), other.origin());
    write_manifest(
        d.path(),
        &format!(
            "vars:
  token: {{sensitive: true}}
providers:
  http:
    grants:
      net:
        - origin: \"{o}\"
          credentials: {{bearer: \"${{var.token}}\"}}
        - \"{x}\"
resources:
  # Needs the credential: the host adds it.
  - {{id: secure, type: http.check, properties: {{url: \"{o}/secure/ping\", timeout: 2s, interval: 100ms}}}}
  # A server that echoes every header back: what the provider reads, and so the state.
  - {{id: echo, type: http.resource, properties: {{url: \"{o}/echo\", body: {{}}}}}}
  # Another origin: never gets it.
  - {{id: elsewhere, type: http.check, properties: {{url: \"{x}/health\"}}}}
  # Compressed, the secret would slip past the search: refused.
  - {{id: gzip, type: http.check, properties: {{url: \"{o}/gzip-echo\", timeout: 1s}}}}
"
        ),
    );
    let var = format!("token={secret}");
    let plan = tenet(d.path(), &["plan", "--var", &var, "--json"]);
    let apply = tenet(d.path(), &["apply", "--yes", "--var", &var]);
    let all = format!(
        "{}{}{}{}",
        stdout(&plan),
        stderr(&plan),
        stdout(&apply),
        stderr(&apply)
    );
    assert_eq!(apply.status.code(), Some(1), "{all}");
    has(&all, "HttpResponseContentCoding(Some(\"gzip\"))");
    for id in ["secure", "echo", "elsewhere"] {
        assert!(
            !all.contains(&format!("{id} (http.check) failed"))
                && !all.contains(&format!("{id} (http.resource) failed")),
            "{id} did not converge:\n{all}"
        );
    }
    has(&all, "the host adds `authorization` from bearer");
    assert!(!all.contains(secret), "the secret was printed:\n{all}");
    // The echoed headers reached the provider with the secret taken out.
    let plan = tenet(d.path(), &["plan", "--var", &var, "--json"]);
    has(&stdout(&plan), "(redacted)");
    // … and asked for an uncompressed answer.
    has(&stdout(&plan), "\"accept-encoding\": \"identity\"");
    // The other origin never saw an authorization header; the granted one always did.
    assert!(
        other.log().iter().all(|(_, _, auth)| !auth),
        "{:?}",
        other.log()
    );
    assert!(
        rest.log()
            .iter()
            .filter(|(_, p, _)| p != "/log")
            .all(|(_, _, auth)| *auth)
    );
    // Nothing Tenet wrote holds it: state, history, journal.
    for entry in walk(&d.path().join(".tenet")) {
        let bytes = std::fs::read(&entry).expect("read");
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            entry.display()
        );
    }
    // A credential on a pattern is refused at load, naming the grant.
    write_manifest(
        d.path(),
        "providers:\n  http:\n    grants:\n      net:\n        - origin: \"http://127.0.0.1:*\"\n          credentials: {bearer: abcdefghijk}\nresources: []\n",
    );
    let bad = tenet(d.path(), &["validate"]);
    fails_with(&bad, "credentials go to exactly one origin");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_rolling_change_stops_at_the_failing_member_and_its_failure_handler_restores_it() {
    let d = tempfile::tempdir().expect("tmp");
    let rest = Rest::start(&[]);
    let o = rest.origin();
    // Version 1 everywhere, healthy.
    for m in ["a", "b", "c"] {
        rest.request("PUT", &format!("/api/objects/svc-{m}"), "{\"release\": 1}");
    }
    manifest(
        d.path(),
        &format!("\"{o}\""),
        &format!(
            "  - id: conf
    type: http.resource
    for_each: [a, b, c]
    serial: 1
    properties:
      url: \"{o}/api/objects/svc-${{each.value}}\"
      body: {{release: 2, broken: \"${{each.value == 'b'}}\"}}
  - id: healthy
    type: http.check
    for_each: [a, b, c]
    depends_on: [\"conf[${{each.value}}]\"]
    properties: {{url: \"{o}/svc/${{each.value}}/health\", timeout: 1s, interval: 200ms}}
  - id: restore
    type: http.resource
    for_each: [a, b, c]
    on_failure: [\"healthy[${{each.value}}]\"]
    properties:
      url: \"{o}/api/objects/svc-${{each.value}}\"
      body: {{release: 1, broken: false}}
"
        ),
    );
    let plan = tenet(d.path(), &["plan"]);
    ok(&plan);
    has(
        &stdout(&plan),
        "restore[b] (http.resource) runs only if `healthy[b]` fails",
    );
    has(&stdout(&plan), "3 to run only on failure");
    let out = tenet(d.path(), &["apply", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let events = json_lines(&stdout(&out));
    let outcome = |id: &str| {
        events
            .iter()
            .find(|e| e["event"] == "resource_finished" && e["id"] == id)
            .map(|e| e["outcome"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(outcome("conf[a]"), "updated");
    assert_eq!(outcome("healthy[a]"), "checked");
    assert_eq!(outcome("restore[a]"), "not_triggered");
    assert_eq!(outcome("conf[b]"), "updated");
    assert_eq!(outcome("healthy[b]"), "failed");
    assert_eq!(outcome("restore[b]"), "updated", "the handler ran");
    assert_eq!(outcome("conf[c]"), "not_started");
    let c = events
        .iter()
        .find(|e| e["id"] == "conf[c]" && e["event"] == "resource_finished")
        .expect("conf[c]");
    has(
        c["reason"].as_str().expect("reason"),
        "the rolling group `conf` stopped",
    );
    // a moved on, b was put back, c was never touched.
    assert_eq!(rest.object("/api/objects/svc-a").expect("a")["release"], 2);
    let b = rest.object("/api/objects/svc-b").expect("b");
    assert_eq!(
        (b["release"].clone(), b["broken"].clone()),
        (1.into(), false.into())
    );
    assert_eq!(rest.object("/api/objects/svc-c").expect("c")["release"], 1);
    let writes_to_c = rest
        .log()
        .iter()
        .filter(|(m, p, _)| m != "GET" && p.ends_with("svc-c"))
        .count();
    assert_eq!(writes_to_c, 1, "only the test's own setup wrote svc-c");
}

#[test]
fn orchestration_mistakes_are_reported_together_with_their_places() {
    let d = tempfile::tempdir().expect("tmp");
    write_manifest(
        d.path(),
        "providers:
  http:
    retry: {attempts: 0}
resources:
  - id: a
    type: http.check
    retry: {attempts: 3, delay: soon, backoff: 50}
    timeout: 0s
    serial: 2
    properties: {url: \"http://127.0.0.1:1/\"}
  - id: b
    type: http.check
    max_failures: 1
    on_failure: [missing]
    properties: {url: \"http://127.0.0.1:1/\"}
",
    );
    let out = tenet(d.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for needle in [
        "tenet.yaml:3:",
        "attempts of retry of provider",
        "tenet.yaml:7:",
        "invalid delay `soon`",
        "backoff of retry of resource `a` must be a number from 1 to 10",
        "timeout of resource `a` must be longer than zero",
        "serial of resource `a` rolls the instances of a `for_each` or `count` out",
        "max_failures of resource `b` needs `serial:`",
        "`missing`",
    ] {
        has(&err, needle);
    }
}

/// `examples/rolling` for real: three services under a real `runsvdir`, a release rolled
/// through them one at a time behind health checks, then a broken release stopped at its
/// second service, which its failure handler puts back.
#[test]
fn the_rolling_example_rolls_a_release_and_puts_a_broken_one_back() {
    if !as_root("start runit services") {
        return;
    }
    if tool("runsvdir").is_none() || tool("sv").is_none() || tool("python3").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("rolling");
    let copy = Command::new("cp")
        .arg("-r")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/rolling"))
        .arg(&dir)
        .status()
        .expect("cp");
    assert!(copy.success());
    for d in ["service", "conf", ".tenet"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    std::fs::create_dir_all(dir.join("service")).expect("service dir");
    let mut runsvdir = Command::new("runsvdir")
        .arg("-P")
        .arg(dir.join("service"))
        .spawn()
        .expect("runsvdir");
    let health = |port: u16| http_request(&format!("127.0.0.1:{port}"), "GET", "/health", &[], "");
    let result = std::panic::catch_unwind(|| {
        ok(&tenet(&dir, &["apply", "--yes", "--var", "release=1"]));
        let two = tenet(&dir, &["apply", "--yes", "--var", "release=2", "--json"]);
        ok(&two);
        // One at a time: each service's config is written after the previous one's
        // check passed.
        let order: Vec<String> = json_lines(&stdout(&two))
            .iter()
            .filter(|e| e["event"] == "resource_finished")
            .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let at = |id: &str| order.iter().position(|x| x == id).expect(id);
        assert!(at("healthy[web-a]") < at("config[web-b]"), "{order:?}");
        assert!(at("healthy[web-b]") < at("config[web-c]"), "{order:?}");
        for port in [18081, 18082, 18083] {
            has(&health(port).1, "\"release\": 2");
        }
        let three = tenet(
            &dir,
            &[
                "apply",
                "--yes",
                "--var",
                "release=3",
                "--var",
                "previous=2",
                "--var",
                "broken=web-b",
            ],
        );
        assert_eq!(three.status.code(), Some(1), "{}", stdout(&three));
        let text = stdout(&three);
        has(&text, "healthy[web-b] (http.check) failed");
        has(&text, "restore[web-b] (exec.command) created");
        has(
            &text,
            "config[web-c] (file.file) not started: the rolling group `config` stopped",
        );
        has(&health(18081).1, "\"release\": 3");
        let b = health(18082);
        assert_eq!(b.0, 200, "web-b was put back: {b:?}");
        has(&b.1, "\"release\": 2");
        has(&health(18083).1, "\"release\": 2");
    });
    let _ = Command::new("kill")
        .args(["-HUP", &runsvdir.id().to_string()])
        .status();
    let _ = runsvdir.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A private CA and a certificate for 127.0.0.1 it signed, made with `openssl` in `dir`:
/// (ca.pem, server.pem, server.key).
fn private_ca(dir: &Path) -> Option<()> {
    tool("openssl")?;
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=tenet test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    Some(())
}

#[test]
fn a_private_ca_on_a_grant_is_the_only_trust_for_that_origin() {
    let d = tempfile::tempdir().expect("tmp");
    if private_ca(d.path()).is_none() {
        return;
    }
    let cert = d.path().join("server.pem");
    let key = d.path().join("server.key");
    let rest = Rest::start(&[
        "--tls",
        cert.to_str().expect("utf-8"),
        key.to_str().expect("utf-8"),
    ]);
    let origin = format!("https://127.0.0.1:{}", rest.port);
    let check = format!(
        "  - {{id: up, type: http.check, properties: {{url: \"{origin}/health\", timeout: 5s, interval: 100ms}}}}\n"
    );
    // Trusted through the grant's CA bundle.
    manifest(
        d.path(),
        &format!("{{origin: \"{origin}\", ca: ./ca.pem}}"),
        &check,
    );
    // (Healthy already at plan time: a read over TLS that succeeded.)
    let out = tenet(d.path(), &["apply", "--yes"]);
    ok(&out);
    has(&stdout(&out), "No changes");
    has(
        &stdout(&out),
        &format!(
            "net {origin} (TLS roots: {})",
            d.path().join("ca.pem").display()
        ),
    );
    // Without it the public roots do not know this CA: a TLS failure, at once (no
    // waiting out the timeout).
    manifest(d.path(), &format!("\"{origin}\""), &check);
    let started = std::time::Instant::now();
    let out = tenet(d.path(), &["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    has(&stdout(&out), "TLS failed");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    // Another CA's bundle is no trust either.
    let other = tempfile::tempdir().expect("tmp");
    private_ca(other.path()).expect("openssl");
    std::fs::copy(other.path().join("ca.pem"), d.path().join("other.pem")).expect("copy");
    manifest(
        d.path(),
        &format!("{{origin: \"{origin}\", ca: ./other.pem}}"),
        &check,
    );
    let out = tenet(d.path(), &["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    has(&stdout(&out), "TLS failed");
    // A bundle that is not PEM, and a CA on a plain-HTTP origin, are refused at load.
    std::fs::write(d.path().join("bad.pem"), "not a certificate\n").expect("bad");
    manifest(
        d.path(),
        &format!(
            "{{origin: \"{origin}\", ca: ./bad.pem}}, {{origin: \"http://127.0.0.1:1\", ca: ./ca.pem}}"
        ),
        "  []\n",
    );
    let out = tenet(d.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    has(&stderr(&out), "bad.pem holds no PEM certificate");
    has(&stderr(&out), "a CA bundle is for https origins");
}
