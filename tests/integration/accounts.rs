//! `account.group` against the real shadow-utils programs, as root: create with members,
//! a converged plan, drift when a member is removed out of band, a corrective repair,
//! removal — with only the programs and argument shapes the manifest grants, and only
//! `getent` (a probe) during plans.

use crate::support::{ok, skipped, stderr, stdout, tenet, tool, write_manifest};
use std::process::Command;

const GRANTS: &str = r#"providers:
  account:
    grants:
      exec:
        - {program: /usr/bin/getent, args: [[group, "*"]], mode: probe}
        - program: /usr/sbin/groupadd
          args: [["--", "*"], ["--gid", "*", "--", "*"], ["--system", "--", "*"], ["--gid", "*", "--system", "--", "*"]]
        - {program: /usr/sbin/groupmod, args: [["--gid", "*", "--", "*"]]}
        - {program: /usr/sbin/groupdel, args: [["--", "*"]]}
        - {program: /usr/bin/gpasswd, args: [["--members", "*", "--", "*"]]}
"#;

fn getent(name: &str) -> Option<String> {
    let o = Command::new("getent")
        .args(["group", name])
        .output()
        .expect("getent");
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Removes the group whatever the test did.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.0).output();
    }
}

fn root_with_tools() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "the account tests need root in CI"
        );
        skipped("not root: cannot create groups");
        return false;
    }
    ["groupadd", "gpasswd", "getent"]
        .iter()
        .all(|t| tool(t).is_some())
}

#[test]
fn a_group_is_created_kept_exact_and_removed_with_only_what_is_granted() {
    if !root_with_tools() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let name = format!("tenetg{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let manifest = |members: &str, ensure: &str| {
        format!(
            "{GRANTS}resources:\n  - id: web\n    type: account.group\n    properties: {{name: {name}, members: [{members}], ensure: {ensure}}}\n"
        )
    };
    write_manifest(dir, &manifest("root", "present"));

    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(getent(&name), None, "a plan creates nothing");

    ok(&tenet(dir, &["apply", "--yes"]));
    let line = getent(&name).expect("created");
    assert!(line.ends_with(":root"), "{line}");
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "converged: {}", stdout(&o));

    // Out of band: root leaves the group.
    let o = Command::new("gpasswd")
        .args(["-d", "root", &name])
        .output()
        .expect("gpasswd");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("members: expected [\"root\"], found []"),
        "{}",
        stdout(&o)
    );
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("(corrective)"), "{}", stdout(&o));
    assert!(getent(&name).expect("group").ends_with(":root"));

    // A gid change is refused without allow_gid_change, naming the group.
    write_manifest(
        dir,
        &manifest("root", "present").replace("ensure: present", "ensure: present, gid: 4242424"),
    );
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("allow_gid_change"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );

    write_manifest(dir, &manifest("root", "absent"));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(getent(&name), None, "removed");
}

#[test]
fn a_program_the_manifest_does_not_grant_is_denied_and_nothing_changes() {
    if !root_with_tools() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let name = format!("tenetd{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    // No groupadd grant.
    let grants: String = GRANTS
        .lines()
        .filter(|l| !l.contains("groupadd") && !l.contains("[\"--\", \"*\"], [\"--gid\""))
        .map(|l| format!("{l}\n"))
        .collect();
    write_manifest(
        dir,
        &format!(
            "{grants}resources:\n  - id: g\n    type: account.group\n    properties: {{name: {name}}}\n"
        ),
    );
    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        text.contains("denied") && text.contains("groupadd"),
        "{text}"
    );
    assert_eq!(getent(&name), None);
}

#[test]
fn the_account_provider_passes_the_conformance_kit() {
    if !root_with_tools() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let name = format!("tenetk{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    std::fs::create_dir(dir.join("fixtures")).expect("fixtures");
    std::fs::write(
        dir.join("fixtures/group.yaml"),
        format!("group:\n  properties: {{name: {name}, members: [root]}}\n  update: {{name: {name}, members: []}}\n"),
    )
    .expect("fixture");
    let grants = GRANTS
        .trim_start_matches("providers:\n  account:\n    grants:\n")
        .lines()
        .map(|l| l.strip_prefix("      ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("grants.yaml"), grants).expect("grants");
    let o = tenet(
        dir,
        &[
            "provider",
            "test",
            "builtin:account",
            "--fixtures",
            "fixtures",
            "--grants",
            "grants.yaml",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("12 checks: 12 passed, 0 failed"),
        "{}",
        stdout(&o)
    );
    assert_eq!(getent(&name), None, "the kit deleted what it created");
}
