//! Policy as code (issue 16): Rego policies beside the manifest judge the manifest and
//! its grants before any provider loads (preflight) and every plan (plan stage), with
//! conftest's rule conventions and Sentinel's levels; a denial changes nothing.

use crate::support::{ok, stderr, stdout, tenet, write_manifest};
use serde_json::Value;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

const FILES_POLICY: &str = r#"package tenet.files

# Every file Tenet writes states its mode.
deny contains v if {
	some r in input.resources
	r.type == "file.file"
	r.action in {"create", "update", "replace"}
	not r.desired.mode
	v := {"id": "FILE-001", "resource": r.id, "path": "/path", "msg": sprintf("%s must set a mode", [r.id])}
}

warn contains msg if {
	some r in input.resources
	r.action == "create"
	msg := sprintf("%s is new", [r.id])
}
"#;

fn manifest(dir: &Path, extra: &str) {
    write_manifest(
        dir,
        &format!(
            r#"{extra}providers:
  file:
    grants:
      fs: [{{path: ./out, access: rw}}]
resources:
  - id: ok
    type: file.file
    properties: {{path: ./out/ok, content: "x\n", mode: "0644"}}
  - id: bare
    type: file.file
    labels: {{owner: team-web}}
    properties:
      path: ./out/bare
      content: "y\n"
"#
        ),
    );
}

#[test]
fn a_denial_stops_plan_and_apply_with_the_resource_place_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    manifest(dir, "");
    write(dir, "policy/files.rego", FILES_POLICY);

    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("tenet.files.deny FILE-001"), "{out}");
    assert!(out.contains("bare must set a mode"), "{out}");
    // The property's place in the manifest (`path:` of `bare`, line 13), and the rule's.
    assert!(
        out.contains("at ./tenet.yaml:13:13 (resource bare, /path)"),
        "{out}"
    );
    assert!(out.contains("rule policy/files.rego:4:1"), "{out}");
    assert!(
        out.contains("[advisory] tenet.files.warn"),
        "warnings are shown: {out}"
    );

    let o = tenet(dir, &["plan", "--json", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(3), "a denial wins over `changes`");
    let plan: Value = serde_json::from_str(&stdout(&o)).expect("plan json");
    let results = plan["policy"][1]["results"]
        .as_array()
        .expect("plan-stage results");
    let deny = results
        .iter()
        .find(|r| r["outcome"] == "denied")
        .expect("a denial");
    assert_eq!(deny["level"], "soft-mandatory");
    assert_eq!(deny["resource"], "bare");
    assert_eq!(deny["location"], "./tenet.yaml:13:13");
    assert_eq!(plan["policy"][0]["stage"], "preflight");

    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Apply refused by policy: nothing was changed (recorded as run #"));
    assert!(!dir.join("out/ok").exists() && !dir.join("out/bare").exists());

    // The same rule made advisory: reported, not blocking.
    manifest(dir, "policy:\n  levels: {tenet.files: advisory}\n");
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(
        stdout(&o).contains("[advisory] tenet.files.deny"),
        "{}",
        stdout(&o)
    );
    assert!(dir.join("out/bare").exists());
}

#[test]
fn a_preflight_denial_refuses_before_any_provider_is_loaded() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write(
        dir,
        "policy/capabilities.rego",
        r#"package tenet.capabilities

interpreters := {"sh", "bash", "dash", "python3"}

deny_shell contains v if {
	some name, p in input.providers
	some i, g in p.grants.exec
	regex.replace(g.program, `^.*/`, "") in interpreters
	v := {"id": "CAP-001", "provider": name, "path": sprintf("/grants/exec/%d/program", [i]),
	      "msg": sprintf("provider %s may run %s: grant the program, not an interpreter", [name, g.program])}
}
"#,
    );
    // The provider's component does not exist: loading it would be an error of its own.
    write_manifest(
        dir,
        r#"providers:
  runner:
    source: ./missing-provider.wasm
    unsigned: true
    grants:
      exec: [{program: /bin/sh, args: [["-c", "**"]]}]
resources: []
"#,
    );
    for args in [
        &["plan"][..],
        &["apply", "--yes"],
        &["validate"],
        &["policy", "check"],
    ] {
        let o = tenet(dir, args);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let out = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            out.contains("CAP-001") && out.contains("may run /bin/sh"),
            "{out}"
        );
        assert!(out.contains("preflight stage"), "{out}");
        assert!(
            !out.contains("missing-provider"),
            "no provider was loaded before the denial: {out}"
        );
    }
    let o = tenet(dir, &["policy", "check", "--json"]);
    let decision: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(decision["results"][0]["provider"], "runner");
    assert_eq!(decision["results"][0]["location"], "./tenet.yaml:2:3");
}

#[test]
fn policies_that_do_not_load_or_cannot_decide_fail_closed_naming_the_place() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    manifest(dir, "");
    // Two files that do not parse: both reported, with file:line:col.
    write(
        dir,
        "policy/a.rego",
        "package a\n\ndeny contains msg if {\n  msg := \n}\n",
    );
    write(
        dir,
        "policy/b.rego",
        "package b\n\nwarn contains x if { x := [1, }\n",
    );
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("policy/a.rego:4:7"), "{err}");
    assert!(err.contains("policy/b.rego:3:"), "{err}");
    assert!(!dir.join(".tenet").exists() || !dir.join("out/ok").exists());

    // A call of a function that does not exist, in a branch no input reaches: found at
    // load, not when (if ever) the branch runs.
    std::fs::remove_dir_all(dir.join("policy")).expect("rm");
    write(
        dir,
        "policy/typo.rego",
        "package typo\n\nis_file(r) if r.type == \"file.file\"\n\ndeny contains msg if {\n  some r in input.resources\n  r.id == \"never\"\n  is_file(r)\n  msg := sprintnf(\"%s\", [r.id])\n}\n",
    );
    let err = stderr(&tenet(dir, &["plan"]));
    assert!(
        err.contains("policy/typo.rego:9:10: error: unknown function `sprintnf`"),
        "{err}"
    );
    assert_eq!(err.matches("unknown function").count(), 1, "{err}");

    // A package without rules, and a set without deny/warn rules.
    std::fs::remove_dir_all(dir.join("policy")).expect("rm");
    write(dir, "policy/empty.rego", "package empty\n");
    write(
        dir,
        "policy/lib.rego",
        "package lib\n\nis_file(r) if r.type == \"file.file\"\n",
    );
    let err = stderr(&tenet(dir, &["plan"]));
    assert!(
        err.contains("policy/empty.rego:1:1: error: package `empty` has no rules"),
        "{err}"
    );
    std::fs::remove_file(dir.join("policy/empty.rego")).expect("rm");
    let err = stderr(&tenet(dir, &["plan"]));
    assert!(err.contains("no policy rules"), "{err}");

    // An empty policy directory named by the manifest.
    std::fs::remove_file(dir.join("policy/lib.rego")).expect("rm");
    manifest(dir, "policy: {paths: [policy]}\n");
    let err = stderr(&tenet(dir, &["plan"]));
    assert!(
        err.contains("no policies: policy holds no *.rego file"),
        "{err}"
    );

    // A result that is neither a message nor an object with `msg`.
    write(
        dir,
        "policy/bad.rego",
        "package bad\n\ndeny contains 42 if true\n",
    );
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad.deny"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("a result must be a message string"),
        "{}",
        stderr(&o)
    );

    // An input over the configured limit is refused, naming the limit.
    manifest(dir, "policy: {max_input: 1KiB}\n");
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("over the limit of 1024 (policy.max_input)"),
        "{}",
        stderr(&o)
    );

    // A policy that runs too long is stopped at the timeout and names its rule.
    std::fs::remove_file(dir.join("policy/bad.rego")).expect("rm");
    write(
        dir,
        "policy/slow.rego",
        "package slow\n\ndeny contains msg if {\n  some a in numbers.range(1, 3000)\n  some b in numbers.range(1, 3000)\n  some c in numbers.range(1, 3000)\n  a + b + c == -1\n  msg := \"never\"\n}\n",
    );
    manifest(dir, "policy: {timeout: 1s}\n");
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("slow.deny") && err.contains("exceeded"),
        "{err}"
    );
    assert!(!dir.join("out/ok").exists());
}

#[test]
fn the_input_is_versioned_structured_and_never_holds_a_secret() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write(dir, "policy/files.rego", FILES_POLICY);
    write_manifest(
        dir,
        r#"vars:
  token: {default: hunter2-secret, sensitive: true}
providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
      net: ["http://example.com"]
      env: [HTTP_PROXY]
resources:
  - id: creds
    type: file.file
    labels: {owner: team-sec}
    properties: {path: ./out/creds, content: "${ var.token | upper }", mode: "0600"}
"#,
    );
    for stage in ["preflight", "plan"] {
        let o = tenet(dir, &["policy", "input", "--stage", stage]);
        ok(&o);
        let text = stdout(&o);
        assert!(
            !text.to_lowercase().contains("hunter2"),
            "{stage}: a secret reached the policy input: {text}"
        );
        let input: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(input["tenet"]["input_version"], 1);
        assert_eq!(input["tenet"]["stage"], stage);
        let file = &input["providers"]["file"];
        assert_eq!(file["grants"]["fs"][0]["access"], "rw");
        assert_eq!(file["grants"]["net"][0]["scheme"], "http");
        assert_eq!(file["grants"]["env"][0], "HTTP_PROXY");
        let r = &input["resources"][0];
        assert_eq!(r["labels"]["owner"], "team-sec");
        assert_eq!(r["desired"]["content"], "(sensitive)");
        assert_eq!(input["manifest"]["vars"]["token"], "(sensitive)");
        assert!(input["run"]["user"].is_string() && input["run"]["time_ns"].is_u64());
        if stage == "plan" {
            assert_eq!(r["action"], "create");
            assert_eq!(
                input["resource_changes"][0]["change"]["actions"][0],
                "create"
            );
            assert_eq!(input["providers"]["file"]["provenance"]["kind"], "builtin");
            assert!(
                input["providers"]["file"]["requested"].is_array(),
                "{input}"
            );
        } else {
            assert!(r["action"].is_null());
        }
    }
}

#[test]
fn conftest_conventions_exceptions_and_levels_by_rule() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    manifest(
        dir,
        "policy:\n  levels: {main.deny_new: hard-mandatory}\n  params: {allowed: [ok]}\n",
    );
    // A conftest-style policy: package main, string messages, suffixed rules, an
    // exception, parameters from `policy.params`.
    write(
        dir,
        "policy/main.rego",
        r#"package main

deny_unlisted contains msg if {
	some r in input.resource_changes
	not r.address in data.params.allowed
	msg := sprintf("%s is not on the allowed list", [r.address])
}

deny_new contains msg if {
	some r in input.resource_changes
	"create" in r.change.actions
	r.address == "nothing-matches"
	msg := "unreachable"
}

exception contains rules if {
	input.manifest.path != ""
	rules := ["unlisted"]
}
"#,
    );
    let o = tenet(dir, &["plan", "--json"]);
    ok(&o);
    let plan: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let results = plan["policy"][1]["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["outcome"], "excepted");
    assert_eq!(results[0]["rule"], "main.deny_unlisted");
    assert_eq!(results[0]["msg"], "bare is not on the allowed list");
}

/// A day `offset` days from today, as `YYYY-MM-DD` (UTC).
fn day(offset: i64) -> String {
    let now = std::time::SystemTime::now();
    let shift = std::time::Duration::from_secs(offset.unsigned_abs() * 86_400);
    let t = if offset < 0 { now - shift } else { now + shift };
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
}

fn waiver(dir: &Path, resources: &str, created: &str, expires: &str, reason: &str) {
    write(
        dir,
        "policy/waivers.yaml",
        &format!(
            "waivers:\n  - id: W-1\n    rule: tenet.files.deny\n    resources: {resources}\n{reason}    approved_by: security@example.com\n    created: {created}\n    expires: {expires}\n"
        ),
    );
}

#[test]
fn waivers_and_overrides_let_a_denial_pass_on_the_record_and_never_a_hard_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    manifest(dir, "");
    write(dir, "policy/files.rego", FILES_POLICY);
    let reason = "    reason: \"legacy file, INFRA-881\"\n";

    // A live waiver for `bare`: waived, applied, on the record.
    waiver(dir, "[bar*]", &day(-1), &day(30), reason);
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("~ waived [soft-mandatory] tenet.files.deny FILE-001"),
        "{out}"
    );
    assert!(
        out.contains("waiver W-1 (policy/waivers.yaml:2:7): legacy file, INFRA-881"),
        "{out}"
    );
    let o = tenet(dir, &["show", "1", "--json"]);
    let run: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let r = &run["record"]["policy"][1]["results"];
    assert!(
        r.to_string()
            .contains("\"approved_by\":\"security@example.com\""),
        "{r}"
    );
    std::fs::remove_dir_all(dir.join("out")).expect("rm");
    std::fs::create_dir(dir.join("out")).expect("mkdir");

    // Expired: the denial is back, and says which waiver expired.
    waiver(dir, "[bare]", &day(-40), &day(-10), reason);
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("(waiver W-1 expired {})", day(-10))),
        "{}",
        stdout(&o)
    );

    // A waiver for another resource covers nothing, and says so.
    waiver(dir, "[ok]", &day(-1), &day(30), reason);
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stdout(&o).contains("waiver W-1 covered nothing in this run"),
        "{}",
        stdout(&o)
    );

    // Too long, or without a reason: errors at the waiver's place.
    waiver(dir, "[bare]", &day(0), &day(200), reason);
    let err = stderr(&tenet(dir, &["plan"]));
    assert!(
        err.contains(
            "policy/waivers.yaml:8:14: error: waiver `W-1` lasts 200 days, over the limit of 90"
        ),
        "{err}"
    );
    waiver(dir, "[bare]", &day(0), &day(10), "");
    let err = stderr(&tenet(dir, &["plan"]));
    assert!(
        err.contains("policy/waivers.yaml:2:7: error: a waiver needs `reason`"),
        "{err}"
    );
    std::fs::remove_file(dir.join("policy/waivers.yaml")).expect("rm");

    // An override needs a reason, lets the run pass, and is recorded with who and why.
    let o = tenet(
        dir,
        &["apply", "--yes", "--override-policy", "tenet.files.deny"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("needs --reason"), "{}", stderr(&o));
    let o = tenet(
        dir,
        &[
            "apply",
            "--yes",
            "--override-policy",
            "tenet.files.deny",
            "--reason",
            "hotfix CHG-7",
        ],
    );
    ok(&o);
    assert!(dir.join("out/bare").exists());
    let out = stdout(&o);
    let run = out
        .split("Recorded as run #")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect("a recorded run");
    let o = tenet(dir, &["show", run]);
    let out = stdout(&o);
    assert!(
        out.contains("~ overridden [soft-mandatory] tenet.files.deny"),
        "{out}"
    );
    assert!(out.contains(": hotfix CHG-7"), "{out}");

    // Hard-mandatory: never overridden, never waived.
    manifest(dir, "policy:\n  levels: {tenet.files: hard-mandatory}\n");
    let o = tenet(
        dir,
        &[
            "plan",
            "--override-policy",
            "tenet.files.deny",
            "--reason",
            "please",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is hard-mandatory"), "{}", stderr(&o));
    waiver(dir, "[bare]", &day(-1), &day(30), reason);
    let err = stderr(&tenet(dir, &["plan"]));
    assert!(
        err.contains("`tenet.files.deny` is hard-mandatory: it cannot be waived"),
        "{err}"
    );
}

/// The example's files, copied into `to`.
fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read") {
        let entry = entry.expect("entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_name() == "out" || entry.file_name() == ".tenet" {
            continue;
        }
        if src.is_dir() {
            std::fs::create_dir_all(&dst).expect("mkdir");
            copy(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

#[test]
fn the_example_policies_pass_their_tests_and_judge_the_example() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy"),
        dir,
    );
    let o = tenet(dir, &["policy", "test"]);
    ok(&o);
    let out = stdout(&o);
    assert!(out.contains("19 passed, 0 failed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    let o = tenet(dir, &["policy", "test", "--coverage", "--run", "network"]);
    ok(&o);
    assert!(
        stdout(&o).contains("coverage policy/network.rego"),
        "{}",
        stdout(&o)
    );

    // As written, the example is allowed.
    let o = tenet(dir, &["plan", "--json"]);
    ok(&o);
    let plan: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(plan["policy"][1]["rules"], 9);
    // A rendered config that listens everywhere, or without SSL, is denied.
    for (var, id) in [("db_listen=0.0.0.0", "NET-001"), ("ssl=false", "ENC-001")] {
        let o = tenet(dir, &["plan", "--var", var]);
        assert_eq!(o.status.code(), Some(3), "{var}: {}", stdout(&o));
        assert!(stdout(&o).contains(id), "{var}: {}", stdout(&o));
    }
    // A shell grant is refused at preflight, as hard-mandatory.
    let text = std::fs::read_to_string(dir.join("tenet.yaml")).expect("manifest");
    std::fs::write(
        dir.join("tenet.yaml"),
        text.replace("program: /usr/bin/true}", "program: /bin/bash}"),
    )
    .expect("write");
    let o = tenet(dir, &["policy", "check"]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("[hard-mandatory] tenet.capabilities.deny_shell CAP-001"),
        "{}",
        stdout(&o)
    );
}
