//! The real `file` provider and the misbehaving test guest, driven through the wasmtime
//! host and the engine: lifecycle, exact plans, idempotency, the sandbox's refusals,
//! trap/timeout isolation and the compile cache.

use crate::support::{MISBEHAVE_GRANTS, MISBEHAVE_WASM, snapshot, write_manifest};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tenet::engine::{Outcome, RunOptions};
use tenet::manifest::{Access, FsGrant, Grants, Limits, ProviderDecl, ProviderSource};
use tenet::plan::Plan;
use tenet::provider::{Action, CallContext, ErrorKind, Provider};
use tenet::session::{Session, SessionOptions};
use tenet::wasm::plugin::{CompileCache, PluginError, PluginHost};

fn args(dir: &Path) -> SessionOptions {
    SessionOptions {
        path: dir.to_path_buf(),
        ..SessionOptions::default()
    }
}

async fn open(dir: &Path) -> Session {
    Session::open_with_cache(&args(dir), crate::support::compile_cache())
        .await
        .unwrap_or_else(|e| panic!("manifest must be valid: {e:#}"))
}

async fn plan(dir: &Path) -> (Session, Plan) {
    let s = open(dir).await;
    let p = s
        .engine()
        .plan(&s.manifest, &s.graph, s.pins(), &RunOptions::default())
        .await;
    assert!(!p.has_errors(), "plan errors: {:?}", p.resources);
    (s, p)
}

async fn apply(dir: &Path) -> BTreeMap<String, Outcome> {
    let (s, p) = plan(dir).await;
    let report = s
        .engine()
        .apply(&p, &RunOptions::default(), &mut |_| {})
        .await;
    report
        .results
        .into_iter()
        .map(|r| (r.id, r.outcome))
        .collect()
}

fn file_manifest(resources: &str) -> String {
    format!(
        "providers:\n  file:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\nresources:\n{resources}"
    )
}

/// (JSON pointer, before, after) of one field change.
type Change = (String, Option<Value>, Option<Value>);

fn changes(p: &Plan, id: &str) -> (Action, Vec<Change>) {
    let r = p
        .resources
        .iter()
        .find(|r| r.id == id)
        .expect("resource in plan");
    (
        r.action,
        r.changes
            .iter()
            .map(|c| (c.path.clone(), c.before.clone(), c.after.clone()))
            .collect(),
    )
}

#[tokio::test]
async fn file_lifecycle_with_exact_plans_and_idempotency() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let out = dir.join("out");
    let v1 = file_manifest(
        "  - {id: d, type: file.directory, properties: {path: ./out/d, mode: \"0750\"}}\n\
         \x20 - {id: f, type: file.file, depends_on: [d], properties: {path: ./out/d/f.txt, content: \"one\\ntwo\\n\", mode: \"0640\"}}\n\
         \x20 - {id: l, type: file.symlink, depends_on: [f], properties: {path: ./out/link, target: d/f.txt}}\n",
    );
    write_manifest(dir, &v1);

    // Create: the plan lists exactly the desired fields.
    let (_, p) = plan(dir).await;
    let (action, c) = changes(&p, "f");
    assert_eq!(action, Action::Create);
    let paths: Vec<&str> = c.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(paths, ["/path", "/content", "/mode"]);
    assert_eq!(p.summary.create, 3);
    let outcomes = apply(dir).await;
    assert!(
        outcomes.values().all(|o| *o == Outcome::Created),
        "{outcomes:?}"
    );
    let f = out.join("d/f.txt");
    assert_eq!(std::fs::read_to_string(&f).expect("read"), "one\ntwo\n");
    assert_eq!(
        std::fs::metadata(&f).expect("meta").permissions().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        std::fs::metadata(out.join("d"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    assert_eq!(
        std::fs::read_link(out.join("link")).expect("link"),
        Path::new("d/f.txt")
    );

    // A second apply changes nothing and touches nothing.
    let before = snapshot(&out);
    let (_, p) = plan(dir).await;
    assert!(
        !p.has_changes(),
        "second plan must be empty: {:?}",
        p.summary
    );
    let outcomes = apply(dir).await;
    assert!(
        outcomes.values().all(|o| *o == Outcome::Unchanged),
        "{outcomes:?}"
    );
    assert_eq!(
        before,
        snapshot(&out),
        "a converged apply must not touch the system"
    );

    // Update content only: one field change, before and after.
    write_manifest(dir, &v1.replace("one\\ntwo\\n", "one\\nthree\\n"));
    let (_, p) = plan(dir).await;
    assert_eq!(
        changes(&p, "f"),
        (
            Action::Update,
            vec![(
                "/content".into(),
                Some(json!("one\ntwo\n")),
                Some(json!("one\nthree\n"))
            )]
        )
    );
    assert_eq!(p.summary.update, 1);
    assert_eq!(p.summary.unchanged, 2);
    apply(dir).await;
    assert_eq!(std::fs::read_to_string(&f).expect("read"), "one\nthree\n");
    assert_eq!(
        std::fs::metadata(&f).expect("meta").permissions().mode() & 0o7777,
        0o640,
        "mode kept"
    );

    // Update mode only.
    let v2 = v1
        .replace("one\\ntwo\\n", "one\\nthree\\n")
        .replace("\"0640\"", "\"0600\"");
    write_manifest(dir, &v2);
    let (_, p) = plan(dir).await;
    assert_eq!(
        changes(&p, "f"),
        (
            Action::Update,
            vec![("/mode".into(), Some(json!("0640")), Some(json!("0600")))]
        )
    );
    apply(dir).await;
    assert_eq!(
        std::fs::metadata(&f).expect("meta").permissions().mode() & 0o7777,
        0o600
    );

    // Replace: a symlink's target cannot change in place.
    let v3 = v2.replace("target: d/f.txt", "target: d");
    write_manifest(dir, &v3);
    let (_, p) = plan(dir).await;
    let r = p.resources.iter().find(|r| r.id == "l").expect("l");
    assert_eq!(r.action, Action::Replace);
    assert!(r.changes[0].forces_replacement);
    let outcomes = apply(dir).await;
    assert_eq!(outcomes["l"], Outcome::Replaced);
    assert_eq!(
        std::fs::read_link(out.join("link")).expect("link"),
        Path::new("d")
    );

    // Delete through `ensure: absent`.
    write_manifest(
        dir,
        &v3.replace("content: \"one\\nthree\\n\"", "ensure: absent"),
    );
    let (_, p) = plan(dir).await;
    assert_eq!(changes(&p, "f").0, Action::Delete);
    let outcomes = apply(dir).await;
    assert_eq!(outcomes["f"], Outcome::Deleted);
    assert!(!f.exists());
    let (_, p) = plan(dir).await;
    assert!(!p.has_changes());
}

#[tokio::test]
async fn a_plan_leaves_the_file_system_byte_for_byte_unchanged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("keep")).expect("mkdir");
    std::fs::write(out.join("keep/a.txt"), "old content\n").expect("write");
    std::fs::write(out.join("gone.txt"), "x").expect("write");
    std::fs::set_permissions(
        out.join("keep/a.txt"),
        std::fs::Permissions::from_mode(0o604),
    )
    .expect("chmod");
    write_manifest(
        dir,
        &file_manifest(
            "  - {id: a, type: file.file, properties: {path: ./out/keep/a.txt, content: \"new\\n\", mode: \"0600\"}}\n\
             \x20 - {id: g, type: file.file, properties: {path: ./out/gone.txt, ensure: absent}}\n\
             \x20 - {id: n, type: file.directory, properties: {path: ./out/new}}\n",
        ),
    );
    let before = snapshot(&out);
    let (_, p) = plan(dir).await;
    assert_eq!(
        (p.summary.update, p.summary.delete, p.summary.create),
        (1, 1, 1)
    );
    assert_eq!(before, snapshot(&out));
}

#[tokio::test]
async fn a_missing_granted_directory_plans_as_empty_and_is_created_on_apply() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(
        dir,
        &file_manifest("  - {id: a, type: file.file, properties: {path: ./out/a, content: x}}\n"),
    );
    let (_, p) = plan(dir).await;
    assert_eq!(p.summary.create, 1);
    assert!(
        !dir.join("out").exists(),
        "plan must not create the granted directory"
    );
    let outcomes = apply(dir).await;
    assert_eq!(outcomes["a"], Outcome::Created);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/a")).expect("read"),
        "x"
    );
}

#[tokio::test]
async fn writes_outside_the_grant_are_refused_by_the_sandbox() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let outside = tempfile::tempdir().expect("outside");
    std::fs::create_dir_all(dir.join("out")).expect("mkdir");
    // A symlink inside the grant that points outside it.
    std::os::unix::fs::symlink(outside.path(), dir.join("out/escape")).expect("symlink");
    write_manifest(
        dir,
        &file_manifest("  - {id: a, type: file.file, properties: {path: ./out/a, content: x}}\n"),
    );
    let s = open(dir).await;
    let file = &s.providers["file"];
    let cx = CallContext { resource: "evil" };
    for target in [
        outside.path().join("direct.txt"),
        dir.join("out/escape/through-link.txt"),
        dir.join("out/../sibling.txt"),
    ] {
        let desired = json!({"path": target.to_string_lossy(), "content": "pwned"});
        let err = file
            .apply(cx, "file", &desired, None)
            .await
            .expect_err("a write outside the grant must fail");
        assert_eq!(err.provider, "file");
        assert_eq!(err.resource, "evil");
        assert!(
            matches!(
                err.kind,
                ErrorKind::CapabilityDenied | ErrorKind::Conflict | ErrorKind::NotFound
            ),
            "{err}"
        );
        assert!(!target.exists(), "{} must not exist", target.display());
    }
    assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);
    assert!(!dir.join("sibling.txt").exists());
}

fn misbehave_manifest(limits: &str, resources: &str) -> String {
    format!(
        "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n{MISBEHAVE_GRANTS}    limits: {limits}\nresources:\n{resources}"
    )
}

#[tokio::test]
async fn writes_during_a_plan_are_refused_by_the_host() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("out")).expect("mkdir");
    std::fs::write(dir.join("out/existing"), "keep").expect("write");
    write_manifest(
        dir,
        &misbehave_manifest(
            "{}",
            "  - {id: w, type: bad.probe, properties: {path: ./out/planted, action: write}}\n\
             \x20 - {id: c, type: bad.probe, properties: {path: ./out/existing, action: chmod}}\n",
        ),
    );
    let before = snapshot(&dir.join("out"));
    let s = open(dir).await;
    let p = s
        .engine()
        .plan(&s.manifest, &s.graph, s.pins(), &RunOptions::default())
        .await;
    let err_of = |id: &str| {
        p.resources
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.error.clone())
            .unwrap_or_else(|| panic!("{id} must fail during plan"))
    };
    let w = err_of("w");
    assert!(
        w.contains("provider `bad` failed to read resource `w`"),
        "{w}"
    );
    let c = err_of("c");
    assert!(
        c.contains("only apply and delete may change the system"),
        "{c}"
    );
    assert!(c.contains("capability fs write"), "{c}");
    assert!(!dir.join("out/planted").exists());
    assert_eq!(before, snapshot(&dir.join("out")));
}

#[tokio::test]
async fn traps_and_timeouts_fail_one_call_and_the_provider_recovers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(
        dir,
        &misbehave_manifest(
            "{memory: 64MiB, timeout: 300ms}",
            "  - {id: ok, type: bad.probe, properties: {action: ok}}\n",
        ),
    );
    let s = open(dir).await;
    let bad = &s.providers["bad"];
    let call = |action: &'static str, id: &'static str| async move {
        bad.read(
            CallContext { resource: id },
            "probe",
            &json!({"action": action}),
        )
        .await
    };
    let started = std::time::Instant::now();
    let e = call("loop", "spinner")
        .await
        .expect_err("loop must time out");
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        e.to_string(),
        "provider `bad` failed to read resource `spinner`: deadline exceeded: did not finish within 300ms (interrupted)"
    );
    call("ok", "after-loop")
        .await
        .expect("a fresh instance serves the next call");

    let e = call("panic", "crasher").await.expect_err("panic must trap");
    assert_eq!(e.kind, ErrorKind::Trap, "{e}");
    assert!(
        e.to_string().contains("misbehave panicked on purpose"),
        "{e}"
    );
    call("ok", "after-panic")
        .await
        .expect("recovered after a trap");

    let e = call("alloc", "hog")
        .await
        .expect_err("1 GiB must exceed a 64 MiB cap");
    assert_eq!(e.kind, ErrorKind::Trap, "{e}");
    call("ok", "after-alloc")
        .await
        .expect("recovered after hitting the memory cap");

    // Contract: a diff that reports a change where nothing differs is refused.
    let noisy = json!({"action": "noisy-diff"});
    let e = bad
        .diff(
            CallContext { resource: "noisy" },
            "probe",
            &noisy,
            Some(&noisy),
        )
        .await
        .expect_err("a change with equal before and after is a contract violation");
    assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
    assert!(
        e.to_string().starts_with("provider `bad` failed to diff resource `noisy`: contract violation: diff returned `update` although the current state equals the desired properties"),
        "{e}"
    );

    call("log-flood", "chatty")
        .await
        .expect("log flood is capped, not fatal");
}

#[tokio::test]
async fn a_failing_resource_does_not_stop_independent_ones() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let body = format!(
        "providers:\n  bad:\n    source: {MISBEHAVE_WASM}\n    unsigned: true\n    grants:\n{MISBEHAVE_GRANTS}  file:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\nresources:\n\
         \x20 - {{id: boom, type: bad.probe, properties: {{action: ok}}}}\n\
         \x20 - {{id: after-boom, type: file.file, depends_on: [boom], properties: {{path: ./out/dependent, content: x}}}}\n\
         \x20 - {{id: independent, type: file.file, properties: {{path: ./out/independent, content: y}}}}\n"
    );
    write_manifest(dir, &body);
    let (s, mut p) = plan(dir).await;
    // `ok` plans fine (and unchanged); make it a create whose apply panics.
    let boom = p
        .resources
        .iter_mut()
        .find(|r| r.id == "boom")
        .expect("boom");
    boom.desired = json!({"action": "panic"});
    boom.action = Action::Create;
    let report = s
        .engine()
        .apply(&p, &RunOptions::default(), &mut |_| {})
        .await;
    let by_id: BTreeMap<_, _> = report
        .results
        .iter()
        .map(|r| (r.id.as_str(), &r.outcome))
        .collect();
    assert!(
        matches!(by_id["boom"], Outcome::Failed { error } if error.contains("provider `bad` failed to apply resource `boom`"))
    );
    assert_eq!(
        *by_id["after-boom"],
        Outcome::Skipped {
            upstream: "boom".into()
        }
    );
    assert_eq!(*by_id["independent"], Outcome::Created);
    assert!(dir.join("out/independent").exists());
    assert!(!dir.join("out/dependent").exists());
}

fn decl(name: &str, source: ProviderSource) -> ProviderDecl {
    ProviderDecl {
        name: name.into(),
        source,
        grants: Grants {
            fs: vec![FsGrant {
                path: "/nonexistent-grant".into(),
                access: Access::ReadOnly,
                location: None,
            }],
            ..Grants::default()
        },
        limits: Limits::default(),
        max_concurrency: None,
        consistency_check: true,
        unsigned: true,
        retry: None,
        location: tenet::diag::Location::new("test.yaml", 1, 1),
        source_location: None,
    }
}

/// A policy trusting no key and no lock (the test declarations are `unsigned: true`).
fn no_trust(
    store: &tenet::distribution::store::PluginStore,
) -> tenet::distribution::source::TrustPolicy<'_> {
    tenet::distribution::source::TrustPolicy {
        trusted: &[],
        allow_unsigned: false,
        store,
        lock: None,
        oci_digest: None,
    }
}

/// Resolve `decl`'s source (these test components are unsigned) and load it.
async fn load(
    host: &PluginHost,
    decl: &ProviderDecl,
) -> Result<std::sync::Arc<tenet::wasm::plugin::WasmProvider>, PluginError> {
    let store = tenet::distribution::store::PluginStore::new(std::path::PathBuf::from(
        "/nonexistent-store",
    ));
    let policy = no_trust(&store);
    let r = tenet::distribution::source::resolve(decl, &policy).expect("resolve");
    host.load(decl, &r.bytes, &r.sha256, &r.origin).await
}

#[tokio::test]
async fn the_second_load_uses_the_compile_cache() {
    let cache = tempfile::tempdir().expect("cache");
    let d = decl("file", ProviderSource::Builtin("file".into()));
    let keys = tempfile::tempdir().expect("keys");
    let keyed = || {
        CompileCache::with_key_file(
            Some(cache.path().to_path_buf()),
            Some(keys.path().join("cache.key")),
        )
    };
    let first = PluginHost::new(keyed()).expect("host");
    load(&first, &d).await.expect("load");
    assert_eq!(
        first
            .cache()
            .compiled
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let second = PluginHost::new(keyed()).expect("host");
    let p = load(&second, &d).await.expect("load from cache");
    assert_eq!(
        second
            .cache()
            .compiled
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no recompilation"
    );
    assert_eq!(
        second
            .cache()
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(p.info().name, "file");
    let entries = std::fs::read_dir(cache.path().join("compiled"))
        .expect("ls")
        .count();
    assert_eq!(entries, 1, "one artifact, no temporaries left behind");
}

#[tokio::test]
async fn non_providers_are_refused_with_what_was_expected_and_found() {
    let tmp = tempfile::tempdir().expect("tmp");
    let host = PluginHost::new(CompileCache::new(None)).expect("host");
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "random",
            b"definitely not wasm at all",
            "26 bytes that are not WebAssembly",
        ),
        ("core", b"\0asm\x01\0\0\0", "a core WebAssembly module"),
        (
            "future",
            b"\0asm\x0e\0\x01\0",
            "a WebAssembly binary of an unknown version",
        ),
    ];
    for (name, bytes, found) in cases {
        let path = tmp.path().join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).expect("write");
        let err = match load(&host, &decl(name, ProviderSource::Path(path))).await {
            Ok(_) => panic!("{name} must be refused"),
            Err(e) => e,
        };
        assert!(matches!(err, PluginError::NotAComponent { .. }), "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("provider `{name}`: ")), "{text}");
        assert!(
            text.contains(
                "expected a WebAssembly component exporting tenet:provider/resources@0.1.x"
            ),
            "{text}"
        );
        assert!(text.contains(found), "{text}");
    }
    let store = tenet::distribution::store::PluginStore::new(std::path::PathBuf::from(
        "/nonexistent-store",
    ));
    let policy = no_trust(&store);
    let err = match tenet::distribution::source::resolve(
        &decl("nope", ProviderSource::Builtin("nope".into())),
        &policy,
    ) {
        Ok(_) => panic!("unknown builtin must be refused"),
        Err(e) => e,
    };
    assert_eq!(
        err.to_string(),
        "provider `nope`: no built-in provider `nope` (built-in: file, exec, cron, account, apt, service, http)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_resources_apply_in_parallel_ordered_by_paths_and_references() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut body = String::new();
    for d in 0..10 {
        body.push_str(&format!(
            "  - {{id: d{d}, type: file.directory, properties: {{path: ./out/d{d}}}}}\n"
        ));
        for f in 0..30 {
            // No depends_on: each file is ordered after its directory by its path alone.
            let content = if f == 0 {
                format!("\"in ${{resources.d{d}.path}}\"")
            } else {
                format!("\"file {d}/{f}\"")
            };
            body.push_str(&format!(
                "  - {{id: f{d}-{f}, type: file.file, properties: {{path: ./out/d{d}/f{f}.txt, content: {content}}}}}\n"
            ));
        }
    }
    // A value known only after apply: the digest another file ends up with.
    body.push_str("  - {id: digest, type: file.file, properties: {path: ./out/digest, content: \"${resources.f3-7.content_sha256}\"}}\n");
    write_manifest(dir, &file_manifest(&body));

    let s = open(dir).await;
    let count =
        |kind: tenet::graph::EdgeKind| s.graph.edges().iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        count(tenet::graph::EdgeKind::Auto),
        290,
        "files under a managed directory depend on it"
    );
    assert_eq!(count(tenet::graph::EdgeKind::Reference), 11);
    let p = s
        .engine()
        .plan(&s.manifest, &s.graph, s.pins(), &RunOptions::default())
        .await;
    assert_eq!(p.summary.create, 311);
    let digest = p
        .resources
        .iter()
        .find(|r| r.id == "digest")
        .expect("digest");
    assert_eq!(digest.unknown, vec!["/content".to_owned()]);

    let options = RunOptions {
        parallelism: 16,
        ..RunOptions::default()
    };
    let report = s.engine().apply(&p, &options, &mut |_| {}).await;
    assert!(
        report.succeeded(),
        "{:?}",
        report
            .results
            .iter()
            .filter(|r| !r.outcome.is_success())
            .collect::<Vec<_>>()
    );
    assert_eq!(report.counts().created, 311);
    let out = dir.join("out");
    assert_eq!(
        std::fs::read_to_string(out.join("d4/f0.txt")).expect("read"),
        format!("in {}", out.join("d4").display())
    );
    let bytes = std::fs::read(out.join("d3/f7.txt")).expect("read");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert_eq!(
        std::fs::read_to_string(out.join("digest")).expect("read"),
        sha
    );

    let (_, again) = plan(dir).await;
    assert!(!again.has_changes(), "converged: {:?}", again.summary);
}

#[tokio::test]
async fn abi_versions_are_checked_before_instantiation_and_0_1_0_providers_still_load() {
    let host = PluginHost::new(CompileCache::new(None)).expect("host");
    let future = ProviderSource::Path(env!("TENET_TEST_GUEST_FUTURE_ABI_WASM").into());
    let err = match load(&host, &decl("future", future)).await {
        Ok(_) => panic!("a 0.2.0 provider must be refused"),
        Err(e) => e,
    };
    assert!(matches!(err, PluginError::Abi { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "provider `future`: unsupported ABI version 0.2.0 of tenet:provider/resources; this Tenet supports >=0.1.0, <0.2.0"
    );

    // Built against the released 0.1.0 text: no `capabilities` export, host 0.1.0 imports.
    let old = ProviderSource::Path(env!("TENET_TEST_GUEST_ABI_0_1_0_WASM").into());
    let p = load(&host, &decl("old", old)).await.expect("0.1.0 loads");
    assert_eq!(p.info().kinds["note"].identity, "name");
    assert_eq!(
        *p.requested(),
        tenet::wasm::grants::Requested {
            abi: "0.1.0".into(),
            ..tenet::wasm::grants::Requested::default()
        }
    );
    let cx = CallContext { resource: "n" };
    let props = json!({"name": "x"});
    assert_eq!(
        p.read(cx, "note", &props).await.expect("read"),
        Some(props.clone())
    );
}
