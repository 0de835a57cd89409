//! The manifest language (issue 15) end to end: `${ … }` expressions, `when:`.

use crate::support::{ok, stderr, stdout, tenet, write_manifest};

#[test]
fn expressions_compute_properties_with_types_and_hide_what_secrets_went_into() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(
        dir,
        r#"vars:
  port: 8080
  name: web
  sites: [a.example, b.example]
  token: {default: s3cret-value, sensitive: true}
providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
resources:
  - id: conf
    type: file.file
    properties:
      path: "./out/${ var.name | upper }.conf"
      mode: "${ '0600' if var.port > 1024 else '0644' }"
      content: "listen ${ var.port + 1 }\nserver_names ${ var.sites | join(' ') }\n"
  - id: secret
    type: file.file
    properties:
      path: ./out/token
      content: "${ var.token | upper }"
  - id: by-index
    type: file.file
    properties: {path: ./out/token2, content: "${ var['token'] | lower }"}
"#,
    );
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    let conf = std::fs::read_to_string(dir.join("out/WEB.conf")).expect("conf");
    assert_eq!(conf, "listen 8081\nserver_names a.example b.example\n");
    let token = std::fs::read_to_string(dir.join("out/token")).expect("token");
    assert_eq!(token, "S3CRET-VALUE");
    // The transformed secret is never shown: not in the plan, not in the apply output.
    std::fs::remove_file(dir.join("out/token")).expect("rm");
    std::fs::remove_file(dir.join("out/token2")).expect("rm");
    let o = tenet(dir, &["plan", "--json"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!out.contains("S3CRET") && !out.contains("s3cret"), "{out}");
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("plan json");
    for id in ["secret", "by-index"] {
        let r = plan["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == id))
            .expect("planned");
        assert_eq!(r["desired"]["content"], "(sensitive)", "{r}");
    }
}

#[test]
fn a_false_when_leaves_a_resource_out_and_never_deletes_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_manifest(
        dir,
        r#"vars:
  env: prod
providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
resources:
  - id: banner
    type: file.file
    when: "${ var.env == 'prod' }"
    properties: {path: ./out/banner, content: "production\n"}
  - id: always
    type: file.file
    properties: {path: ./out/always, content: "x\n"}
"#,
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    assert!(dir.join("out/banner").exists());
    // In dev the condition is false: left out of the plan, shown as such, not deleted.
    let o = tenet(dir, &["plan", "--var", "env=dev", "--json"]);
    ok(&o);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(plan["excluded"], serde_json::json!(["banner"]), "{plan}");
    assert!(
        plan["resources"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["id"] != "banner")),
        "{plan}"
    );
    let o = tenet(dir, &["apply", "--yes", "--var", "env=dev"]);
    ok(&o);
    assert!(stdout(&o).contains("banner is left out"), "{}", stdout(&o));
    assert!(
        dir.join("out/banner").exists(),
        "a false condition deletes nothing"
    );
}

#[test]
fn for_each_and_count_make_stable_instances_and_one_removal_touches_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let manifest = |sites: &str, n: u32| {
        format!(
            r#"vars:
  sites: {sites}
  workers: {n}
providers:
  file:
    grants:
      fs: [{{path: ./out, access: rw}}]
resources:
  - id: site
    type: file.file
    for_each: "${{ var.sites }}"
    properties:
      path: "./out/${{ each.key }}.conf"
      content: "server_name ${{ each.key }}; listen ${{ each.value.port }};\n"
  - id: worker
    type: file.file
    count: "${{ var.workers }}"
    properties: {{path: "./out/worker-${{ count.index }}", content: "${{ count.index * 10 }}\n"}}
  - id: index
    type: file.file
    depends_on: [site]
    properties: {{path: ./out/index, content: "${{ var.sites | length }} sites\n"}}
"#
        )
    };
    write_manifest(
        dir,
        &manifest("{a.example: {port: 81}, b.example: {port: 82}}", 3),
    );
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("site[a.example]"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/b.example.conf")).expect("b"),
        "server_name b.example; listen 82;\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/worker-2")).expect("w2"),
        "20\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/index")).expect("i"),
        "2 sites\n"
    );
    // The graph: `index` comes after every instance of `site`.
    let o = tenet(dir, &["graph", "--format", "json"]);
    ok(&o);
    let g: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("graph json");
    let order: Vec<&str> = g["order"]
        .as_array()
        .expect("order")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let pos = |id: &str| order.iter().position(|x| *x == id).unwrap_or(usize::MAX);
    assert!(
        pos("site[a.example]") < pos("index") && pos("site[b.example]") < pos("index"),
        "{order:?}"
    );

    // One site and one worker fewer: exactly those two are deleted, the rest unchanged.
    write_manifest(dir, &manifest("{b.example: {port: 82}}", 2));
    let o = tenet(dir, &["plan", "--json"]);
    ok(&o);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("plan");
    let actions: std::collections::BTreeMap<String, String> = plan["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("").to_owned(),
                r["action"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(actions["site[a.example]"], "delete", "{actions:?}");
    assert_eq!(actions["worker[2]"], "delete", "{actions:?}");
    assert_eq!(actions["site[b.example]"], "none", "{actions:?}");
    assert_eq!(actions["worker[0]"], "none", "{actions:?}");
    assert_eq!(actions["index"], "update", "{actions:?}");
    ok(&tenet(dir, &["apply", "--yes"]));
    assert!(!dir.join("out/a.example.conf").exists());
    assert!(dir.join("out/b.example.conf").exists());
    assert!(!dir.join("out/worker-2").exists());
}

#[test]
fn templates_render_at_plan_time_and_a_changed_template_is_a_changed_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("templates")).expect("templates");
    std::fs::write(
        dir.join("templates/nginx.conf.j2"),
        "{% import 'templates/macros.j2' as m %}worker_processes {{ workers }};\n{% for s in var.sites %}{{ m.server(s, port) }}{% endfor %}",
    )
    .expect("template");
    std::fs::write(
        dir.join("templates/macros.j2"),
        "{% macro server(name, port) %}server { listen {{ port }}; server_name {{ name }}; }\n{% endmacro %}",
    )
    .expect("macros");
    std::fs::write(
        dir.join("templates/secret.j2"),
        "password={{ var.token }}\n",
    )
    .expect("secret");
    write_manifest(
        dir,
        r#"vars:
  sites: [a.example, b.example]
  token: {default: hunter22, sensitive: true}
providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
resources:
  - id: nginx
    type: file.file
    properties:
      path: ./out/nginx.conf
      content: "${ template('templates/nginx.conf.j2', {'workers': 4, 'port': 8080}) }"
  - id: creds
    type: file.file
    properties: {path: ./out/creds, content: "${ template('templates/secret.j2') }"}
"#,
    );
    let o = tenet(dir, &["plan"]);
    let out = stdout(&o);
    assert!(
        out.contains("server_name b.example"),
        "the rendered text is in the plan: {out}"
    );
    assert!(
        !out.contains("hunter22"),
        "a template that reads a secret is hidden: {out}"
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/nginx.conf")).expect("conf"),
        "worker_processes 4;\nserver { listen 8080; server_name a.example; }\nserver { listen 8080; server_name b.example; }\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/creds")).expect("creds"),
        "password=hunter22\n"
    );

    // A saved plan, then the template changes: the plan is stale, and a new plan shows
    // the rendered difference.
    ok(&tenet(dir, &["plan", "--out", "saved.plan"]));
    std::fs::write(
        dir.join("templates/macros.j2"),
        "{% macro server(name, port) %}server { listen {{ port }} http2; server_name {{ name }}; }\n{% endmacro %}",
    )
    .expect("edit");
    let o = tenet(dir, &["apply", "saved.plan"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("stale plan"), "{}", stderr(&o));
    let o = tenet(dir, &["plan"]);
    assert!(stdout(&o).contains("http2"), "{}", stdout(&o));
}

#[test]
fn facts_choose_what_a_host_gets_and_are_recorded_with_the_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("hosts")).expect("hosts");
    std::fs::write(
        dir.join("hosts/debian.yaml"),
        "os: {family: Debian, release: {major: '12'}}\nhostname: web1\nprocessors: {count: 8}\n",
    )
    .expect("facts");
    std::fs::write(
        dir.join("hosts/redhat.yaml"),
        "os: {family: RedHat, release: {major: '9'}}\nhostname: db1\nprocessors: {count: 2}\n",
    )
    .expect("facts");
    write_manifest(
        dir,
        r#"providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
resources:
  - id: apt-conf
    type: file.file
    when: ${ facts.os.family == "Debian" }
    properties: {path: ./out/apt.conf, content: "debian ${ facts.os.release.major }\n"}
  - id: motd
    type: file.file
    properties:
      path: ./out/motd
      content: "${ facts.hostname } with ${ facts.processors.count * 2 } workers\n"
"#,
    );
    let plan = |facts: &str| -> serde_json::Value {
        let o = tenet(dir, &["plan", "--json", "--facts", facts]);
        ok(&o);
        serde_json::from_str(&stdout(&o)).expect("plan json")
    };
    let debian = plan("hosts/debian.yaml");
    let redhat = plan("hosts/redhat.yaml");
    let ids = |p: &serde_json::Value| -> Vec<String> {
        p["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| r["id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(ids(&debian), ["apt-conf", "motd"]);
    assert_eq!(ids(&redhat), ["motd"]);
    assert_eq!(redhat["excluded"], serde_json::json!(["apt-conf"]));
    assert!(
        debian.to_string().contains("web1 with 16 workers"),
        "{debian}"
    );

    ok(&tenet(
        dir,
        &["apply", "--yes", "--facts", "hosts/redhat.yaml"],
    ));
    let o = tenet(dir, &["show", "1", "--json"]);
    ok(&o);
    let run: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("run json");
    assert_eq!(
        run["record"]["manifest_snapshot"]["facts"]["os"]["family"], "RedHat",
        "{run}"
    );

    // This host's own facts: `tenet facts` prints what manifests see.
    let o = tenet(dir, &["facts", "--json"]);
    ok(&o);
    let facts: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("facts json");
    assert!(
        facts["processors"]["count"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{facts}"
    );
    assert!(
        facts["os"]["family"].is_string() && facts["service_mgr"].is_string(),
        "{facts}"
    );
    // A manifest that names no fact never gathers them (none recorded).
    write_manifest(
        dir,
        "providers:\n  file:\n    grants:\n      fs: [{path: ./out, access: rw}]\nresources:\n  - {id: x, type: file.file, properties: {path: ./out/x, content: x}}\n",
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    let o = tenet(dir, &["show", "2", "--json"]);
    let run: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("run json");
    assert!(
        run["record"]["manifest_snapshot"].get("facts").is_none(),
        "{run}"
    );
}

#[test]
fn layered_data_finds_the_most_specific_value_and_explains_where_it_came_from() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    for (path, text) in [
        (
            "data/common.yaml",
            "nginx: {workers: 2, port: 80}\ntier: base\n",
        ),
        ("data/env/prod.yaml", "nginx: {port: 443}\ntier: prod\n"),
        ("data/nodes/web1.yaml", "nginx: {workers: 8}\n"),
        ("hosts/web1.yaml", "hostname: web1\n"),
        ("hosts/db1.yaml", "hostname: db1\n"),
    ] {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("write");
    }
    write_manifest(
        dir,
        r#"vars:
  env: prod
data:
  - data/nodes/${ facts.hostname }.yaml
  - data/env/${ var.env }.yaml
  - data/common.yaml
providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
resources:
  - id: nginx
    type: file.file
    properties:
      path: ./out/nginx.conf
      content: "workers ${ data.nginx.workers }; listen ${ data.nginx.port }; # ${ data.tier }\n"
"#,
    );
    let content = |args: &[&str]| -> String {
        let mut all = vec!["plan", "--json"];
        all.extend_from_slice(args);
        let o = tenet(dir, &all);
        ok(&o);
        let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("plan");
        plan["resources"][0]["desired"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        content(&["--facts", "hosts/web1.yaml"]),
        "workers 8; listen 443; # prod\n"
    );
    assert_eq!(
        content(&["--facts", "hosts/db1.yaml"]),
        "workers 2; listen 443; # prod\n"
    );
    assert_eq!(
        content(&["--facts", "hosts/db1.yaml", "--var", "env=dev"]),
        "workers 2; listen 80; # base\n",
        "a layer without a file is skipped"
    );
    let o = tenet(
        dir,
        &[
            "data",
            "explain",
            "nginx.workers",
            "--facts",
            "hosts/web1.yaml",
        ],
    );
    ok(&o);
    assert_eq!(
        stdout(&o),
        "data.nginx.workers (merge: deep):\n  data/nodes/web1.yaml: 8  <- most specific\n  data/env/prod.yaml: no `nginx.workers`\n  data/common.yaml: 2\n= 8\n"
    );
    // The data a run looked values up in is recorded with it.
    ok(&tenet(
        dir,
        &["apply", "--yes", "--facts", "hosts/web1.yaml"],
    ));
    let o = tenet(dir, &["show", "1", "--json"]);
    let run: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("run");
    assert_eq!(
        run["record"]["manifest_snapshot"]["data"]["nginx"]["workers"], 8,
        "{run}"
    );
    // A data file that does not parse is an error at its own line.
    std::fs::write(
        dir.join("data/env/prod.yaml"),
        "nginx: {port: 443\ntier: [\n",
    )
    .expect("break");
    let o = tenet(dir, &["validate", "--facts", "hosts/web1.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("data/env/prod.yaml:"), "{}", stderr(&o));
}

#[test]
fn a_data_value_that_feeds_a_sensitive_property_is_not_recorded_in_clear() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).expect("data");
    std::fs::write(
        dir.join("data/common.yaml"),
        "db: {password: hunter2x, user: app}\n",
    )
    .expect("data");
    write_manifest(
        dir,
        r#"data: [data/common.yaml]
providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
resources:
  - id: db-creds
    type: file.file
    sensitive: [content]
    properties: {path: ./out/creds, content: "${ data.db.password }"}
"#,
    );
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(!stdout(&o).contains("hunter2x"), "{}", stdout(&o));
    let o = tenet(dir, &["show", "1", "--json"]);
    assert!(!stdout(&o).contains("hunter2x"), "{}", stdout(&o));
    let run: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("run");
    let snap = &run["record"]["manifest_snapshot"];
    assert_eq!(snap["data"]["db"]["password"], "(sensitive)", "{snap}");
    assert_eq!(snap["data"]["db"]["user"], "app", "{snap}");
    assert_eq!(
        snap["redacted"], true,
        "such a run cannot be rolled back to: {snap}"
    );
}

#[test]
fn content_from_a_source_file_is_byte_exact_and_large_content_is_shown_by_digest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("files")).expect("mkdir");
    std::fs::create_dir_all(dir.join("modules/m/files")).expect("mkdir");
    std::fs::create_dir_all(dir.join("out")).expect("mkdir");
    // Binary and larger than a text diff: every byte value, repeated.
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("files/blob.bin"), &blob).expect("write");
    std::fs::write(dir.join("files/app.conf"), "a=1\n").expect("write");
    std::fs::write(dir.join("modules/m/files/x.conf"), "from the module\n").expect("write");
    std::fs::write(
        dir.join("modules/m/main.yaml"),
        "providers: [file]\nresources:\n  - {id: x, type: file.file, properties: {path: out/x.conf, source: files/x.conf}}\n",
    )
    .expect("write");
    write_manifest(
        dir,
        r#"providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}, {path: ./files, access: ro}, {path: ./modules/m/files, access: ro}]
resources:
  - {id: blob, type: file.file, properties: {path: out/blob.bin, source: files/blob.bin}}
  - {id: conf, type: file.file, properties: {path: out/app.conf, source: files/app.conf}}
  - {id: m, module: ./modules/m}
"#,
    );
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(std::fs::read(dir.join("out/blob.bin")).expect("blob"), blob);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/x.conf")).expect("module source"),
        "from the module\n"
    );
    let o = tenet(dir, &["plan"]);
    ok(&o);
    assert!(stdout(&o).contains("No changes"), "{}", stdout(&o));
    // A changed binary source is an update shown by digest and size, never its bytes;
    // a changed small text source is a text diff.
    let mut changed = blob.clone();
    changed[100_000] ^= 0xff;
    std::fs::write(dir.join("files/blob.bin"), &changed).expect("write");
    std::fs::write(dir.join("files/app.conf"), "a=2\n").expect("write");
    let o = tenet(dir, &["plan", "--json"]);
    ok(&o);
    let json = stdout(&o);
    assert!(
        json.len() < 20_000,
        "a large source is not inlined: {} bytes",
        json.len()
    );
    let plan: serde_json::Value = serde_json::from_str(&json).expect("plan");
    let change = |id: &str| {
        plan["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == id))
            .map(|r| r["changes"][0]["after"].clone())
            .expect("changed")
    };
    let after = change("blob");
    assert_eq!(after["size"], 200_000, "{after}");
    assert_eq!(after["sha256"].as_str().map(str::len), Some(64), "{after}");
    assert_eq!(change("conf"), "a=2\n");
    ok(&tenet(dir, &["apply", "--yes"]));
    assert_eq!(
        std::fs::read(dir.join("out/blob.bin")).expect("blob"),
        changed
    );

    // Hostile: a source outside every grant, by absolute path or by `..`, is refused
    // before anything runs, naming the property.
    write_manifest(
        dir,
        r#"providers:
  file:
    grants:
      fs: [{path: ./out, access: rw}]
resources:
  - {id: shadow, type: file.file, properties: {path: out/s, source: /etc/shadow}}
  - {id: up, type: file.file, properties: {path: out/u, source: ../../../etc/passwd}}
  - {id: both, type: file.file, properties: {path: out/b, source: out/x.conf, content: x}}
"#,
    );
    let o = tenet(dir, &["validate"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`source` /etc/shadow is outside every fs grant"),
        "{err}"
    );
    assert!(
        err.contains("`source` /etc/passwd is outside every fs grant"),
        "{err}"
    );
    assert!(
        err.contains("either `content` or `source`, not both"),
        "{err}"
    );
}
