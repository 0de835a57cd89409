//! Plugin bundles (issue 6, first part): pack a real component, sign it, verify it, and
//! refuse every way a bundle can be wrong — untrusted key, a signature over other bytes,
//! a tampered or truncated bundle, capabilities that differ from the component's — and
//! check the signature with the `minisign` tool itself.

use crate::support::{MISBEHAVE_WASM, fails_with, ok, stderr, stdout, tenet};
use std::path::Path;
use tenet::bundle::Bundle;

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
    assert_eq!(b.metadata.component_sha256, tenet::bundle::digest(&wasm));
    assert_eq!(b.metadata.name, "misbehave");
    assert_eq!(b.metadata.kinds, vec!["probe".to_owned()]);
    assert_eq!(b.metadata.abi, "0.1.1");
    assert!(
        b.metadata
            .capabilities
            .imports
            .iter()
            .any(|i| i.starts_with("tenet:host/exec@"))
    );
    assert_eq!(b.metadata.capabilities.programs[0].program, "/bin/echo");
    let shown = stdout(&tenet(d, &["plugin", "inspect", &s("mis.tenet")]));
    assert!(shown.contains("\"license\": \"Apache-2.0\""), "{shown}");

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
    assert!(
        stdout(&o).contains(&format!("signed by trusted key {key_id}")),
        "{}",
        stdout(&o)
    );

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
    let forged = tenet::bundle::sign(&other, &d.join("release.key")).expect("sign");
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
    if std::process::Command::new("minisign")
        .arg("-v")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "minisign is not installed; .ci/run installs it"
        );
        eprintln!(
            "skipping the minisign interoperability check: minisign is not installed (CI unset)"
        );
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

#[test]
fn tenet_lock_pins_providers_by_digest_and_refuses_other_bytes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    std::fs::copy(MISBEHAVE_WASM, d.join("mis.wasm")).expect("copy");
    let manifest = format!(
        "providers:\n  bad:\n    source: ./mis.wasm\n    grants:\n{}  file:\n    grants:\n      fs: [{{path: ./out, access: rw}}]\n\
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
    let wasm = std::fs::read(MISBEHAVE_WASM).expect("wasm");
    assert_eq!(
        lock["providers"]["bad"]["component_sha256"],
        tenet::bundle::digest(&wasm)
    );
    assert_eq!(lock["providers"]["file"]["builtin"], true);
    ok(&tenet(d, &["validate"]));

    // Other bytes at the same path are refused, naming both digests and the source.
    std::fs::copy(env!("TENET_TEST_GUEST_ABI_0_1_0_WASM"), d.join("mis.wasm")).expect("swap");
    let o = tenet(d, &["validate"]);
    fails_with(&o, "provider `bad` does not match");
    let err = stderr(&o);
    assert!(
        err.contains(&tenet::bundle::digest(&wasm)) && err.contains("mis.wasm"),
        "{err}"
    );
    // A provider the lock does not know is refused too.
    std::fs::copy(MISBEHAVE_WASM, d.join("mis.wasm")).expect("restore");
    crate::support::write_manifest(
        d,
        &manifest
            .replace("  bad:\n", "  other:\n")
            .replace("bad.", "other."),
    );
    fails_with(&tenet(d, &["validate"]), "provider `other` is not in");
}
