//! `apt.package` and `apt.update` against the real dpkg and apt, as root, with a local
//! repository the test builds (`tests/fixtures/apt/make-repo.sh`: two versions of a
//! package with a configuration file, a package with a dependency, one with an
//! unsatisfiable dependency), served as a `[trusted=yes] file:` source — no network.
//! Install, pin, upgrade, downgrade, hold, purge, drift and its correction, bad input,
//! and the conformance kit; only probes run during plans (the sandbox refuses the rest).
//!
//! dpkg is one lock for the whole machine: every test here takes [`APT`] first.

use crate::support::{as_root, ok, skipped, stderr, stdout, tenet, tool, write_manifest};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One apt test at a time (dpkg's lock is global; tests run in parallel threads).
pub static APT: Mutex<()> = Mutex::new(());

/// What the apt provider needs, as the README documents it.
pub const APT_GRANTS: &str = r#"  apt:
    limits: {timeout: 10m}
    grants:
      exec:
        - {program: /usr/bin/dpkg-query, args: [["-W", "-f=*", "--", "**"]], mode: probe}
        - {program: /usr/bin/apt-cache, args: [[policy, "--", "**"]], mode: probe}
        - program: /usr/bin/apt-get
          mode: probe
          args:
            - ["-s", "-q", "-o", "APT::Install-Recommends=*", "-o", "APT::Get::allow-downgrades=*", "-o", "APT::Get::allow-change-held-packages=true", install, "--", "*"]
            - ["-s", "-q", "-o", "APT::Get::allow-change-held-packages=true", remove, "--", "*"]
            - ["-s", "-q", "-o", "APT::Get::allow-change-held-packages=true", purge, "--", "*"]
        - program: /usr/bin/apt-get
          args:
            - ["-y", "-q", "-o", "DPkg::Lock::Timeout=*", "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", "-o", "APT::Install-Recommends=*", "-o", "APT::Get::allow-downgrades=*", "-o", "APT::Get::allow-change-held-packages=true", install, "--", "*"]
            - ["-y", "-q", "-o", "DPkg::Lock::Timeout=*", "-o", "APT::Get::allow-change-held-packages=true", remove, "--", "*"]
            - ["-y", "-q", "-o", "DPkg::Lock::Timeout=*", "-o", "APT::Get::allow-change-held-packages=true", purge, "--", "*"]
            - ["-q", "-o", "DPkg::Lock::Timeout=*", update]
            - ["-q", "-o", "DPkg::Lock::Timeout=*", "-o", "Dir::Etc::sourcelist=/*", "-o", "Dir::Etc::sourceparts=-", "-o", "APT::Get::List-Cleanup=0", update]
        - {program: /usr/bin/apt-mark, args: [[hold, "--", "*"], [unhold, "--", "*"]]}
"#;

/// Root and the Debian tools, or a visible skip (a failure in CI).
pub fn ready() -> bool {
    as_root("install packages")
        && ["dpkg-deb", "dpkg-scanpackages", "apt-get", "dpkg-query"]
            .iter()
            .all(|t| tool(t).is_some())
}

/// Whether an apply failed because Debian's mirror could not be reached: a failure in
/// CI, a visible skip elsewhere.
pub fn mirror_unreachable(o: &std::process::Output) -> bool {
    let unreachable = o.status.code() != Some(0) && stdout(o).contains("Failed to fetch");
    if unreachable {
        assert!(
            std::env::var_os("CI").is_none(),
            "Debian's mirror is unreachable: {}",
            stdout(o)
        );
        skipped("Debian's mirror is unreachable");
    }
    unreachable
}

/// `dpkg-query` status of `name`: `(want, status, version)`, or `None` when dpkg does
/// not know it.
fn dpkg(name: &str) -> Option<(String, String, String)> {
    let o = Command::new("dpkg-query")
        .args([
            "-W",
            "-f=${db:Status-Want}\t${db:Status-Status}\t${Version}",
            "--",
            name,
        ])
        .output()
        .expect("dpkg-query");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let f: Vec<&str> = text.split('\t').collect();
    match f[..] {
        [want, status, version] if o.status.success() && status != "not-installed" => {
            Some((want.into(), status.into(), version.into()))
        }
        _ => None,
    }
}

pub fn installed(name: &str) -> Option<String> {
    dpkg(name)
        .filter(|(_, s, _)| s == "installed")
        .map(|(_, _, v)| v)
}

fn run(cmd: &mut Command) {
    let o = cmd.output().expect("run");
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A local repository of fixture packages named `PREFIX*`, its source list, and the
/// cleanup of everything it leaves on the machine (packages, holds, lists).
struct Repo {
    prefix: String,
    dir: tempfile::TempDir,
    list: PathBuf,
}

impl Repo {
    fn new(prefix: &str) -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("tenet-apt-")
            .tempdir()
            .expect("tmp");
        // apt's download user `_apt` must read it.
        run(Command::new("chmod").args(["755"]).arg(dir.path()));
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/apt/make-repo.sh");
        run(Command::new("bash")
            .arg(&script)
            .arg(dir.path().join("repo"))
            .arg(prefix));
        let list = PathBuf::from(format!("/etc/apt/sources.list.d/{prefix}.list"));
        std::fs::write(
            &list,
            format!(
                "deb [trusted=yes] file:{} ./\n",
                dir.path().join("repo").display()
            ),
        )
        .expect("source list");
        Repo {
            prefix: prefix.to_owned(),
            dir,
            list,
        }
    }

    /// Refresh only this repository's list (what `apt.update` with `source_list` does).
    fn update(&self) {
        run(Command::new("apt-get").args([
            "-q",
            "update",
            "-o",
            &format!("Dir::Etc::sourcelist={}", self.list.display()),
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            "APT::Get::List-Cleanup=0",
        ]));
    }

    fn packages(&self) -> Vec<String> {
        let p = &self.prefix;
        vec![
            format!("{p}-app"),
            format!("{p}-dep"),
            p.clone(),
            format!("{p}-broken"),
        ]
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        for name in self.packages() {
            let _ = Command::new("apt-mark").args(["unhold", &name]).output();
            if dpkg(&name).is_some() {
                let _ = Command::new("apt-get")
                    .args(["-y", "-q", "purge", &name])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .output();
            }
        }
        let _ = std::fs::remove_file(&self.list);
        // With List-Cleanup=0 apt keeps a removed source's lists: remove them by name
        // (`/tmp/x/repo` is stored as `_tmp_x_repo_._…`).
        let stem = self
            .dir
            .path()
            .join("repo")
            .display()
            .to_string()
            .replace('/', "_");
        if let Ok(entries) = std::fs::read_dir("/var/lib/apt/lists") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&stem) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

fn manifest(resources: &str) -> String {
    format!("providers:\n{APT_GRANTS}resources:\n{resources}")
}

#[test]
fn packages_install_pin_upgrade_downgrade_hold_drift_and_purge_for_real() {
    let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
    if !ready() {
        return;
    }
    let prefix = format!("tenetfx{}", std::process::id());
    let repo = Repo::new(&prefix);
    repo.update();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let p = &prefix;
    let pkg = |ensure: &str, extra: &str| {
        manifest(&format!(
            "  - {{id: fx, type: apt.package, properties: {{name: {p}, ensure: \"{ensure}\"{extra}}}}}\n  - {{id: app, type: apt.package, properties: {{name: {p}-app}}}}\n  - {{id: never, type: apt.package, properties: {{name: {p}-broken, ensure: absent}}}}\n"
        ))
    };

    // A plan installs nothing, and shows what apt would pull in.
    write_manifest(dir, &pkg("1.0", ""));
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{}", stderr(&o));
    assert!(out.contains(&format!("install {p}-dep 1.0")), "{out}");
    assert!(out.contains("+ fx") && out.contains("+ app"), "{out}");
    assert!(
        !out.contains("never (apt.package)"),
        "an absent package plans nothing: {out}"
    );
    assert_eq!(installed(p), None, "a plan installs nothing");
    assert_eq!(installed(&format!("{p}-dep")), None);

    // Apply converges; a second apply changes nothing.
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(installed(p).as_deref(), Some("1.0"));
    assert_eq!(installed(&format!("{p}-app")).as_deref(), Some("1.0"));
    assert_eq!(installed(&format!("{p}-dep")).as_deref(), Some("1.0"));
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("No changes"), "{}", stdout(&o));

    // Upgrade to a pinned version; a downgrade needs allow_downgrade.
    write_manifest(dir, &pkg("2.0", ""));
    let o = tenet(dir, &["plan"]);
    assert!(
        stdout(&o).contains("ensure = \"1.0\" -> \"2.0\""),
        "{}",
        stdout(&o)
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(installed(p).as_deref(), Some("2.0"));
    write_manifest(dir, &pkg("1.0", ""));
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("allow_downgrade"), "{}", stdout(&o));
    write_manifest(dir, &pkg("1.0", ", allow_downgrade: true, hold: true"));
    let o = tenet(dir, &["plan"]);
    assert!(
        stdout(&o).contains("ensure = \"2.0\" -> \"1.0\""),
        "{}",
        stdout(&o)
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    let (want, _, version) = dpkg(p).expect("installed");
    assert_eq!((want.as_str(), version.as_str()), ("hold", "1.0"));
    ok(&tenet(dir, &["plan", "--detailed-exitcode"]));

    // `latest` releases the hold it is told to and upgrades to the candidate.
    write_manifest(dir, &pkg("latest", ", hold: false"));
    let o = tenet(dir, &["plan"]);
    assert!(stdout(&o).contains("2.0 (latest)"), "{}", stdout(&o));
    ok(&tenet(dir, &["apply", "--yes"]));
    let (want, _, version) = dpkg(p).expect("installed");
    assert_eq!((want.as_str(), version.as_str()), ("install", "2.0"));

    // Drift: someone removes it; drift says so (exit 2), apply corrects it.
    write_manifest(dir, &pkg("2.0", ""));
    ok(&tenet(dir, &["apply", "--yes"]));
    run(Command::new("apt-get")
        .args(["-y", "-q", "remove", p])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert_eq!(dpkg(p).map(|(_, s, _)| s).as_deref(), Some("config-files"));
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("(corrective)"), "{}", stdout(&o));
    assert_eq!(installed(p).as_deref(), Some("2.0"));

    // Removed keeps the configuration; purged forgets it.
    write_manifest(dir, &pkg("absent", ""));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(dpkg(p).map(|(_, s, _)| s).as_deref(), Some("config-files"));
    assert!(Path::new(&format!("/etc/{p}/{p}.conf")).exists());
    write_manifest(dir, &pkg("purged", ""));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(dpkg(p), None);
    assert!(!Path::new(&format!("/etc/{p}/{p}.conf")).exists());
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));

    // Bad input, each refused before anything runs, naming the resource and field.
    write_manifest(
        dir,
        &manifest(&format!(
            "  - {{id: typo, type: apt.package, properties: {{name: {p}-nope}}}}\n  - {{id: pinned, type: apt.package, properties: {{name: {p}, ensure: \"9.9\"}}}}\n  - {{id: broken, type: apt.package, properties: {{name: {p}-broken}}}}\n"
        )),
    );
    let o = tenet(dir, &["plan"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("no package `{p}-nope` in apt's lists")),
        "{out}"
    );
    assert!(
        out.contains("version `9.9`") && out.contains("available: 2.0, 1.0"),
        "{out}"
    );
    assert!(out.contains("unmet dependencies"), "{out}");
    assert_eq!(dpkg(&format!("{p}-broken")), None);
    write_manifest(
        dir,
        &manifest(
            "  - {id: glob, type: apt.package, properties: {name: \"lib*\", ensure: newest}}\n",
        ),
    );
    let o = tenet(dir, &["validate"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "resource `glob` (apt.package): property `/name`: `lib*` is not a Debian package name"
        ) && err.contains("property `/ensure`"),
        "{err}"
    );
}

#[test]
fn apt_update_refreshes_one_source_and_keeps_its_stamp() {
    let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
    if !ready() {
        return;
    }
    let prefix = format!("tenetfu{}", std::process::id());
    let repo = Repo::new(&prefix);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("stamps")).expect("stamps");
    let body = |max_age: &str| {
        format!(
            "providers:\n{}\n      fs: [{{path: ./stamps, access: rw}}]\nresources:\n  - {{id: lists, type: apt.update, properties: {{name: fixture, source_list: {}, stamp: ./stamps/updated, max_age: {max_age}}}}}\n",
            APT_GRANTS.trim_end(),
            repo.list.display()
        )
    };
    write_manifest(dir, &body("1h"));
    // Never refreshed here: a plan says it will, and knows nothing of the packages yet.
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert!(dir.join("stamps/updated").exists());
    let policy = Command::new("apt-cache")
        .args(["policy", &prefix])
        .output()
        .expect("apt-cache");
    assert!(
        String::from_utf8_lossy(&policy.stdout).contains("Candidate: 2.0"),
        "the source was fetched: {}",
        String::from_utf8_lossy(&policy.stdout)
    );
    // Fresh: nothing to do; stale (max_age 1s, two seconds later): refreshed again.
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    std::thread::sleep(std::time::Duration::from_secs(2));
    write_manifest(dir, &body("1s"));
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stdout(&o).contains("updated_at"), "{}", stdout(&o));
    drop(repo);
}

#[test]
fn the_apt_provider_passes_the_conformance_kit() {
    let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
    if !ready() {
        return;
    }
    let prefix = format!("tenetfk{}", std::process::id());
    let repo = Repo::new(&prefix);
    repo.update();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("fixtures")).expect("fixtures");
    std::fs::create_dir_all(dir.join("stamps")).expect("stamps");
    std::fs::write(
        dir.join("fixtures/package.yaml"),
        format!(
            "pinned:\n  properties: {{name: {prefix}, ensure: \"1.0\"}}\n  update: {{name: {prefix}, ensure: \"2.0\", hold: true}}\nwith-dependency:\n  properties: {{name: {prefix}-app}}\n"
        ),
    )
    .expect("fixture");
    std::fs::write(
        dir.join("fixtures/update.yaml"),
        format!(
            "lists:\n  properties: {{name: lists, source_list: {}, stamp: {}/stamps/kit}}\n  delete: keeps\n",
            repo.list.display(),
            dir.display()
        ),
    )
    .expect("fixture");
    // The grants as the manifest has them, one level up.
    let grants: String = APT_GRANTS
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("exec:"))
        .map(|l| format!("{}\n", l.strip_prefix("      ").unwrap_or(l)))
        .collect();
    std::fs::write(
        dir.join("grants.yaml"),
        format!(
            "{grants}fs: [{{path: {}/stamps, access: rw}}]\n",
            dir.display()
        ),
    )
    .expect("grants");
    let o = tenet(
        dir,
        &[
            "provider",
            "test",
            "builtin:apt",
            "--fixtures",
            "fixtures",
            "--grants",
            "grants.yaml",
            "--timeout",
            "10m",
        ],
    );
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("batched and single reads agree"), "{out}");
    // The dependency came with it and stays (the kit purges only the package itself).
    drop(repo);
}

/// One real Debian package, from the machine's own sources (network): install and
/// remove `hello`. Skipped visibly when Debian's mirror cannot be reached, outside CI.
#[test]
fn a_real_debian_package_installs_and_goes() {
    let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
    if !ready() {
        return;
    }
    if installed("hello").is_some() {
        skipped("`hello` is already installed on this machine; not touching it");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(
        dir,
        &manifest("  - {id: hello, type: apt.package, properties: {name: hello}}\n"),
    );
    let o = tenet(dir, &["apply", "--yes"]);
    if mirror_unreachable(&o) {
        return;
    }
    ok(&o);
    assert!(installed("hello").is_some());
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    write_manifest(
        dir,
        &manifest(
            "  - {id: hello, type: apt.package, properties: {name: hello, ensure: purged}}\n",
        ),
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(dpkg("hello"), None);
}
