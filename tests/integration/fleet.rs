//! `examples/fleet` (issue 15): one `webserver` module used for every site through
//! `for_each`, a template, `when:` by OS family and data layers for two environments —
//! planned for two fact sets against the plans checked in under `expected/` (set
//! TENET_BLESS=1 to rewrite them after a deliberate change), then applied.

use crate::support::{ok, stderr, stdout, tenet};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/fleet")
        .canonicalize()
        .expect("examples/fleet")
}

/// The example's files (not what a run left there), copied into `to`.
fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "out" || name == ".tenet" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if src.is_dir() {
            std::fs::create_dir_all(&dst).expect("mkdir");
            copy(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// What a plan says that does not depend on the machine or the build: each resource's
/// id, type, action and desired properties (paths relative to the manifest), what was
/// left out, and the summary.
fn essence(plan: &Value, dir: &Path) -> Value {
    let resources: Vec<Value> = plan["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            json!({"id": r["id"], "type": r["type"], "action": r["action"], "desired": r["desired"], "depends_on": r["depends_on"]})
        })
        .collect();
    let text = serde_json::to_string_pretty(&json!({
        "resources": resources,
        "excluded": plan.get("excluded").cloned().unwrap_or(Value::Null),
        "summary": plan["summary"],
    }))
    .expect("json");
    serde_json::from_str(&text.replace(&*dir.display().to_string(), "$DIR")).expect("json")
}

#[test]
fn the_fleet_example_plans_as_checked_in_for_two_nodes_and_applies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    copy(&example(), dir);
    let mut failures = Vec::new();
    for (facts, env, expected) in [
        ("facts/debian-web1.yaml", "prod", "debian-web1-prod.json"),
        ("facts/rhel-web2.yaml", "dev", "rhel-web2-dev.json"),
    ] {
        let o = tenet(
            dir,
            &[
                "plan",
                "--json",
                "--facts",
                facts,
                "--var",
                &format!("env={env}"),
            ],
        );
        ok(&o);
        let plan: Value = serde_json::from_str(&stdout(&o)).expect("plan json");
        let actual = serde_json::to_string_pretty(&essence(&plan, dir)).expect("json") + "\n";
        let path = example().join("expected").join(expected);
        if std::env::var_os("TENET_BLESS").is_some() {
            std::fs::write(&path, &actual).expect("bless");
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} missing (run with TENET_BLESS=1)", path.display()));
        if want != actual {
            failures.push(format!(
                "--- {expected}: expected\n{want}--- actual\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The RHEL dev node, applied: its files are there, and a second run changes nothing.
    let o = tenet(dir, &["apply", "--yes", "--facts", "facts/rhel-web2.yaml"]);
    ok(&o);
    let conf = std::fs::read_to_string(dir.join("out/nginx/conf.d/shop.conf")).expect("conf");
    assert!(
        conf.contains("listen 80;") && conf.contains("drops to nginx"),
        "{conf}"
    );
    assert!(
        conf.contains("error_log /var/log/nginx/shop.log debug;"),
        "{conf}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/srv/blog/robots.txt")).expect("robots"),
        "User-agent: *\nDisallow: /admin/\n"
    );
    assert!(dir.join("out/nginx/conf.d/selinux.txt").exists());
    let o = tenet(dir, &["plan", "--facts", "facts/rhel-web2.yaml"]);
    ok(&o);
    assert!(
        stdout(&o).contains("No changes"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}
