//! Modules (issue 15): a directory with inputs, outputs and resources, called any number
//! of times (also under `for_each`), nested, with providers mapped from the top level.

use crate::support::{fails_with, ok, stderr, stdout, tenet, write_manifest};
use serde_json::Value;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A web-site module (a directory, a templated config, a nested banner module) and a
/// manifest that calls it for each site in `sites`.
fn project(dir: &Path, sites: &str) {
    write(
        dir,
        "modules/web/main.yaml",
        r#"inputs:
  name: {type: string, description: the site's name}
  port: {type: number, default: 80}
  aliases: {type: list(string), default: []}
providers: [fs]
outputs:
  url: "http://${ var.name }:${ var.port }"
  conf: {value: "${ resources.conf.path }", description: where the config is}
  banner: ${ module.banner.text }
resources:
  - id: dir
    type: fs.directory
    properties: {path: "out/${ var.name }"}
  - id: conf
    type: fs.file
    depends_on: [dir]
    properties:
      path: "out/${ var.name }/site.conf"
      content: '${ template("templates/site.conf.j2", {"aliases": var.aliases}) }'
  - id: banner
    module: ../banner
    depends_on: [dir]
    providers: {file: fs}
    inputs: {path: "out/${ var.name }/banner", text: "welcome to ${ var.name }"}
"#,
    );
    write(
        dir,
        "modules/web/templates/site.conf.j2",
        "server {\n  listen {{ var.port }};\n  server_name {{ var.name }}{% for a in aliases %} {{ a }}{% endfor %};\n}\n",
    );
    write(
        dir,
        "modules/banner/main.yaml",
        r#"inputs:
  path: {type: string}
  text: {type: string}
providers: [file]
outputs:
  text: ${ var.text | upper }
resources:
  - id: file
    type: file.file
    properties: {path: "${ var.path }", content: "${ var.text }\n"}
"#,
    );
    write_manifest(
        dir,
        &format!(
            r#"vars:
  sites: {sites}
providers:
  files:
    source: builtin:file
    grants:
      fs: [{{path: ./out, access: rw}}]
resources:
  - id: site
    module: ./modules/web
    for_each: ${{ var.sites }}
    providers: {{fs: files}}
    inputs:
      name: ${{ each.key }}
      port: ${{ each.value.port }}
      aliases: ${{ each.value.aliases | default([]) }}
  - id: index
    type: files.file
    depends_on: [site]
    properties:
      path: out/index.txt
      content: "${{ module.site | items | map('last') | map(attribute='url') | join(' ') }} ${{ module.site.a.banner }}\n"
  - id: conf-of-a
    type: files.file
    properties:
      path: out/conf-of-a.txt
      content: ${{ module.site.a.conf }}
"#
        ),
    );
}

fn planned(dir: &Path) -> Value {
    let o = tenet(dir, &["plan", "--json"]);
    ok(&o);
    serde_json::from_str(&stdout(&o)).expect("plan json")
}

fn actions(plan: &Value) -> Vec<(String, String)> {
    plan["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["action"] != "none")
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_owned(),
                r["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_module_called_for_each_site_makes_addressed_instances_with_outputs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    project(dir, "{a: {port: 8080, aliases: [www.a]}, b: {port: 9090}}");
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/a/site.conf")).expect("conf a"),
        "server {\n  listen 8080;\n  server_name a www.a;\n}\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/b/site.conf")).expect("conf b"),
        "server {\n  listen 9090;\n  server_name b;\n}\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/b/banner")).expect("nested module"),
        "welcome to b\n"
    );
    // Outputs: plain values, another module's output, and a resource's field.
    assert_eq!(
        std::fs::read_to_string(dir.join("out/index.txt")).expect("index"),
        "http://a:8080 http://b:9090 WELCOME TO A\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/conf-of-a.txt")).expect("ref"),
        dir.join("out/a/site.conf").display().to_string()
    );
    // Addressed `module.resource`, nested `module.module.resource`, mapped provider.
    let plan = planned(dir);
    assert!(actions(&plan).is_empty(), "converged: {:?}", actions(&plan));
    let ids: Vec<&str> = plan["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    for id in [
        "site[a].dir",
        "site[a].conf",
        "site[a].banner.file",
        "site[b].conf",
        "index",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    let conf = plan["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == "site[a].conf"))
        .expect("site[a].conf");
    assert_eq!(conf["type"], "files.file", "{conf}");
    // The graph: a module's resources wait for what the call depends on, and
    // `depends_on: [site]` means every resource of every instance.
    let o = tenet(dir, &["graph", "--format", "json"]);
    ok(&o);
    let graph = stdout(&o);
    assert!(graph.contains("site[a].banner.file"), "{graph}");

    // Adding a site adds its instance only; removing one removes only its resources
    // (and `index`, which lists the sites, changes).
    project(dir, "{a: {port: 8080, aliases: [www.a]}, c: {port: 7070}}");
    let mut got = actions(&planned(dir));
    got.sort();
    let mut want: Vec<(String, String)> = [
        ("index", "update"),
        ("site[b].banner.file", "delete"),
        ("site[b].conf", "delete"),
        ("site[b].dir", "delete"),
        ("site[c].banner.file", "create"),
        ("site[c].conf", "create"),
        ("site[c].dir", "create"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_changed_module_file_is_a_changed_manifest_and_rollback_restores_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    project(dir, "{a: {port: 8080}}");
    ok(&tenet(dir, &["apply", "--yes"]));
    // The banner module's text changes: a plan saved before is stale.
    ok(&tenet(dir, &["plan", "--out", "saved.plan"]));
    let banner = dir.join("modules/banner/main.yaml");
    let text = std::fs::read_to_string(&banner).expect("banner");
    let edited = text.replace("${ var.text }\\n", "${ var.text }!\\n");
    assert_ne!(text, edited);
    std::fs::write(&banner, edited).expect("edit");
    // And the site's template.
    let template = dir.join("modules/web/templates/site.conf.j2");
    let text = std::fs::read_to_string(&template).expect("template");
    std::fs::write(&template, text.replace("listen", "listen_on")).expect("edit");
    let o = tenet(dir, &["apply", "saved.plan"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("stale plan"), "{}", stderr(&o));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/a/banner")).expect("banner"),
        "welcome to a!\n"
    );
    assert!(
        std::fs::read_to_string(dir.join("out/a/site.conf"))
            .expect("conf")
            .contains("listen_on 8080")
    );
    // Rollback to run 1 uses the module files and templates run 1 recorded, not
    // today's.
    let o = tenet(dir, &["rollback", "1", "--yes"]);
    ok(&o);
    assert!(
        std::fs::read_to_string(dir.join("out/a/site.conf"))
            .expect("conf")
            .contains("  listen 8080;"),
        "the template as run 1 rendered it"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/a/banner")).expect("banner"),
        "welcome to a\n",
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn a_secret_passed_into_a_module_stays_secret_and_a_module_cannot_grant_itself() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write(
        dir,
        "modules/creds/main.yaml",
        r#"inputs:
  token: {type: string}
  pin: {type: string, default: "4711-default-pin", sensitive: true}
providers: [file]
outputs:
  header: "Bearer ${ var.token }"
resources:
  - id: token
    type: file.file
    properties: {path: out/token, content: "${ var.token | upper }"}
  - id: pin
    type: file.file
    properties: {path: out/pin, content: "${ var.pin }"}
"#,
    );
    write_manifest(
        dir,
        r#"vars:
  token: {default: s3cret-value, sensitive: true}
providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
resources:
  - id: creds
    module: ./modules/creds
    inputs: {token: "${ var.token }"}
  - id: header
    type: file.file
    properties: {path: out/header, content: "${ module.creds.header }"}
"#,
    );
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/token")).expect("token"),
        "S3CRET-VALUE"
    );
    for f in ["token", "pin", "header"] {
        std::fs::remove_file(dir.join("out").join(f)).expect("rm");
    }
    let o = tenet(dir, &["plan", "--json"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    for secret in ["S3CRET", "s3cret", "4711"] {
        assert!(!out.contains(secret), "{secret} shown: {out}");
    }
    let plan: Value = serde_json::from_str(&stdout(&o)).expect("plan");
    for id in ["creds.token", "creds.pin", "header"] {
        let r = plan["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == id))
            .unwrap_or_else(|| panic!("{id} planned"));
        assert_eq!(r["desired"]["content"], "(sensitive)", "{r}");
    }
    // The run's record holds the module's files without the literal secret.
    let o = tenet(dir, &["show", "1", "--json"]);
    ok(&o);
    assert!(!stdout(&o).contains("4711-default-pin"), "{}", stdout(&o));

    // Hostile: a module that declares a provider with grants, or reaches out of the
    // manifest's directory, is refused naming its own file.
    write(
        dir,
        "modules/greedy/main.yaml",
        "providers:\n  file:\n    grants:\n      fs: [{path: /, access: rw}]\nresources: []\n",
    );
    write_manifest(
        dir,
        "providers:\n  file: {}\nresources:\n  - id: g\n    module: ./modules/greedy\n  - id: out\n    module: ../\n  - id: abs\n    module: /etc\n",
    );
    let o = tenet(dir, &["validate"]);
    fails_with(
        &o,
        "modules/greedy/main.yaml:2:7: error: a module names the providers it needs",
    );
    fails_with(&o, "`../` leads out of the manifest's directory");
    fails_with(
        &o,
        "`/etc`: a module is named by a path relative to the file that calls it",
    );
}
