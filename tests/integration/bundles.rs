//! Plugin bundles (issue 6): pack a real component, sign it, verify it, and refuse every
//! way a bundle can be wrong — untrusted key, a signature over other bytes, a tampered or
//! truncated bundle, capabilities that differ from the component's — and check the
//! signature with the `minisign` tool itself; signatures required at load; tenet.lock
//! with signer, capabilities and `--upgrade`; the content-addressed store; and push/pull
//! through a real OCI registry (Debian's docker-registry) read by a generic tool (skopeo).

use crate::support::{MISBEHAVE_WASM, fails_with, has, key, ok, stderr, stdout, tenet};
use std::path::Path;
use tenet::distribution::bundle::Bundle;

#[test]
fn bundles_are_packed_signed_verified_and_bad_ones_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let s = |p: &str| d.join(p).display().to_string();
    // `tenet plugin verify BUNDLE --trust KEY [EXTRA…]`, files named relative to `d`.
    let verify = |bundle: &str, key: &str, extra: &[&str]| {
        let (bundle, key) = (s(bundle), s(key));
        let mut args = vec!["plugin", "verify", bundle.as_str(), "--trust", key.as_str()];
        args.extend_from_slice(extra);
        tenet(d, &args)
    };

    let o = tenet(d, &["key", "generate", "--name", "release"]);
    ok(&o);
    let key_id = stdout(&o)
        .split_whitespace()
        .nth(1)
        .expect("id")
        .trim_end_matches(':')
        .to_owned();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.join("release.key"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    ok(&tenet(d, &["key", "generate", "--name", "stranger"]));
    fails_with(
        &tenet(d, &["key", "generate", "--name", "release"]),
        "not overwriting",
    );

    // Pack: metadata comes from the component itself.
    ok(&tenet(
        d,
        &[
            "plugin",
            "pack",
            MISBEHAVE_WASM,
            "-o",
            &s("mis.tenet"),
            "--license",
            "Apache-2.0",
        ],
    ));
    let b = Bundle::read(&d.join("mis.tenet")).expect("bundle");
    let wasm = std::fs::read(MISBEHAVE_WASM).expect("wasm");
    assert_eq!(
        b.metadata.component_sha256,
        tenet::distribution::bundle::digest(&wasm)
    );
    assert_eq!(b.metadata.name, "misbehave");
    assert_eq!(b.metadata.kinds, vec!["probe".to_owned()]);
    assert_eq!(b.metadata.abi, "0.1.2");
    assert!(
        b.metadata
            .capabilities
            .imports
            .iter()
            .any(|i| i.starts_with("tenet:host/exec@"))
    );
    assert_eq!(b.metadata.capabilities.programs[0].program, "/bin/echo");
    let shown = stdout(&tenet(d, &["plugin", "inspect", &s("mis.tenet")]));
    assert!(shown.contains("license:      Apache-2.0"), "{shown}");
    assert!(shown.contains("exec /bin/echo (probe)"), "{shown}");
    assert!(shown.contains("signature:    unsigned"), "{shown}");

    // Sign and verify.
    ok(&tenet(
        d,
        &[
            "plugin",
            "sign",
            &s("mis.tenet"),
            "--key",
            &s("release.key"),
        ],
    ));
    let o = verify("mis.tenet", "release.pub", &[]);
    ok(&o);
    has(&stdout(&o), &format!("signed by trusted key {key_id}"));

    // An untrusted key.
    fails_with(
        &verify("mis.tenet", "stranger.pub", &[]),
        &format!("signed by key {key_id}, which is not trusted"),
    );
    // A signature over other bytes (another bundle's).
    let other = Bundle {
        component: std::fs::read(env!("TENET_TEST_GUEST_ABI_0_1_0_WASM")).expect("old"),
        metadata: b.metadata.clone(),
    };
    let forged = tenet::distribution::bundle::sign(&other, &d.join("release.key")).expect("sign");
    std::fs::write(d.join("forged.minisig"), forged).expect("write");
    fails_with(
        &verify(
            "mis.tenet",
            "release.pub",
            &["--signature", &s("forged.minisig")],
        ),
        "the signature is not valid for this component",
    );
    // Capabilities that differ from the component's imports.
    let mut hiding = b.clone();
    hiding.metadata.capabilities.imports.clear();
    hiding.write(&d.join("hiding.tenet")).expect("write");
    std::fs::copy(d.join("mis.tenet.minisig"), d.join("hiding.tenet.minisig")).expect("sig");
    fails_with(
        &verify("hiding.tenet", "release.pub", &[]),
        "the declared capabilities differ from the component's",
    );
    // A tampered component (the metadata's digest no longer matches).
    let mut tampered = b.clone();
    tampered.component.push(0);
    tampered.write(&d.join("tampered.tenet")).expect("write");
    fails_with(
        &verify("tampered.tenet", "release.pub", &[]),
        "but the metadata declares",
    );
    // Truncated and foreign files.
    let bytes = std::fs::read(d.join("mis.tenet")).expect("read");
    std::fs::write(d.join("short.tenet"), &bytes[..bytes.len() / 2]).expect("write");
    fails_with(
        &tenet(d, &["plugin", "inspect", &s("short.tenet")]),
        "truncated",
    );
    std::fs::write(d.join("random.tenet"), b"certainly not a tar file").expect("write");
    fails_with(
        &tenet(d, &["plugin", "inspect", &s("random.tenet")]),
        "random.tenet",
    );

    // The signature is a plain minisign signature over the component's bytes.
    minisign_cli_verifies(d, &wasm);
}

fn minisign_cli_verifies(d: &Path, wasm: &[u8]) {
    if crate::support::tool("minisign").is_none() {
        return;
    }
    std::fs::write(d.join("component.wasm"), wasm).expect("write");
    let o = std::process::Command::new("minisign")
        .args(["-V", "-q", "-m"])
        .arg(d.join("component.wasm"))
        .arg("-x")
        .arg(d.join("mis.tenet.minisig"))
        .arg("-p")
        .arg(d.join("release.pub"))
        .output()
        .expect("minisign");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// Sign `d/mis.tenet` with a new key `name` and install it trusting only that key: the
/// same bytes, another signer. Returns the key id.
fn install_resigned(d: &Path, name: &str) -> String {
    let id = key(d, name);
    sign(d, "mis.tenet", name);
    let (bundle, public) = (d.join("mis.tenet"), d.join(format!("{name}.pub")));
    ok(&tenet(
        d,
        &[
            "plugin",
            "install",
            &bundle.display().to_string(),
            "--trust",
            &public.display().to_string(),
        ],
    ));
    id
}

/// Sign a bundle or component in `d` with `d/key.key`.
fn sign(d: &Path, what: &str, key: &str) {
    let (what, key) = (
        d.join(what).display().to_string(),
        d.join(format!("{key}.key")).display().to_string(),
    );
    ok(&tenet(d, &["plugin", "sign", &what, "--key", &key]));
}

fn manifest_with(d: &Path, source: &str, extra: &str, trust: &str) -> String {
    let m = format!(
        "{trust}providers:\n  bad:\n    source: {source}\n{extra}    grants:\n{}  file:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n\
         resources:\n  - {{id: f, type: file.file, properties: {{path: ./out/f, content: x}}}}\n  - {{id: p, type: bad.probe, properties: {{action: ok}}}}\n",
        crate::support::MISBEHAVE_GRANTS
    );
    crate::support::write_manifest(d, &m);
    m
}

#[test]
fn signatures_are_required_when_providers_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let id = key(d, "release");
    let stranger = key(d, "stranger");
    std::fs::copy(MISBEHAVE_WASM, d.join("mis.wasm")).expect("copy");

    // No signature, no opt-out: refused, saying how to fix it.
    manifest_with(d, "./mis.wasm", "", "");
    let o = tenet(d, &["validate"]);
    fails_with(&o, "provider `bad`: ");
    has(&stderr(&o), "mis.wasm is not signed (no ");
    has(&stderr(&o), "unsigned: true");
    // --allow-unsigned runs it, loudly.
    let o = tenet(d, &["plan", "--allow-unsigned"]);
    ok(&o);
    has(
        &stdout(&o),
        "WARNING: provider `bad` is UNSIGNED (--allow-unsigned)",
    );
    // So does `unsigned: true`, in text and JSON plans.
    manifest_with(d, "./mis.wasm", "    unsigned: true\n", "");
    let o = tenet(d, &["plan"]);
    ok(&o);
    has(
        &stdout(&o),
        "WARNING: provider `bad` is UNSIGNED (unsigned: true in the manifest)",
    );
    has(&stdout(&o), "file [built into tenet]");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&tenet(d, &["plan", "--json"]))).expect("json");
    assert_eq!(json["providers"]["bad"]["provenance"]["kind"], "unsigned");
    // `unsigned` is for local paths only.
    crate::support::write_manifest(d, "providers:\n  file:\n    unsigned: true\n");
    fails_with(
        &tenet(d, &["validate"]),
        "unsigned: true is only for providers loaded from a local path",
    );

    // Signed by a key the project does not trust yet.
    sign(d, "mis.wasm", "release");
    manifest_with(d, "./mis.wasm", "", "");
    fails_with(
        &tenet(d, &["validate"]),
        &format!(
            "signed by key {id}, which is not trusted (trusted: none: add public keys under `trust:`"
        ),
    );
    // Trusted by file or by key text: runs, and the plan says who signed it.
    let trust = "trust:\n  - file: release.pub\n";
    manifest_with(d, "./mis.wasm", "", trust);
    let o = tenet(d, &["apply", "--yes"]);
    ok(&o);
    has(
        &stdout(&o),
        &format!("bad [signed by trusted key {id} (release.pub)]"),
    );
    assert!(!stdout(&o).contains("UNSIGNED"), "{}", stdout(&o));
    let pub_text = std::fs::read_to_string(d.join("release.pub")).expect("pub");
    let line = pub_text.lines().nth(1).expect("key line");
    manifest_with(
        d,
        "./mis.wasm",
        "",
        &format!("trust:\n  - key: {line}\n    name: release\n"),
    );
    ok(&tenet(d, &["validate"]));

    // A saved plan shows why each provider may run now, not what the plan file says:
    // planned signed, applied after the signature went away, with --allow-unsigned.
    std::fs::write(d.join("out/f"), "drifted").expect("drift");
    ok(&tenet(
        d,
        &["plan", "--out", &d.join("saved.plan").display().to_string()],
    ));
    let sig = std::fs::read(d.join("mis.wasm.minisig")).expect("sig");
    std::fs::remove_file(d.join("mis.wasm.minisig")).expect("rm sig");
    let o = tenet(
        d,
        &[
            "apply",
            &d.join("saved.plan").display().to_string(),
            "--yes",
            "--allow-unsigned",
        ],
    );
    ok(&o);
    has(
        &stdout(&o),
        "WARNING: provider `bad` is UNSIGNED (--allow-unsigned)",
    );
    std::fs::write(d.join("mis.wasm.minisig"), sig).expect("restore sig");

    // Other bytes under that signature: refused even with every opt-out.
    std::fs::copy(env!("TENET_TEST_GUEST_ABI_0_1_0_WASM"), d.join("mis.wasm")).expect("swap");
    manifest_with(d, "./mis.wasm", "    unsigned: true\n", trust);
    let o = tenet(d, &["validate", "--allow-unsigned"]);
    fails_with(&o, "the signature is not valid for this component");
    // A key the project does not list.
    std::fs::copy(MISBEHAVE_WASM, d.join("mis.wasm")).expect("restore");
    sign(d, "mis.wasm", "stranger");
    fails_with(
        &tenet(d, &["validate"]),
        &format!("signed by key {stranger}, which is not trusted (trusted: {id} (release.pub))"),
    );

    // Bad trust entries are reported with their place, all at once.
    crate::support::write_manifest(
        d,
        "trust:\n  - key: not-a-key\n  - file: missing.pub\n  - {name: x}\nproviders:\n  file: {}\n",
    );
    let o = tenet(d, &["validate"]);
    fails_with(
        &o,
        "tenet.yaml:2:10: error: trusted key #1: not a minisign public key",
    );
    has(
        &stderr(&o),
        "tenet.yaml:3:11: error: trusted key #2: cannot read",
    );
    has(&stderr(&o), "trusted key #3 needs exactly one of `key`");
}

#[test]
fn tenet_lock_pins_digest_signer_and_capabilities_and_upgrade_shows_what_changed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let id = key(d, "release");
    let trust = "trust:\n  - file: release.pub\n";
    // Version 1 of provider `bad` asks for nothing (built against ABI 0.1.0) …
    std::fs::copy(env!("TENET_TEST_GUEST_ABI_0_1_0_WASM"), d.join("mis.wasm")).expect("copy");
    sign(d, "mis.wasm", "release");
    let manifest = format!(
        "{trust}providers:\n  bad:\n    source: ./mis.wasm\n    grants:\n{}  file:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n\
         resources:\n  - {{id: f, type: file.file, properties: {{path: ./out/f, content: x}}}}\n",
        crate::support::MISBEHAVE_GRANTS
    );
    crate::support::write_manifest(d, &manifest);
    ok(&tenet(d, &["lock"]));
    let first = std::fs::read(d.join("tenet.lock")).expect("lock");
    ok(&tenet(d, &["lock"]));
    assert_eq!(
        std::fs::read(d.join("tenet.lock")).expect("lock"),
        first,
        "deterministic"
    );
    let lock: serde_json::Value = serde_json::from_slice(&first).expect("json");
    let v1 = tenet::distribution::bundle::digest(&std::fs::read(d.join("mis.wasm")).expect("wasm"));
    assert_eq!(lock["providers"]["bad"]["component_sha256"], v1.as_str());
    assert_eq!(
        lock["providers"]["bad"]["source"], "./mis.wasm",
        "relative: same on every checkout"
    );
    assert_eq!(lock["providers"]["bad"]["signer"], id.as_str());
    assert_eq!(
        lock["providers"]["bad"]["capabilities"],
        serde_json::json!([])
    );
    assert_eq!(lock["providers"]["file"]["builtin"], true);
    ok(&tenet(d, &["validate"]));
    // The same bytes signed by another trusted key: the signer is pinned too.
    let other = key(d, "other");
    sign(d, "mis.wasm", "other");
    crate::support::write_manifest(
        d,
        &manifest.replace(
            trust,
            "trust:\n  - file: release.pub\n  - file: other.pub\n",
        ),
    );
    fails_with(
        &tenet(d, &["validate"]),
        &format!("pins signer {id}, but these bytes are signed by {other}"),
    );
    fails_with(
        &tenet(d, &["lock"]),
        "run `tenet lock --upgrade bad` to move the pin",
    );
    sign(d, "mis.wasm", "release");
    crate::support::write_manifest(d, &manifest);

    // … version 2 (other bytes, same path, signed too) is refused until the pin moves.
    std::fs::copy(MISBEHAVE_WASM, d.join("mis.wasm")).expect("swap");
    sign(d, "mis.wasm", "release");
    let v2 = tenet::distribution::bundle::digest(&std::fs::read(MISBEHAVE_WASM).expect("wasm"));
    // Refused before any of its code is compiled or run: a fresh compile cache gets
    // nothing for the new digest.
    let cache = tempfile::tempdir().expect("cache");
    let o = crate::support::tenet_command(d, &["validate"])
        .env("TENET_CACHE_DIR", cache.path())
        .output()
        .expect("run");
    let compiled: Vec<String> = std::fs::read_dir(cache.path().join("compiled"))
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !compiled.is_empty(),
        "the built-in file provider was compiled"
    );
    assert!(!compiled.iter().any(|c| c.starts_with(&v2)), "{compiled:?}");
    fails_with(&o, "provider `bad` does not match");
    for needle in [v1.as_str(), &v2, "mis.wasm", "tenet lock --upgrade bad"] {
        has(&stderr(&o), needle);
    }
    fails_with(
        &tenet(d, &["lock"]),
        "run `tenet lock --upgrade bad` to move the pin",
    );
    assert_eq!(
        std::fs::read(d.join("tenet.lock")).expect("lock"),
        first,
        "untouched"
    );
    let o = tenet(d, &["lock", "--upgrade", "bad"]);
    ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "bad: 0.1.0 (sha256 {}) -> 0.1.0 (sha256 {})",
            &v1[..12],
            &v2[..12]
        )),
        "{out}"
    );
    assert!(
        out.contains("bad 0.1.0 now requests exec /bin/echo (probe)"),
        "{out}"
    );
    assert!(
        out.contains("bad 0.1.0 now requests import tenet:host/exec@0.1.1"),
        "{out}"
    );
    assert!(
        out.contains("bad 0.1.0 now requests net http://127.0.0.1:*"),
        "{out}"
    );
    ok(&tenet(d, &["validate"]));
    fails_with(
        &tenet(d, &["lock", "--upgrade", "nope"]),
        "the manifest declares no provider `nope`",
    );

    // A provider the lock does not know is refused.
    crate::support::write_manifest(
        d,
        &manifest
            .replace("  bad:\n", "  other:\n")
            .replace("bad.", "other."),
    );
    fails_with(&tenet(d, &["validate"]), "provider `other` is not in");
}

#[test]
fn bundles_install_into_a_content_addressed_store_precompiled_and_are_listed_and_removed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let id = key(d, "release");
    key(d, "stranger");
    let s = |p: &str| d.join(p).display().to_string();
    ok(&tenet(
        d,
        &["plugin", "pack", MISBEHAVE_WASM, "-o", &s("mis.tenet")],
    ));
    // Unsigned bundles are not installed without saying so, nor those of a stranger.
    let install_trusting_release = || {
        tenet(
            d,
            &[
                "plugin",
                "install",
                &s("mis.tenet"),
                "--trust",
                &s("release.pub"),
            ],
        )
    };
    fails_with(&install_trusting_release(), "not signed");
    sign(d, "mis.tenet", "stranger");
    fails_with(&install_trusting_release(), "which is not trusted");
    assert!(
        !d.join(".tenet-store/sha256").exists()
            || std::fs::read_dir(d.join(".tenet-store/sha256"))
                .expect("ls")
                .count()
                == 0,
        "nothing half-installed"
    );
    sign(d, "mis.tenet", "release");
    let cache = tempfile::tempdir().expect("cache");
    let o = crate::support::tenet_command(
        d,
        &[
            "plugin",
            "install",
            &s("mis.tenet"),
            "--trust",
            &s("release.pub"),
        ],
    )
    .env("TENET_CACHE_DIR", cache.path())
    .output()
    .expect("run");
    ok(&o);
    let digest = tenet::distribution::bundle::digest(&std::fs::read(MISBEHAVE_WASM).expect("wasm"));
    has(
        &stdout(&o),
        &format!("Installed misbehave 0.1.0 (sha256 {digest}), signed by trusted key {id}"),
    );
    let entry = d.join(".tenet-store/sha256").join(&digest);
    assert!(entry.join("component.wasm").is_file() && entry.join("signature.minisig").is_file());
    // Precompiled at install: one artifact for this digest in the compile cache.
    let compiled_dir = cache.path().join("compiled");
    let compiled: Vec<String> = std::fs::read_dir(&compiled_dir)
        .expect("cache")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        compiled.len() == 1 && compiled[0].starts_with(&digest),
        "{compiled:?}"
    );

    let list = stdout(&tenet(d, &["plugin", "list"]));
    assert!(
        list.contains(&format!("misbehave 0.1.0  sha256:{digest}  signed by {id}")),
        "{list}"
    );
    let shown = stdout(&tenet(
        d,
        &[
            "plugin",
            "inspect",
            "misbehave@0.1.0",
            "--trust",
            &s("release.pub"),
        ],
    ));
    assert!(
        shown.contains(&format!("signature:    signed by trusted key {id} ("))
            && shown.contains("verified"),
        "{shown}"
    );

    // gc keeps installed code, drops code nothing needs.
    std::fs::write(
        compiled_dir.join(format!("{}-0000000000000000.cwasm", "0".repeat(64))),
        b"stale",
    )
    .expect("stale");
    let gc = crate::support::tenet_command(d, &["cache", "gc"])
        .env("TENET_CACHE_DIR", cache.path())
        .output()
        .expect("gc");
    ok(&gc);
    has(&stdout(&gc), "Removed 1 compiled artifacts");
    assert_eq!(std::fs::read_dir(&compiled_dir).expect("ls").count(), 1);

    // A tampered store entry is caught when read.
    let mut bytes = std::fs::read(entry.join("component.wasm")).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(entry.join("component.wasm"), &bytes).expect("tamper");
    let listed = tenet(d, &["plugin", "list"]);
    ok(&listed);
    assert!(
        stderr(&listed).contains("skipping a damaged installed bundle")
            && stderr(&listed).contains("component.wasm has sha256")
            && !stdout(&listed).contains("misbehave"),
        "{}{}",
        stdout(&listed),
        stderr(&listed)
    );
    bytes[last] ^= 1;
    std::fs::write(entry.join("component.wasm"), &bytes).expect("restore");
    // The same bytes installed again with another trusted signer: its signature replaces
    // the stored one.
    let other = install_resigned(d, "other");
    let list = stdout(&tenet(d, &["plugin", "list"]));
    assert!(list.contains(&format!("signed by {other}")), "{list}");
    sign(d, "mis.tenet", "release");

    // A bundle directory installs the same bytes (already there: one entry, two sources);
    // one that hides a capability is refused.
    ok(&tenet(
        d,
        &[
            "plugin",
            "pack",
            MISBEHAVE_WASM,
            "-o",
            &format!("{}/", s("mis.d")),
        ],
    ));
    sign(d, "mis.d", "release");
    assert!(d.join("mis.d/signature.minisig").is_file());
    ok(&tenet(
        d,
        &[
            "plugin",
            "install",
            &s("mis.d"),
            "--trust",
            &s("release.pub"),
        ],
    ));
    let list = stdout(&tenet(d, &["plugin", "list"]));
    assert_eq!(list.matches("misbehave 0.1.0").count(), 1, "{list}");
    assert!(
        list.contains("mis.d") && list.contains("mis.tenet"),
        "{list}"
    );
    let meta = d.join("mis.d/metadata.json");
    let text = std::fs::read_to_string(&meta).expect("meta");
    std::fs::write(&meta, text.replace("\"tenet:host/exec@0.1.1\",", "")).expect("hide");
    fails_with(
        &tenet(
            d,
            &[
                "plugin",
                "install",
                &s("mis.d"),
                "--trust",
                &s("release.pub"),
            ],
        ),
        "the declared capabilities differ from the component's",
    );

    let rm = crate::support::tenet_command(d, &["plugin", "remove", "misbehave"])
        .env("TENET_CACHE_DIR", cache.path())
        .output()
        .expect("rm");
    ok(&rm);
    assert!(!entry.exists());
    assert_eq!(
        std::fs::read_dir(&compiled_dir).expect("ls").count(),
        0,
        "its compiled code went too"
    );
    assert!(stdout(&tenet(d, &["plugin", "list"])).contains("No plugins installed"));
    fails_with(
        &tenet(d, &["plugin", "remove", "misbehave"]),
        "no installed bundle matches",
    );
}

#[test]
fn bundles_round_trip_through_a_real_oci_registry() {
    let Some(mut registry) = crate::support::Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let s = |p: &str| d.join(p).display().to_string();
    let id = key(d, "release");
    key(d, "stranger");
    let repo = format!("oci://{}/tenet/misbehave", registry.addr);
    let tag = format!("{repo}:0.1.0");
    ok(&tenet(
        d,
        &["plugin", "pack", MISBEHAVE_WASM, "-o", &s("mis.tenet")],
    ));
    sign(d, "mis.tenet", "release");
    let digest = tenet::distribution::bundle::digest(&std::fs::read(MISBEHAVE_WASM).expect("wasm"));

    // Push: the CNCF Wasm layout plus metadata and signature layers.
    let o = tenet(d, &["plugin", "push", &s("mis.tenet"), &tag]);
    ok(&o);
    let pushed = stdout(&o);
    let manifest_digest = pushed
        .split("manifest ")
        .nth(1)
        .expect("digest")
        .trim()
        .trim_end_matches('.')
        .to_owned();
    assert!(manifest_digest.starts_with("sha256:"), "{pushed}");
    // The same bundle pushed again is the same artifact.
    let again = stdout(&tenet(d, &["plugin", "push", &s("mis.tenet"), &tag]));
    assert!(again.contains(&manifest_digest), "deterministic: {again}");

    // A generic OCI tool sees a Wasm artifact and fetches the component.
    generic_tool_fetches(d, &registry.addr, &digest);

    // Pull by tag and by digest, verify, inspect.
    ok(&tenet(
        d,
        &["plugin", "pull", &tag, "-o", &s("pulled.tenet")],
    ));
    assert_eq!(
        std::fs::read(d.join("pulled.tenet")).expect("pulled"),
        std::fs::read(d.join("mis.tenet")).expect("mine"),
        "byte-identical bundle"
    );
    let by_digest = format!("{repo}@{manifest_digest}");
    ok(&tenet(
        d,
        &["plugin", "pull", &by_digest, "-o", &s("pulled2.tenet")],
    ));
    let v = tenet(
        d,
        &["plugin", "verify", &by_digest, "--trust", &s("release.pub")],
    );
    ok(&v);
    has(&stdout(&v), &format!("signed by trusted key {id}"));

    // A manifest using it: not installed → told to init; init installs, pins, applies.
    let m = manifest_with(d, &tag, "", "trust:\n  - file: release.pub\n");
    fails_with(
        &tenet(d, &["validate"]),
        "is not installed; run `tenet init`",
    );
    let o = tenet(d, &["init"]);
    ok(&o);
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("tenet.lock")).expect("lock")).expect("json");
    assert_eq!(lock["providers"]["bad"]["source"], tag.as_str());
    assert_eq!(
        lock["providers"]["bad"]["component_sha256"],
        digest.as_str()
    );
    assert_eq!(
        lock["providers"]["bad"]["oci_manifest"],
        manifest_digest.as_str()
    );
    assert_eq!(lock["providers"]["bad"]["signer"], id.as_str());
    let o = tenet(d, &["apply", "--yes"]);
    ok(&o);
    has(
        &stdout(&o),
        &format!("bad [signed by trusted key {id} (release.pub)]"),
    );
    assert_eq!(
        std::fs::read_to_string(d.join("out/f")).expect("applied"),
        "x"
    );

    // The tag moves to other bytes: the lock keeps this project on its pin, and a fresh
    // machine (empty store) pulls the pinned manifest by digest, not the tag.
    ok(&tenet(
        d,
        &[
            "plugin",
            "pack",
            env!("TENET_TEST_GUEST_ABI_0_1_0_WASM"),
            "-o",
            &s("v2.tenet"),
        ],
    ));
    sign(d, "v2.tenet", "release");
    ok(&tenet(d, &["plugin", "push", &s("v2.tenet"), &tag]));
    std::fs::remove_dir_all(d.join(".tenet-store")).expect("fresh store");
    ok(&tenet(d, &["init"]));
    ok(&tenet(d, &["validate"]));
    let list = stdout(&tenet(d, &["plugin", "list"]));
    assert!(list.contains(&digest), "the pinned bytes: {list}");
    crate::support::write_manifest(d, &m);

    // The same bytes installed from elsewhere with another signer replace the stored
    // signature: the project's pin notices, and `tenet init` fetches the pinned one again.
    let other = install_resigned(d, "other");
    fails_with(
        &tenet(d, &["validate"]),
        &format!("signed by key {other}, which is not trusted"),
    );
    ok(&tenet(d, &["init"]));
    ok(&tenet(d, &["validate"]));
    sign(d, "mis.tenet", "release");

    // Refusals, each leaving the store as it was.
    let store_before = crate::support::snapshot(&d.join(".tenet-store"));
    let install = |r: &str| tenet(d, &["plugin", "install", r, "--trust", &s("release.pub")]);
    fails_with(
        &install(&format!("{repo}:9.9.9")),
        "not found in the registry",
    );
    fails_with(
        &install(&format!("oci://{}/tenet/nothing:1", registry.addr)),
        "not found in the registry",
    );
    // Signed by a key nobody trusts.
    ok(&tenet(
        d,
        &["plugin", "pack", MISBEHAVE_WASM, "-o", &s("s.tenet")],
    ));
    sign(d, "s.tenet", "stranger");
    ok(&tenet(
        d,
        &["plugin", "push", &s("s.tenet"), &format!("{repo}:stranger")],
    ));
    fails_with(
        &install(&format!("{repo}:stranger")),
        "which is not trusted",
    );
    // An unsigned bundle in the registry: `tenet lock --upgrade` refuses it before
    // storing or running anything, and the lock stays as it was.
    ok(&tenet(
        d,
        &["plugin", "pack", MISBEHAVE_WASM, "-o", &s("u.tenet")],
    ));
    ok(&tenet(
        d,
        &["plugin", "push", &s("u.tenet"), &format!("{repo}:unsigned")],
    ));
    let lock_before = std::fs::read(d.join("tenet.lock")).expect("lock");
    manifest_with(
        d,
        &format!("{repo}:unsigned"),
        "",
        "trust:\n  - file: release.pub\n",
    );
    fails_with(
        &tenet(d, &["lock", "--upgrade", "bad"]),
        ":unsigned is not signed",
    );
    assert_eq!(
        std::fs::read(d.join("tenet.lock")).expect("lock"),
        lock_before
    );
    crate::support::write_manifest(d, &m);
    // Not a Tenet bundle: an artifact with other media types.
    push_foreign_artifact(&registry.addr);
    fails_with(
        &install(&format!("oci://{}/other/image:1", registry.addr)),
        "not a Tenet plugin bundle: its config has media type `application/vnd.oci.image.config.v1+json`",
    );
    // A tampered blob in the registry's storage: caught by its digest.
    ok(&tenet(
        d,
        &[
            "plugin",
            "push",
            &s("mis.tenet"),
            &format!("{repo}:tampered"),
        ],
    ));
    let blob = registry.blob(&digest);
    let mut bytes = std::fs::read(&blob).expect("blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).expect("tamper");
    fails_with(
        &install(&format!("{repo}:tampered")),
        "content does not match its digest",
    );
    // A registry that is down.
    registry.stop();
    fails_with(
        &install(&tag),
        &format!("cannot reach registry {}", registry.addr),
    );
    assert_eq!(
        crate::support::snapshot(&d.join(".tenet-store")),
        store_before,
        "nothing half-installed"
    );
}

/// skopeo (Debian) reads the artifact: its manifest names the Wasm config and layer, and
/// it copies the component out byte for byte.
fn generic_tool_fetches(d: &Path, addr: &str, digest: &str) {
    let Some(skopeo) = crate::support::tool("skopeo") else {
        return;
    };
    let src = format!("docker://{addr}/tenet/misbehave:0.1.0");
    let o = std::process::Command::new(&skopeo)
        .args(["inspect", "--raw", "--tls-verify=false", &src])
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest: serde_json::Value = serde_json::from_slice(&o.stdout).expect("manifest json");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"][0]["digest"], format!("sha256:{digest}"));
    let out = d.join("skopeo-copy");
    let o = std::process::Command::new(&skopeo)
        .args(["copy", "--src-tls-verify=false", &src])
        .arg(format!("dir:{}", out.display()))
        .output()
        .expect("skopeo copy");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join(digest)).expect("component blob"),
        std::fs::read(MISBEHAVE_WASM).expect("wasm")
    );
}

/// Push an ordinary OCI image-shaped artifact (not a bundle) with oci-client directly.
fn push_foreign_artifact(addr: &str) {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        });
        let r: oci_client::Reference = format!("{addr}/other/image:1").parse().expect("ref");
        let layers = vec![ImageLayer::oci_v1(b"not a component".to_vec(), None)];
        let config = Config::oci_v1(b"{}".to_vec(), None);
        client
            .push(
                &r,
                &layers,
                config,
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
            )
            .await
            .expect("push foreign");
    });
}

#[test]
fn registry_credentials_come_from_the_environment_or_the_docker_config() {
    let Some(registry) = crate::support::Registry::start_with_auth() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let s = |p: &str| d.join(p).display().to_string();
    key(d, "release");
    ok(&tenet(
        d,
        &["plugin", "pack", MISBEHAVE_WASM, "-o", &s("mis.tenet")],
    ));
    sign(d, "mis.tenet", "release");
    let tag = format!("oci://{}/tenet/misbehave:0.1.0", registry.addr);
    let push = || {
        let mut c = crate::support::tenet_command(d, &["plugin", "push", &s("mis.tenet"), &tag]);
        c.env("TENET_REGISTRY_HOST", &registry.addr);
        c
    };

    fails_with(
        &push().output().expect("run"),
        "the registry wants credentials",
    );
    let wrong = push()
        .env("TENET_REGISTRY_USERNAME", crate::support::REGISTRY_USER)
        .env("TENET_REGISTRY_PASSWORD", "wrong")
        .output()
        .expect("run");
    fails_with(
        &wrong,
        "the registry wants credentials or refused the ones given",
    );
    // Environment credentials go only to the registry TENET_REGISTRY_HOST names.
    let elsewhere = push()
        .env("TENET_REGISTRY_USERNAME", crate::support::REGISTRY_USER)
        .env("TENET_REGISTRY_PASSWORD", crate::support::REGISTRY_PASSWORD)
        .env("TENET_REGISTRY_HOST", "registry.example.com")
        .output()
        .expect("run");
    fails_with(&elsewhere, "the registry wants credentials");
    ok(&push()
        .env("TENET_REGISTRY_USERNAME", crate::support::REGISTRY_USER)
        .env("TENET_REGISTRY_PASSWORD", crate::support::REGISTRY_PASSWORD)
        .output()
        .expect("run"));

    // `docker login` leaves base64 of user:password in config.json.
    let auth = "dGVuZXQ6dGVuZXQtc2VjcmV0";
    assert_eq!(
        format!(
            "{}:{}",
            crate::support::REGISTRY_USER,
            crate::support::REGISTRY_PASSWORD
        ),
        "tenet:tenet-secret"
    );
    std::fs::create_dir_all(d.join(".docker")).expect("docker dir");
    std::fs::write(
        d.join(".docker/config.json"),
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}}}}}",
            registry.addr
        ),
    )
    .expect("docker config");
    ok(&tenet(
        d,
        &["plugin", "install", &tag, "--trust", &s("release.pub")],
    ));
}
