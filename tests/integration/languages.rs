//! Providers in other languages, built from source with their real toolchains through
//! `tenet provider build`: the Python INI provider (componentize-py) and the JavaScript
//! JSON provider (jco, QuickJS backend). Each is planned, applied, re-applied (no
//! changes), checked for drift, corrected, and refused a write its grants do not allow.
//! The conformance kit (`tenet provider test`) runs on every provider in the repository,
//! all three languages, and fails a provider that breaks the contract.

use crate::support::{has, ok, stderr, stdout, tenet, tenet_command, tool};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example's component passes the conformance kit with its own fixtures.
fn passes_the_kit(component: &Path, example: &str) {
    let fixtures = format!("examples/providers/{example}/fixtures");
    let (code, out) = conformance(&[&component.display().to_string(), "--fixtures", &fixtures]);
    assert_eq!(code, Some(0), "{out}");
    has(&out, "12 checks: 12 passed, 0 failed");
}

/// `tenet provider test ARGS…` from the repository root: (exit code, output).
fn conformance(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["provider", "test"];
    all.extend_from_slice(args);
    let o = tenet(&repo(), &all);
    (o.status.code(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// Build `examples/providers/NAME` with `tenet provider build`, or `None` (reason
/// printed) when the toolchain is missing outside CI.
fn build(name: &str, toolchain: &str) -> Option<PathBuf> {
    tool(toolchain)?;
    let root = repo();
    let src = root.join("examples/providers").join(name);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("providers")
        .join(format!("{name}.wasm"));
    let o = tenet(
        &root,
        &[
            "provider",
            "build",
            &src.display().to_string(),
            "-o",
            &out.display().to_string(),
        ],
    );
    ok(&o);
    has(&stdout(&o), "Built ");
    Some(out)
}

fn manifest(d: &Path, component: &Path, name: &str, access: &str, resources: &str) {
    crate::support::write_manifest(
        d,
        &format!(
            "providers:\n  {name}:\n    source: {}\n    unsigned: true\n    grants:\n      fs: [{{path: ./out, access: {access}}}]\nresources:\n{resources}",
            component.display()
        ),
    );
}

/// plan → apply → apply again (no changes) → edit behind Tenet's back → drift (exit 2) →
/// corrective apply → converged; then a read-only grant: the write is refused by the
/// sandbox and the file is untouched.
fn lifecycle(component: &Path, name: &str, resources: &str, file: &str, edit: (&str, &str)) {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    std::fs::create_dir_all(d.join("out")).expect("out");
    manifest(d, component, name, "rw", resources);
    let o = tenet(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let o = tenet(d, &["apply", "--yes"]);
    ok(&o);
    has(&stdout(&o), "Apply complete: 1 created");
    let written = std::fs::read_to_string(d.join("out").join(file)).expect("written");
    let o = tenet(d, &["apply", "--yes"]);
    ok(&o);
    has(&stdout(&o), "No changes");
    // The second run loads the compiled component from the cache: no recompilation.
    let o = tenet(d, &["-vv", "plan"]);
    ok(&o);
    has(&stderr(&o), "compiled component loaded from cache");
    assert!(!stderr(&o).contains("component compiled"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(d.join("out").join(file)).expect("same"),
        written
    );

    // Drift: someone edits the file.
    std::fs::write(d.join("out").join(file), written.replace(edit.0, edit.1)).expect("edit");
    let o = tenet(d, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    has(&stdout(&o), "drifted");
    let o = tenet(d, &["apply", "--yes"]);
    ok(&o);
    has(&stdout(&o), "corrective");
    assert_eq!(
        std::fs::read_to_string(d.join("out").join(file)).expect("fixed"),
        written
    );

    // The sandbox: with a read-only grant the write is refused and nothing changes.
    std::fs::write(d.join("out").join(file), written.replace(edit.0, edit.1)).expect("edit");
    manifest(d, component, name, "ro", resources);
    let o = tenet_command(d, &["apply", "--yes"]).output().expect("run");
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    has(&all, "cannot write");
    has(&all, &format!("provider `{name}`"));
    assert_eq!(
        std::fs::read_to_string(d.join("out").join(file)).expect("untouched"),
        written.replace(edit.0, edit.1)
    );
}

#[test]
fn a_python_provider_manages_ini_files() {
    let Some(component) = build("python-ini", "componentize-py") else {
        return;
    };
    passes_the_kit(&component, "python-ini");
    lifecycle(
        &component,
        "ini",
        "  - id: app\n    type: ini.file\n    properties:\n      path: ./out/app.ini\n      sections: {server: {port: \"8080\", host: example.org}, \"\": {top: \"1\"}}\n",
        "app.ini",
        ("port = 8080", "port = 9"),
    );

    // An existing file: CRLF line ends, a duplicated key, no final newline, a comment.
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    std::fs::create_dir_all(d.join("out")).expect("out");
    std::fs::write(
        d.join("out/dup.ini"),
        "; keep\r\n[server]\r\nport=1\r\nport=2\r\nhost=x",
    )
    .expect("ini");
    manifest(
        d,
        &component,
        "ini",
        "rw",
        "  - id: dup\n    type: ini.file\n    properties: {path: ./out/dup.ini, sections: {server: {port: \"8080\", new: \"1\"}}}\n",
    );
    ok(&tenet(d, &["apply", "--yes"]));
    assert_eq!(
        std::fs::read_to_string(d.join("out/dup.ini")).expect("ini"),
        "; keep\r\n[server]\r\nport = 8080\r\nhost=x\r\nnew = 1\r\n"
    );
    has(&stdout(&tenet(d, &["apply", "--yes"])), "No changes");
}

#[test]
fn a_javascript_provider_manages_json_documents() {
    let Some(component) = build("js-json", "jco") else {
        return;
    };
    passes_the_kit(&component, "js-json");
    lifecycle(
        &component,
        "json",
        "  - id: app\n    type: json.document\n    properties:\n      path: ./out/app.json\n      values: {/server/port: 8080, /server/name: web, /a~1b: [1, 2]}\n",
        "app.json",
        ("8080", "9"),
    );
}

#[test]
fn the_built_in_rust_providers_pass_the_conformance_kit() {
    let (code, out) = conformance(&["builtin:file", "--fixtures", "plugins/file/fixtures"]);
    assert_eq!(code, Some(0), "{out}");
    has(&out, "93 checks: 93 passed, 0 failed");
    for kind in ["file ", "directory ", "symlink ", "line ", "block "] {
        has(&out, kind);
    }
    let (code, out) = conformance(&[
        "builtin:exec",
        "--fixtures",
        "plugins/exec/fixtures",
        "--grants",
        "plugins/exec/grants.yaml",
    ]);
    assert_eq!(code, Some(0), "{out}");
    has(&out, "delete succeeds and keeps (as declared)");
    let (code, out) = conformance(&["builtin:cron", "--fixtures", "plugins/cron/fixtures"]);
    assert_eq!(code, Some(0), "{out}");
    has(&out, "12 checks: 12 passed, 0 failed");
}

#[test]
fn the_conformance_kit_fails_a_provider_that_breaks_the_contract() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fixtures = tmp.path();
    // The misbehaving provider, asked to lie about what apply did and to report changes
    // when there are none.
    let grants = tmp.path().join("grants.yaml");
    std::fs::write(
        &grants,
        "exec: [{program: /bin/echo, args: [[\"**\"]], mode: probe}]\nnet: [\"http://127.0.0.1:*\"]\n",
    )
    .expect("grants");
    std::fs::write(
        fixtures.join("probe.yaml"),
        "lying:\n  properties: {action: lying-apply, path: ./lie}\n",
    )
    .expect("fixtures");
    let fixtures = tmp.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).expect("dir");
    std::fs::rename(tmp.path().join("probe.yaml"), fixtures.join("probe.yaml")).expect("mv");
    let run = |fixtures: &Path| {
        conformance(&[
            crate::support::MISBEHAVE_WASM,
            "--fixtures",
            &fixtures.display().to_string(),
            "--grants",
            &grants.display().to_string(),
            "--timeout",
            "1s",
        ])
    };
    let (code, out) = run(&fixtures);
    assert_eq!(code, Some(1), "{out}");
    has(&out, "FAILED probe / lying / apply → read round-trips");
    has(&out, "failed");
    // No fixtures for a kind is a failure too, and bad fixtures are reported with their place.
    std::fs::write(fixtures.join("probe.yaml"), "x: {}\n").expect("bad");
    let (code, out) = run(&fixtures);
    assert_eq!(code, Some(1), "{out}");
    has(&out, "probe.yaml:1:4: fixture `x` needs `properties`");
    // An empty fixtures file does not count as testing the kind.
    std::fs::write(fixtures.join("probe.yaml"), "{}\n").expect("empty");
    let (code, out) = run(&fixtures);
    assert_eq!(code, Some(1), "{out}");
    has(&out, "FAILED: no fixtures for kind probe");
    // A provider stopped by a limit fails "calls stay within limits".
    std::fs::write(
        fixtures.join("probe.yaml"),
        "looping:\n  properties: {action: loop, path: ./x}\n",
    )
    .expect("loop");
    std::fs::write(
        &grants,
        "exec: [{program: /bin/echo, args: [[\"**\"]], mode: probe}]\nnet: [\"http://127.0.0.1:*\"]\n",
    )
    .expect("grants");
    let (code, out) = run(&fixtures);
    assert_eq!(code, Some(1), "{out}");
    has(&out, "FAILED probe / looping / calls stay within limits");
}

/// `tenet provider new NAME --lang L` → `tenet provider build` → `tenet provider test`:
/// the skeleton builds and passes the contract as written.
fn scaffold_builds_and_passes(lang: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let name = format!("note-{lang}");
    ok(&tenet(d, &["provider", "new", &name, "--lang", lang]));
    // Not over an existing project.
    let again = tenet(d, &["provider", "new", &name, "--lang", lang]);
    crate::support::fails_with(&again, "exists and is not empty");
    let o = tenet_command(d, &["provider", "build", &name])
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target"),
        )
        .output()
        .expect("build");
    ok(&o);
    if lang == "rust" {
        // The skeleton's own native unit test passes too.
        let o = std::process::Command::new(env!("CARGO"))
            .args(["test", "--quiet"])
            .current_dir(d.join(&name))
            .env(
                "CARGO_TARGET_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target"),
            )
            .output()
            .expect("cargo test");
        ok(&o);
    }
    let component = d.join(&name).join(format!("{name}.wasm"));
    let o = tenet(d, &["provider", "test", &component.display().to_string()]);
    ok(&o);
    has(&stdout(&o), "12 checks: 12 passed, 0 failed");
}

#[test]
fn scaffolded_providers_build_and_pass_the_contract_in_every_language() {
    scaffold_builds_and_passes("rust");
    if tool("componentize-py").is_some() {
        scaffold_builds_and_passes("python");
    }
    if tool("jco").is_some() {
        scaffold_builds_and_passes("js");
    }
    fails_with_name();
}

fn fails_with_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    crate::support::fails_with(
        &tenet(tmp.path(), &["provider", "new", "Bad Name", "--lang", "js"]),
        "is not a provider name",
    );
    crate::support::fails_with(
        &tenet(tmp.path(), &["provider", "build", "."]),
        "no provider source found",
    );
}

#[test]
fn components_that_are_not_providers_are_refused_saying_what_was_expected_and_found() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let expected =
        "expected a WebAssembly component exporting tenet:provider/resources@0.1.x, found";
    let refused = |file: &str, found: &str| {
        let (code, out) = conformance(&[
            &d.join(file).display().to_string(),
            "--fixtures",
            &d.display().to_string(),
        ]);
        assert_eq!(code, Some(1), "{out}");
        has(&out, expected);
        has(&out, found);
    };
    std::fs::write(d.join("random.wasm"), b"certainly not WebAssembly").expect("write");
    refused("random.wasm", "25 bytes that are not WebAssembly");
    std::fs::write(d.join("core.wasm"), b"\0asm\x01\0\0\0").expect("write");
    refused("core.wasm", "a core WebAssembly module");
    refused_future_abi(d);
    // A real component of another world, built with jco.
    if tool("jco").is_none() {
        return;
    }
    std::fs::create_dir_all(d.join("greeter")).expect("dir");
    std::fs::write(
        d.join("greeter/world.wit"),
        "package test:greeter;\nworld greeter {\n  export greet: func() -> string;\n}\n",
    )
    .expect("wit");
    std::fs::write(
        d.join("greeter/greet.js"),
        "export function greet() { return 'hi'; }\n",
    )
    .expect("js");
    let o = std::process::Command::new("jco")
        .args([
            "componentize",
            "greet.js",
            "--wit",
            "world.wit",
            "--backend",
            "quickjs",
            "-o",
            "../greeter.wasm",
        ])
        .current_dir(d.join("greeter"))
        .output()
        .expect("jco");
    ok(&o);
    refused("greeter.wasm", "a component exporting init, greet");
}

fn refused_future_abi(d: &Path) {
    let (code, out) = conformance(&[
        env!("TENET_TEST_GUEST_FUTURE_ABI_WASM"),
        "--fixtures",
        &d.display().to_string(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    has(
        &out,
        "unsupported ABI version 0.2.0 of tenet:provider/resources; this Tenet supports >=0.1.0, <0.2.0",
    );
}
