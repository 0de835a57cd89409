//! Opening sessions on real manifests with the built-in `file` provider (compiled in
//! the sandbox, no disk cache).

use super::*;
use crate::diag::Severity;
use std::path::Path;

fn options(dir: &Path) -> SessionOptions {
    SessionOptions {
        path: dir.to_path_buf(),
        ..SessionOptions::default()
    }
}

async fn open(options: &SessionOptions) -> Result<Session, SessionError> {
    Session::open_with_cache(options, CompileCache::new(None)).await
}

fn write(dir: &Path, text: &str) {
    std::fs::write(dir.join("tenet.yaml"), text).expect("write manifest");
}

const GRANT_OUT: &str = "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\n";

fn errors(e: SessionError) -> Vec<(usize, String)> {
    match e {
        SessionError::Invalid(ValidationFailed(d)) => d
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| (d.location.as_ref().map_or(0, |l| l.line), d.message.clone()))
            .collect(),
        other => panic!("expected validation errors, got {other}"),
    }
}

#[tokio::test]
async fn opens_a_valid_manifest_with_its_providers_and_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        &format!(
            "{GRANT_OUT}resources:\n  - id: page\n    type: file.file\n    depends_on: [site]\n    properties: {{path: ./out/site/index.html, content: hi}}\n  - id: site\n    type: file.directory\n    properties: {{path: ./out/site}}\n"
        ),
    );
    let s = open(&options(dir.path())).await.expect("valid");
    assert_eq!(s.providers.keys().collect::<Vec<_>>(), ["file"]);
    assert!(matches!(s.provenance["file"], Provenance::Builtin));
    // `site` (index 1) comes before `page` (index 0), which depends on it.
    assert_eq!(s.graph.order(), &[1, 0]);
    let pins = s.pins();
    assert!(pins["file"].component_sha256.len() == 64, "{pins:?}");
    assert!(
        pins["file"].granted.iter().any(|g| g.contains("out")),
        "granted: {:?}",
        pins["file"].granted
    );
}

#[tokio::test]
async fn reports_every_problem_at_once_with_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        &format!(
            "{GRANT_OUT}resources:\n  - id: a\n    type: file.nonsense\n    properties: {{path: ./out/a}}\n  - id: b\n    type: file.file\n    properties: {{path: ./out/b, mode: 12}}\n  - id: c\n    type: file.file\n    depends_on: [nowhere]\n    properties: {{path: ./out/c, content: x}}\n"
        ),
    );
    let found = errors(open(&options(dir.path())).await.err().expect("invalid"));
    assert!(found.len() >= 3, "{found:?}");
    // Each problem at its own place: the unknown kind, the bad mode, the missing dependency.
    for (line, what) in [(7, "nonsense"), (11, "mode"), (14, "nowhere")] {
        assert!(
            found.iter().any(|(l, m)| *l == line && m.contains(what)),
            "no error about `{what}` at line {line}: {found:?}"
        );
    }
}

#[tokio::test]
async fn a_grant_that_reaches_the_state_is_refused_and_the_provider_not_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "providers:\n  file:\n    grants:\n      fs: [{path: ./db, access: rw}]\nresources: []\n",
    );
    let mut o = options(dir.path());
    // The state elsewhere than beside the manifest: the session protects it there.
    o.state = crate::state::Location {
        explicit: Some(dir.path().join("db/state.db")),
    };
    let found = errors(open(&o).await.err().expect("refused"));
    assert!(found.iter().any(|(_, m)| m.contains("state")), "{found:?}");
    // With the state beside the manifest, the same grant is fine.
    let s = open(&options(dir.path())).await.expect("valid");
    assert!(s.providers.contains_key("file"));
}

#[tokio::test]
async fn run_options_carry_each_providers_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "providers:\n  file:\n    max_concurrency: 3\n    consistency_check: false\n    grants:\n      fs: [{path: ./out, access: rw}]\nresources: []\n",
    );
    let s = open(&options(dir.path())).await.expect("valid");
    let o = s.run_options(7, true);
    assert_eq!(o.parallelism, 7);
    assert!(o.fail_fast);
    assert_eq!(o.provider_limits.get("file"), Some(&3));
    assert!(o.unchecked_providers.contains("file"));
}

#[tokio::test]
async fn a_malformed_oci_reference_is_reported_at_its_source_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "providers:\n  a:\n    source: oci://no-registry/x:1\n  b:\n    source: oci://localhost:5000/x\n  file: {}\nresources: []\n",
    );
    let found = errors(open(&options(dir.path())).await.err().expect("invalid"));
    assert!(
        found.iter().any(|(l, m)| *l == 3
            && m.starts_with("source of provider `a`: ")
            && m.contains("`no-registry` is not a registry host")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(l, m)| *l == 5 && m.contains("names neither a tag nor a digest")),
        "{found:?}"
    );
}
