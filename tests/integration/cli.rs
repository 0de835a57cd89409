//! The `tenet` binary end to end, in temporary directories.

use crate::support::{MISBEHAVE_GRANTS, MISBEHAVE_WASM, stderr, stdout, tenet, write_manifest};
use std::path::Path;

const SITE: &str = r#"
vars:
  title: {default: Hello, description: page title}
  mode: "0644"
providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
resources:
  - id: site
    type: file.directory
    properties: {path: ./out/site}
  - id: index
    type: file.file
    depends_on: [site]
    properties:
      path: ./out/site/index.html
      mode: ${var.mode}
      content: "<h1>${var.title}</h1>\n"
"#;

fn code(o: &std::process::Output) -> i32 {
    o.status.code().expect("exit code")
}

#[test]
fn plan_apply_converge_with_documented_exit_codes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);

    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(code(&o), 2, "changes → 2\n{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("+ site (file.directory) will be created"),
        "{text}"
    );
    assert!(
        text.contains("+ index (file.file) will be created"),
        "{text}"
    );
    assert!(
        text.contains("Plan: 2 to create, 0 to update, 0 to replace, 0 to delete, 0 unchanged."),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no colour when stdout is not a terminal"
    );
    assert!(!dir.join("out").exists(), "plan changes nothing");

    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Apply complete: 2 created, 0 updated, 0 replaced, 0 deleted, 0 unchanged, 0 failed, 0 skipped."));
    // One line per finished resource, each with its label.
    let out = stdout(&o);
    let done: Vec<&str> = out.lines().filter(|l| l.contains(" created in ")).collect();
    assert_eq!(done.len(), 2, "{out}");
    assert!(
        done.iter().all(|l| l.ends_with("(intentional)")),
        "{done:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/site/index.html")).expect("read"),
        "<h1>Hello</h1>\n"
    );

    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(code(&o), 0);
    assert!(
        stdout(&o).contains("No changes. The system matches the manifest (2 resources)."),
        "{}",
        stdout(&o)
    );

    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(code(&o), 0, "no changes → 0");

    // Variables from the command line and from a values file.
    std::fs::write(dir.join("prod.yaml.values"), "title: Production\n").expect("values");
    let o = tenet(
        dir,
        &[
            "plan",
            "--values",
            "prod.yaml.values",
            "--detailed-exitcode",
        ],
    );
    assert_eq!(code(&o), 2);
    assert!(
        stdout(&o).contains("+<h1>Production</h1>"),
        "{}",
        stdout(&o)
    );
    let o = tenet(
        dir,
        &[
            "apply",
            "--yes",
            "--values",
            "prod.yaml.values",
            "--var",
            "title=Override",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/site/index.html")).expect("read"),
        "<h1>Override</h1>\n"
    );
}

#[test]
fn apply_asks_for_confirmation_and_refuses_without_a_terminal() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_manifest(tmp.path(), SITE);
    let o = tenet(tmp.path(), &["apply"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("pass --yes"), "{}", stderr(&o));
    assert!(!tmp.path().join("out/site").exists());
}

#[test]
fn plan_json_is_the_documented_format() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_manifest(tmp.path(), SITE);
    let o = tenet(tmp.path(), &["plan", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(plan["format_version"], 1);
    assert_eq!(plan["summary"]["create"], 2);
    assert_eq!(plan["providers"]["file"]["source"], "builtin:file");
    assert_eq!(
        plan["providers"]["file"]["component_sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    let index = &plan["resources"][1];
    assert_eq!(index["id"], "index");
    assert_eq!(index["type"], "file.file");
    assert_eq!(index["action"], "create");
    assert_eq!(index["depends_on"], serde_json::json!(["site"]));
    assert_eq!(index["changes"][1]["path"], "/mode");
    assert_eq!(index["changes"][1]["after"], "0644");
}

#[test]
fn a_saved_plan_applies_once_and_refuses_when_stale() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);
    let o = tenet(dir, &["plan", "--out", "first.plan"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = tenet(dir, &["apply", "first.plan"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(dir.join("out/site/index.html").exists());

    // Plan a change, then change the system behind the plan's back.
    let o = tenet(
        dir,
        &["plan", "--var", "title=Next", "--out", "second.plan"],
    );
    assert_eq!(code(&o), 0);
    std::fs::write(dir.join("out/site/index.html"), "edited by hand\n").expect("edit");
    let o = tenet(dir, &["apply", "second.plan", "--var", "title=Next"]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("refusing to apply a stale plan"), "{err}");
    assert!(
        err.contains("index: its observed state changed since the plan was made"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/site/index.html")).expect("read"),
        "edited by hand\n"
    );

    // A plan made for other variables is stale too.
    let o = tenet(dir, &["plan", "--var", "title=Next", "--out", "third.plan"]);
    assert_eq!(code(&o), 0);
    let o = tenet(dir, &["apply", "third.plan"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("the manifest"), "{}", stderr(&o));
}

#[test]
fn failures_are_isolated_and_reported_with_a_non_zero_exit() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let body = format!(
        "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n{MISBEHAVE_GRANTS}  file:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\nresources:\n\
         \x20 - {{id: writer, type: bad.probe, properties: {{path: ./out/x, action: write}}}}\n\
         \x20 - {{id: fine, type: file.file, properties: {{path: ./out/fine, content: ok}}}}\n"
    );
    write_manifest(dir, &body);
    // The misbehaving provider writes during read: the sandbox refuses, that resource
    // fails, and the independent one is still applied.
    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(
        out.contains("! writer (bad.probe) cannot be planned:"),
        "{out}"
    );
    assert!(
        out.contains("provider `bad` failed to read resource `writer`"),
        "{out}"
    );
    assert!(out.contains("+ fine (file.file) created"), "{out}");
    assert!(
        out.contains(
            "1 created, 0 updated, 0 replaced, 0 deleted, 0 unchanged, 1 failed, 0 skipped"
        ),
        "{out}"
    );
    assert!(!dir.join("out/x").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("out/fine")).expect("read"),
        "ok"
    );
}

#[test]
fn a_directory_of_manifests_is_merged_and_providers_are_listed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::write(
        dir.join("00-providers.yaml"),
        "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\n    limits: {memory: 32MiB, timeout: 5s}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("10-files.yml"),
        "resources:\n  - {id: a, type: file.file, properties: {path: ./out/a, content: a}}\n",
    )
    .expect("write");
    std::fs::write(dir.join("notes.txt"), "not a manifest").expect("write");
    let o = tenet(dir, &["apply", ".", "--yes"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(Path::new(&dir.join("out/a")).exists());

    let o = tenet(dir, &["providers"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("source:  builtin:file"), "{text}");
    assert!(text.contains("file.symlink"), "{text}");
    assert!(
        text.contains(&format!("fs rw {}", dir.join("out").display())),
        "{text}"
    );
    assert!(
        text.contains("limits:  memory 32.0 MiB per instance, 1.0 GiB in all, 5s per call"),
        "{text}"
    );

    let o = tenet(dir, &["validate"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("The manifest is valid: 1 resources, 1 providers."));
}

/// Run `tenet apply` on a pseudo-terminal (util-linux `script`), answering `answer`.
fn apply_on_a_terminal(dir: &Path, answer: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let command = format!("{} apply", env!("CARGO_BIN_EXE_tenet"));
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env("TENET_CACHE_DIR", crate::support::cache_dir())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the command on a terminal");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(answer.as_bytes())
        .expect("answer");
    child.wait_with_output().expect("wait")
}

#[test]
fn on_a_terminal_apply_asks_and_only_yes_applies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);

    let o = apply_on_a_terminal(dir, "no\n");
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("Do you want to apply these changes? Only 'yes' is accepted:"),
        "{out}"
    );
    assert!(
        out.contains("Apply cancelled; nothing was changed."),
        "{out}"
    );
    assert!(!dir.join("out/site").exists());

    let o = apply_on_a_terminal(dir, "yes\n");
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("Apply complete: 2 created"),
        "{}",
        stdout(&o)
    );
    assert!(dir.join("out/site/index.html").exists());
}

#[test]
fn apply_json_streams_one_event_per_line_and_graph_prints_dot() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(dir, SITE);
    let o = tenet(dir, &["apply", "--yes", "--json", "--parallelism", "4"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let events: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(events[0]["event"], "run_started");
    assert_eq!(events[0]["parallelism"], 4);
    let finished: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "resource_finished")
        .collect();
    assert_eq!(finished.len(), 2);
    assert!(
        finished
            .iter()
            .all(|e| e["outcome"] == "created" && e["duration_ms"].is_number())
    );
    let last = events.last().expect("events");
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["succeeded"], true);
    assert_eq!(last["counts"]["created"], 2);

    let o = tenet(dir, &["apply", "--json"]);
    assert_eq!(code(&o), 1, "--json without --yes is refused");

    let o = tenet(dir, &["graph"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let dot = stdout(&o);
    assert!(dot.starts_with("digraph tenet {"), "{dot}");
    assert!(
        dot.contains("\"site\" -> \"index\" [style=solid];"),
        "{dot}"
    );
    let o = tenet(dir, &["graph", "--format", "json"]);
    let g: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(g["edges"][0]["kind"], "explicit");
    assert_eq!(g["order"], serde_json::json!(["site", "index"]));
}

#[test]
fn ctrl_c_lets_the_call_in_flight_finish_and_starts_nothing_more() {
    use std::io::Read;
    use std::process::Command;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    // `slow-apply` reads as absent even after apply: opt out of the consistency check.
    let mut body = format!(
        "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    consistency_check: false\n    grants:\n{MISBEHAVE_GRANTS}resources:\n"
    );
    for i in 0..4 {
        body.push_str(&format!(
            "  - {{id: slow{i}, type: bad.probe, properties: {{action: slow-apply, value: {i}}}}}\n"
        ));
    }
    write_manifest(dir, &body);
    // Wait until the plan is printed (the apply starts right after), then interrupt
    // while the first 1.5 s apply runs.
    let (child, mut reader, mut out) =
        crate::support::started_applying(dir, &["apply", "--yes", "--parallelism", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    reader.read_to_string(&mut out).expect("read");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(code(&o), 1, "{out}{}", stderr(&o));
    assert!(
        stderr(&o).contains("Interrupted: starting nothing new"),
        "{}",
        stderr(&o)
    );
    assert!(
        out.contains("+ slow0 (bad.probe) created"),
        "the call in flight finished: {out}"
    );
    assert!(
        out.contains("not started: the run was interrupted"),
        "{out}"
    );
    assert!(
        out.contains(
            "1 created, 0 updated, 0 replaced, 0 deleted, 0 unchanged, 0 failed, 3 skipped"
        ),
        "{out}"
    );
}

/// README's first command (`tenet apply examples/quickstart --yes`), on a copy: it
/// converges, and a second run changes nothing.
#[test]
fn the_quickstart_example_applies_and_converges() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("quickstart");
    std::fs::create_dir(&dir).expect("dir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/tenet.yaml");
    std::fs::copy(&example, dir.join("tenet.yaml")).expect("copy the example");
    let path = dir.to_str().expect("utf-8");
    let o = tenet(tmp.path(), &["apply", path, "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Recorded as run #1"), "{}", stdout(&o));
    let index = std::fs::read_to_string(dir.join("out/site/index.html")).expect("index");
    assert!(index.contains("<h1>Hello from Tenet</h1>"), "{index}");
    let o = tenet(tmp.path(), &["plan", path, "--detailed-exitcode"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "converged: {}{}",
        stdout(&o),
        stderr(&o)
    );
}
