//! Providers in other languages, built from source with their real toolchains through
//! `tenet provider build`: the Python INI provider (componentize-py) and the JavaScript
//! JSON provider (jco, QuickJS backend). Each is planned, applied, re-applied (no
//! changes), checked for drift, corrected, and refused a write its grants do not allow.

use crate::support::{has, ok, stderr, stdout, tenet, tenet_command, tool};
use std::path::{Path, PathBuf};

/// Build `examples/providers/NAME` with `tenet provider build`, or `None` (reason
/// printed) when the toolchain is missing outside CI.
fn build(name: &str, toolchain: &str) -> Option<PathBuf> {
    tool(toolchain)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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
    lifecycle(
        &component,
        "ini",
        "  - id: app\n    type: ini.file\n    properties:\n      path: ./out/app.ini\n      sections: {server: {port: \"8080\", host: example.org}, \"\": {top: \"1\"}}\n",
        "app.ini",
        ("port = 8080", "port = 9"),
    );
}

#[test]
fn a_javascript_provider_manages_json_documents() {
    let Some(component) = build("js-json", "jco") else {
        return;
    };
    lifecycle(
        &component,
        "json",
        "  - id: app\n    type: json.document\n    properties:\n      path: ./out/app.json\n      values: {/server/port: 8080, /server/name: web, /a~1b: [1, 2]}\n",
        "app.json",
        ("8080", "9"),
    );
}
