//! `account.group` against the real shadow-utils programs, as root: create with members,
//! a converged plan, drift when a member is removed out of band, a corrective repair,
//! removal — with only the programs and argument shapes the manifest grants, and only
//! `getent` (a probe) during plans.

use crate::support::{as_root, ok, stderr, stdout, tenet, tool, write_manifest};
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
    as_root("create groups")
        && ["groupadd", "gpasswd", "getent"]
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
    let user = format!("tenetv{}", std::process::id());
    let _user_cleanup = UserCleanup(user.clone(), Vec::new());
    std::fs::write(
        dir.join("fixtures/user.yaml"),
        format!("user:\n  properties: {{name: {user}, shell: /bin/sh, comment: kit, manage_home: false}}\n  update: {{name: {user}, shell: /bin/bash, comment: kit again, manage_home: false}}\n"),
    )
    .expect("fixture");
    let exec_lines = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.trim_start().starts_with("exec:"))
            .skip(1)
            .map(|l| l.strip_prefix("      ").unwrap_or(l).to_owned())
            .collect()
    };
    let grants = format!(
        "exec:\n{}\n{}\n",
        exec_lines(GRANTS).join("\n"),
        exec_lines(USER_GRANTS).join("\n")
    );
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
        stdout(&o).contains("24 checks: 24 passed, 0 failed"),
        "{}",
        stdout(&o)
    );
    assert_eq!(getent(&name), None, "the kit deleted what it created");
    assert_eq!(
        getent_db("passwd", &user),
        None,
        "the kit deleted what it created"
    );
}

const USER_GRANTS: &str = r#"providers:
  account:
    grants:
      exec:
        - {program: /usr/bin/getent, args: [[passwd, "*"], [group, "*"], [shadow, "*"]], mode: probe}
        - {program: /usr/bin/id, args: [["-Gn", "--", "*"]], mode: probe}
        - {program: /usr/sbin/useradd, args: [["**"]]}
        - {program: /usr/sbin/usermod, args: [["**"]]}
        - {program: /usr/sbin/userdel, args: [["**"]]}
        - {program: /usr/sbin/chpasswd, args: [["--encrypted"]]}
        - {program: /usr/sbin/groupadd, args: [["--", "*"]]}
        - {program: /usr/sbin/groupdel, args: [["--", "*"]]}
"#;

/// A yescrypt hash of nothing anyone uses (made with `mkpasswd -m yescrypt`).
const HASH: &str = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rMkxbR5J/";

fn getent_db(db: &str, name: &str) -> Option<String> {
    let o = Command::new("getent")
        .args([db, name])
        .output()
        .expect("getent");
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

struct UserCleanup(String, Vec<String>);

impl Drop for UserCleanup {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["--remove", &self.0]).output();
        for g in &self.1 {
            let _ = Command::new("groupdel").arg(g).output();
        }
    }
}

#[test]
fn a_user_is_created_with_its_groups_and_hash_repaired_and_removed() {
    if !root_with_tools() || tool("useradd").is_none() || tool("chpasswd").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let pid = std::process::id();
    let (name, primary, extra) = (
        format!("tenetu{pid}"),
        format!("tenetp{pid}"),
        format!("tenets{pid}"),
    );
    let _cleanup = UserCleanup(name.clone(), vec![primary.clone(), extra.clone()]);
    let home = dir.join("home").join(&name);
    std::fs::create_dir(dir.join("home")).expect("home root");
    let manifest = |shell: &str, ensure: &str| {
        format!(
            "{USER_GRANTS}resources:\n  - {{id: primary, type: account.group, properties: {{name: {primary}}}}}\n  - {{id: extra, type: account.group, properties: {{name: {extra}}}}}\n  - id: deploy\n    type: account.user\n    depends_on: [primary, extra]\n    properties:\n      name: {name}\n      ensure: {ensure}\n      group: {primary}\n      groups: [{extra}]\n      home: {}\n      shell: {shell}\n      comment: Deploy user\n      password_hash: '{HASH}'\n      remove_home: true\n",
            home.display()
        )
    };
    write_manifest(dir, &manifest("/bin/sh", "present"));
    let o = tenet(dir, &["plan"]);
    ok(&o);
    assert!(
        !stdout(&o).contains(HASH),
        "a plan never shows the hash: {}",
        stdout(&o)
    );
    assert_eq!(getent_db("passwd", &name), None, "a plan creates nothing");

    ok(&tenet(dir, &["apply", "--yes"]));
    let passwd = getent_db("passwd", &name).expect("created");
    assert!(
        passwd.ends_with(&format!(":Deploy user:{}:/bin/sh", home.display())),
        "{passwd}"
    );
    assert!(home.is_dir(), "the home directory is created");
    let shadow = getent_db("shadow", &name).expect("shadow");
    assert_eq!(shadow.split(':').nth(1), Some(HASH), "the hash is set");
    let ids = Command::new("id")
        .args(["-Gn", &name])
        .output()
        .expect("id");
    let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
    assert!(ids.contains(&primary) && ids.contains(&extra), "{ids}");
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "converged: {}", stdout(&o));
    let state = stdout(&tenet(dir, &["state", "show", "deploy"]));
    assert!(
        !state.contains(HASH),
        "the state keeps the hash sealed: {state}"
    );

    // Out of band: the shell changes.
    let o = Command::new("usermod")
        .args(["-s", "/bin/bash", &name])
        .output()
        .expect("usermod");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("shell: expected \"/bin/sh\", found \"/bin/bash\""),
        "{}",
        stdout(&o)
    );
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("(corrective)"), "{}", stdout(&o));
    assert!(
        getent_db("passwd", &name)
            .expect("user")
            .ends_with(":/bin/sh")
    );

    write_manifest(dir, &manifest("/bin/sh", "absent"));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(getent_db("passwd", &name), None, "removed");
    assert!(!home.exists(), "remove_home removes the home directory");
}
