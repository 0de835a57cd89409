//! Desired-state artifacts (issue 18): `tenet config push|pull|verify|tag` against a
//! real registry (Debian's docker-registry), and their refusals: unsigned, untrusted,
//! a tampered blob, a directory that is not self-contained, a link.

use crate::support::{Registry, fails_with, has, key, ok, stdout, tenet};
use std::path::Path;

/// A manifest directory writing `text` to `out/motd` under `root` (absolute paths: an
/// artifact is applied from wherever a node unpacked it), with a template and a data
/// file so more than one file travels.
pub fn site(dir: &Path, root: &Path, text: &str) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    let out = root.join("out");
    std::fs::write(
        dir.join("tenet.yaml"),
        format!(
            concat!(
                "providers:\n  file:\n    grants:\n      fs: [{{path: {out}, access: rw}}]\n",
                "resources:\n",
                "  - {{id: motd, type: file.file, properties: {{path: {out}/motd, content: \"${{template(\\\"templates/motd.j2\\\", {{\\\"text\\\": \\\"{text}\\\"}})}}\"}}}}\n",
            ),
            out = out.display(),
            text = text
        ),
    )
    .expect("manifest");
    std::fs::write(dir.join("templates/motd.j2"), "{{ text }}\n").expect("template");
}

/// The `digest: sha256:…` line `tenet config push` prints.
pub fn pushed_digest(o: &std::process::Output) -> String {
    ok(o);
    stdout(o)
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .expect("a digest line")
        .trim()
        .to_owned()
}

#[test]
fn desired_state_artifacts_round_trip_and_what_is_not_trusted_is_refused() {
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let s = |p: &str| d.join(p).display().to_string();
    let id = key(d, "release");
    key(d, "stranger");
    site(&d.join("site"), d, "v1");
    // The state and git's files beside it are not packed.
    std::fs::create_dir_all(d.join("site/.tenet")).expect("mkdir");
    std::fs::write(d.join("site/.tenet/state.db"), "secret state").expect("state");
    let repo = format!("oci://{}/fleet/web", registry.addr);
    let stable = format!("{repo}:stable");

    let push = |dir: &str, to: &str, extra: &[&str]| {
        let mut args = vec!["config", "push", dir, to];
        args.extend_from_slice(extra);
        tenet(d, &args)
    };
    let o = push(
        &s("site"),
        &stable,
        &["--key", &s("release.key"), "--revision", "abc123"],
    );
    let v1 = pushed_digest(&o);
    has(&stdout(&o), "2 files");
    // The same directory is the same artifact: pushing it again moves nothing.
    let again = push(
        &s("site"),
        &stable,
        &["--key", &s("release.key"), "--revision", "abc123"],
    );
    assert_eq!(pushed_digest(&again), v1);
    has(&stdout(&again), "nothing pushed");

    let verify = |r: &str, key: &str| tenet(d, &["config", "verify", r, "--trust", &s(key)]);
    let o = verify(&stable, "release.pub");
    ok(&o);
    has(&stdout(&o), &format!("signed by trusted key {id}"));
    has(&stdout(&o), "from revision abc123");
    fails_with(&verify(&stable, "stranger.pub"), "which is not trusted");

    // Pulled by tag and by digest: the same files, the state left behind.
    ok(&tenet(
        d,
        &[
            "config",
            "pull",
            &stable,
            "-o",
            &s("pulled"),
            "--trust",
            &s("release.pub"),
        ],
    ));
    for f in ["tenet.yaml", "templates/motd.j2"] {
        assert_eq!(
            std::fs::read(d.join("pulled").join(f)).expect("pulled"),
            std::fs::read(d.join("site").join(f)).expect("mine"),
            "{f}"
        );
    }
    assert!(!d.join("pulled/.tenet").exists());
    let pinned = format!("{repo}@{v1}");
    ok(&tenet(
        d,
        &[
            "config",
            "pull",
            &pinned,
            "-o",
            &s("pulled2"),
            "--trust",
            &s("release.pub"),
        ],
    ));
    fails_with(
        &tenet(
            d,
            &[
                "config",
                "pull",
                &pinned,
                "-o",
                &s("pulled2"),
                "--trust",
                &s("release.pub"),
            ],
        ),
        "exists; not overwriting",
    );

    // A generic tool sees Tenet's own media types.
    if let Some(skopeo) = crate::support::tool("skopeo") {
        let o = std::process::Command::new(skopeo)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/fleet/web:stable", registry.addr))
            .output()
            .expect("skopeo");
        assert!(o.status.success());
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.tenet.config.v1+json"
        );
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.tenet.config.content.v1.tar"
        );
        assert_eq!(
            m["layers"][1]["mediaType"],
            "application/vnd.tenet.config.signature.v1+minisign"
        );
        assert_eq!(
            m["annotations"]["org.opencontainers.image.revision"],
            "abc123"
        );
    }

    // `tag` moves a channel to a digest, as a roll-out does.
    let canary = format!("{repo}:canary");
    let o = tenet(d, &["config", "tag", &pinned, &canary]);
    ok(&o);
    has(&stdout(&o), &v1);
    ok(&verify(&canary, "release.pub"));

    // Refusals.
    site(&d.join("site2"), d, "v2");
    let unsigned = format!("{repo}:unsigned");
    let o = push(&s("site2"), &unsigned, &["--unsigned"]);
    has(&stdout(&o), "UNSIGNED");
    fails_with(&verify(&unsigned, "release.pub"), "not signed; refusing");
    let strangers = format!("{repo}:stranger");
    pushed_digest(&push(
        &s("site2"),
        &strangers,
        &["--key", &s("stranger.key")],
    ));
    fails_with(&verify(&strangers, "release.pub"), "which is not trusted");
    fails_with(
        &tenet(
            d,
            &[
                "config",
                "pull",
                &strangers,
                "-o",
                &s("nope"),
                "--trust",
                &s("release.pub"),
            ],
        ),
        "which is not trusted",
    );
    assert!(!d.join("nope").exists(), "nothing unpacked");
    fails_with(&tenet(d, &["config", "verify", &stable]), "no trusted keys");
    // Neither --key nor --unsigned: a usage error.
    let o = push(&s("site2"), &stable, &[]);
    assert_eq!(o.status.code(), Some(2));
    has(&crate::support::stderr(&o), "--key");
    // A tampered content blob in the registry's storage.
    let tampered = format!("{repo}:tampered");
    site(&d.join("site3"), d, "v3");
    pushed_digest(&push(&s("site3"), &tampered, &["--key", &s("release.key")]));
    let packed = tenet::distribution::artifact::pack(&d.join("site3")).expect("pack");
    let blob = registry.blob(&packed.sha256);
    let mut bytes = std::fs::read(&blob).expect("blob");
    let at = bytes.len() / 3;
    bytes[at] ^= 0xff;
    std::fs::write(&blob, &bytes).expect("tamper");
    fails_with(
        &verify(&tampered, "release.pub"),
        "content does not match its digest",
    );
    // A directory that reaches outside itself, or holds a link, is not pushed.
    site(&d.join("site4"), d, "v4");
    std::fs::create_dir_all(d.join("policies")).expect("mkdir");
    std::fs::write(
        d.join("policies/p.rego"),
        "package site\ndeny contains msg if { false; msg := \"\" }\n",
    )
    .expect("policy");
    let m = std::fs::read_to_string(d.join("site4/tenet.yaml")).expect("read");
    std::fs::write(
        d.join("site4/tenet.yaml"),
        format!("policy:\n  paths: [../policies]\n{m}"),
    )
    .expect("write");
    ok(&tenet(&d.join("site4"), &["validate"]));
    fails_with(
        &push(
            &s("site4"),
            &format!("{repo}:outside"),
            &["--key", &s("release.key")],
        ),
        "does not load as a manifest from its own files",
    );
    std::os::unix::fs::symlink("/etc/passwd", d.join("site2/passwd")).expect("link");
    fails_with(
        &push(
            &s("site2"),
            &format!("{repo}:link"),
            &["--key", &s("release.key")],
        ),
        "passwd: a symbolic link",
    );
    // Not a desired-state artifact: a plugin bundle's reference.
    ok(&tenet(
        d,
        &[
            "plugin",
            "pack",
            crate::support::MISBEHAVE_WASM,
            "-o",
            &s("mis.tenet"),
        ],
    ));
    ok(&tenet(
        d,
        &["plugin", "push", &s("mis.tenet"), &format!("{repo}:bundle")],
    ));
    fails_with(
        &verify(&format!("{repo}:bundle"), "release.pub"),
        "not a Tenet desired-state artifact: its config has media type `application/vnd.wasm.config.v0+json`",
    );
    registry.stop();
    fails_with(
        &verify(&stable, "release.pub"),
        &format!("cannot reach registry {}", registry.addr),
    );
}
