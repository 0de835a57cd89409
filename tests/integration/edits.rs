//! `file.line` and `file.block` through the `tenet` binary, on a config file someone
//! else owns most of: plan (read-only), apply, idempotency, drift detected and repaired
//! as corrective, and refusals with their place in the manifest.

use crate::support::{ok, snapshot, stderr, stdout, tenet, write_manifest};

const MANIFEST: &str = r#"providers:
  file:
    grants:
      fs: [{path: ./etc, access: rw}]
resources:
  - id: no-root-login
    type: file.line
    properties: {path: ./etc/sshd_config, line: "PermitRootLogin no", match: "^#?PermitRootLogin "}
  - id: gzip
    type: file.block
    properties:
      path: ./etc/nginx.conf
      after: "^http \\{$"
      block: |
        gzip on;
        gzip_types text/css;
"#;

const SSHD: &str = "Port 22\n#PermitRootLogin prohibit-password\nUsePAM yes\n";
const NGINX: &str = "user www;\nhttp {\n    include mime.types;\n}\n";

fn setup(dir: &std::path::Path) {
    std::fs::create_dir(dir.join("etc")).expect("etc");
    std::fs::write(dir.join("etc/sshd_config"), SSHD).expect("sshd");
    std::fs::write(dir.join("etc/nginx.conf"), NGINX).expect("nginx");
    write_manifest(dir, MANIFEST);
}

#[test]
fn lines_and_blocks_converge_keep_the_rest_and_are_repaired_when_edited() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    setup(dir);

    let before = snapshot(&dir.join("etc"));
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let plan = stdout(&o);
    assert!(
        plan.contains("#PermitRootLogin prohibit-password") && plan.contains("PermitRootLogin no"),
        "the plan shows the line it replaces: {plan}"
    );
    assert_eq!(before, snapshot(&dir.join("etc")), "a plan changes nothing");

    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/sshd_config")).expect("sshd"),
        "Port 22\nPermitRootLogin no\nUsePAM yes\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/nginx.conf")).expect("nginx"),
        "user www;\nhttp {\n# BEGIN TENET MANAGED BLOCK\ngzip on;\ngzip_types text/css;\n# END TENET MANAGED BLOCK\n    include mime.types;\n}\n"
    );
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "converged: {}", stdout(&o));

    // Someone edits the line and the block by hand.
    std::fs::write(
        dir.join("etc/sshd_config"),
        "Port 22\nPermitRootLogin yes\nUsePAM yes\n",
    )
    .expect("edit");
    let nginx = std::fs::read_to_string(dir.join("etc/nginx.conf")).expect("nginx");
    std::fs::write(
        dir.join("etc/nginx.conf"),
        nginx.replace("gzip on;", "gzip off;"),
    )
    .expect("edit");
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let found = stdout(&o);
    assert!(
        found.contains("no-root-login (file.line) drifted")
            && found.contains("gzip (file.block) drifted"),
        "{found}"
    );
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(
        stdout(&o).contains("(corrective)"),
        "a repair is corrective: {}",
        stdout(&o)
    );
    assert!(
        std::fs::read_to_string(dir.join("etc/sshd_config"))
            .expect("sshd")
            .contains("PermitRootLogin no\n")
    );
}

#[test]
fn a_match_that_misses_its_own_line_is_refused_at_its_place() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    setup(dir);
    write_manifest(
        dir,
        &MANIFEST.replace("match: \"^#?PermitRootLogin \"", "match: \"^Port \""),
    );
    let o = tenet(dir, &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("tenet.yaml:8:")
            && err.contains("resource `no-root-login` (file.line): property `/match`")
            && err.contains("does not match the line"),
        "{err}"
    );
}

const CRON: &str = r#"providers:
  cron:
    grants:
      fs: [{path: ./cron.d, access: rw}]
resources:
  - id: backup
    type: cron.job
    properties:
      name: backup
      dir: ./cron.d
      schedule: "30 2 * * 1-5"
      user: backup
      command: /usr/local/bin/backup --quiet
      env: {MAILTO: ops@example.com}
"#;

#[test]
fn a_cron_job_is_a_file_that_converges_and_is_repaired_field_by_field() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("cron.d")).expect("cron.d");
    write_manifest(dir, CRON);
    let before = snapshot(&dir.join("cron.d"));
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        before,
        snapshot(&dir.join("cron.d")),
        "a plan changes nothing"
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    let job = dir.join("cron.d/backup");
    let text = std::fs::read_to_string(&job).expect("job");
    assert!(
        text.ends_with(
            "MAILTO=ops@example.com\n30 2 * * 1-5 backup /usr/local/bin/backup --quiet\n"
        ),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&job).expect("meta").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "cron skips files others may write");
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "converged: {}", stdout(&o));

    std::fs::write(&job, text.replace("backup --quiet", "backup --verbose")).expect("edit");
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("command: expected \"/usr/local/bin/backup --quiet\", found \"/usr/local/bin/backup --verbose\""),
        "{}",
        stdout(&o)
    );
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("(corrective)"), "{}", stdout(&o));
    assert_eq!(std::fs::read_to_string(&job).expect("job"), text);

    write_manifest(dir, &CRON.replace("\"30 2 * * 1-5\"", "\"61 * * * *\""));
    let o = tenet(dir, &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("tenet.yaml:11:")
            && stderr(&o).contains("property `/schedule`: minute `61`: 61 is outside 0-59"),
        "{}",
        stderr(&o)
    );
}

/// Hostile: a job name that climbs out of its directory is refused before anything runs,
/// and nothing is written outside the granted directory.
#[test]
fn a_cron_job_name_that_climbs_out_of_its_directory_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("cron.d")).expect("cron.d");
    write_manifest(dir, &CRON.replace("name: backup", "name: ../escaped"));
    let before = snapshot(dir);
    let o = tenet(dir, &["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("property `/name`") && stderr(&o).contains("../escaped"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("escaped").exists());
    assert_eq!(before, snapshot(dir), "nothing written");
}
