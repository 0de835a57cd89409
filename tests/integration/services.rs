//! `service.runit` and `service.supervisor` against a real `runsvdir` and a real
//! `supervisord` the tests start in a temporary directory; `service.systemd` against
//! `systemctl --root` trees (systemd is not PID 1 on these machines — `systemctl show`
//! and `start` cannot run here, so the running-system path is covered by the provider's
//! golden transcripts in `plugins/service/src/systemd.rs`). Start, stop, enable, refresh
//! on notify (a new pid), drift and its correction, a failed start quoting the service's
//! own log, and the conformance kit.

use crate::support::{as_root, ok, stderr, stdout, tenet, tool, write_manifest};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A background daemon, stopped with `signal` (runsvdir: HUP stops every service
/// first) when the test ends, however it ends.
struct Daemon {
    child: Child,
    signal: &'static str,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args([&format!("-{}", self.signal), &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("script");
    let o = Command::new("chmod").arg("755").arg(path).status();
    assert!(o.is_ok_and(|s| s.success()));
}

fn sv_status(dir: &Path) -> String {
    let o = Command::new("sv")
        .arg("status")
        .arg(dir)
        .output()
        .expect("sv");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The pid in `run: DIR: (pid N) 3s`.
fn sv_pid(dir: &Path) -> Option<u32> {
    let s = sv_status(dir);
    s.strip_prefix("run: ")?
        .split("(pid ")
        .nth(1)?
        .split(')')
        .next()?
        .parse()
        .ok()
}

const RUNIT_GRANTS: &str = r#"  service:
    grants:
      exec:
        - {program: /usr/bin/sv, args: [[status, "/*"]], mode: probe}
        - program: /usr/bin/sv
          args: [["-w", "*", up, "/*"], ["-w", "*", down, "/*"], ["-w", "*", restart, "/*"], [hup, "/*"]]
      fs: [{path: ./sv, access: ro}, {path: ./service, access: rw}]
  file:
    grants:
      fs: [{path: ./conf, access: rw}]
"#;

#[test]
fn a_runit_service_starts_refreshes_on_notify_heals_and_stops() {
    if !as_root("start services") {
        return;
    }
    if tool("runsvdir").is_none() || tool("sv").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("service")).expect("service dir");
    std::fs::create_dir_all(dir.join("conf")).expect("conf dir");
    script(&dir.join("sv/web/run"), "exec 2>&1\nexec sleep 1000");
    // A service that dies at once, with an svlogd log saying why.
    script(
        &dir.join("sv/bad/run"),
        "exec 2>&1\necho 'boom: cannot bind 127.0.0.1:1'\nexit 1",
    );
    script(&dir.join("sv/bad/log/run"), "exec svlogd -tt ./main");
    std::fs::create_dir_all(dir.join("sv/bad/log/main")).expect("log dir");
    let _runsvdir = Daemon {
        child: Command::new("runsvdir")
            .arg("-P")
            .arg(dir.join("service"))
            .spawn()
            .expect("runsvdir"),
        signal: "HUP",
    };
    let web = dir.join("sv/web");
    let manifest = |content: &str, web: &str| {
        format!(
            "providers:\n{RUNIT_GRANTS}resources:\n  - {{id: conf, type: file.file, properties: {{path: ./conf/web.conf, content: \"{content}\"}}, notify: [web]}}\n  - {{id: web, type: service.runit, properties: {{name: web, {web}, sv_dir: ./sv, service_dir: ./service}}}}\n"
        )
    };
    write_manifest(dir, &manifest("v1", "ensure: running, enable: true"));
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(!dir.join("service/web").exists(), "a plan links nothing");

    ok(&tenet(dir, &["apply", "--yes"]));
    assert!(dir.join("service/web").is_symlink());
    let first = sv_pid(&web).expect("running");
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("No changes"), "{}", stdout(&o));
    assert_eq!(
        sv_pid(&web),
        Some(first),
        "a converged apply restarts nothing"
    );

    // The config changes: the service is restarted (a new pid).
    write_manifest(dir, &manifest("v2", "ensure: running, enable: true"));
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    let second = sv_pid(&web).expect("running");
    assert_ne!(second, first, "restarted on notify: {}", stdout(&o));

    // Drift: stopped by hand; detected, then corrected.
    let o = Command::new("sv")
        .args(["-w", "7", "down"])
        .arg(&web)
        .output()
        .expect("sv");
    assert!(o.status.success());
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("(corrective)"), "{}", stdout(&o));
    assert!(sv_pid(&web).is_some());

    // Stopped, still enabled; then off altogether: stopped and unlinked.
    write_manifest(dir, &manifest("v2", "ensure: stopped"));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert!(sv_status(&web).starts_with("down: "), "{}", sv_status(&web));
    assert!(dir.join("service/web").is_symlink());
    write_manifest(dir, &manifest("v2", "ensure: stopped, enable: false"));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert!(!dir.join("service/web").exists());

    // A service that cannot start: the error quotes its own log.
    write_manifest(
        dir,
        &format!(
            "providers:\n{RUNIT_GRANTS}resources:\n  - {{id: bad, type: service.runit, properties: {{name: bad, ensure: running, sv_dir: ./sv, service_dir: ./service, timeout: 3}}}}\n"
        ),
    );
    let o = tenet(dir, &["apply", "--yes"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("boom: cannot bind"), "{out}");

    // Bad input: a name that is a path, running but not enabled.
    write_manifest(
        dir,
        &format!(
            "providers:\n{RUNIT_GRANTS}resources:\n  - {{id: evil, type: service.runit, properties: {{name: ../web, ensure: running, enable: false, sv_dir: ./sv, service_dir: ./service}}}}\n"
        ),
    );
    let err = stderr(&tenet(dir, &["validate"]));
    assert!(
        err.contains("property `/name`: `../web` is not a service name")
            && err.contains("property `/enable`"),
        "{err}"
    );
}

const SUPERVISOR_GRANTS: &str = r#"  service:
    grants:
      exec:
        - {program: /usr/bin/supervisorctl, args: [["-c", "/*", status, "*"]], mode: probe}
        - program: /usr/bin/supervisorctl
          args: [["-c", "/*", start, "*"], ["-c", "/*", stop, "*"], ["-c", "/*", restart, "*"], ["-c", "/*", update, "*"], ["-c", "/*", signal, HUP, "*"], ["-c", "/*", tail, "*", stderr]]
  file:
    grants:
      fs: [{path: ./conf.d, access: rw}]
"#;

/// A supervisord of the test's own, with its socket and logs in `dir`.
fn supervisord(dir: &Path) -> Option<Daemon> {
    tool("supervisord")?;
    tool("supervisorctl")?;
    let d = dir.display();
    std::fs::create_dir_all(dir.join("conf.d")).expect("conf.d");
    std::fs::create_dir_all(dir.join("logs")).expect("logs");
    std::fs::write(
        dir.join("supervisord.conf"),
        format!(
            "[unix_http_server]\nfile={d}/sock\n[supervisord]\npidfile={d}/pid\nlogfile={d}/logs/supervisord.log\nchildlogdir={d}/logs\nnodaemon=true\n[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n[supervisorctl]\nserverurl=unix://{d}/sock\n[include]\nfiles={d}/conf.d/*.conf\n"
        ),
    )
    .expect("conf");
    let daemon = Daemon {
        child: Command::new("supervisord")
            .arg("-n")
            .arg("-c")
            .arg(dir.join("supervisord.conf"))
            .spawn()
            .expect("supervisord"),
        signal: "TERM",
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let o = ctl(dir, &["pid"]);
        if o.0 == Some(0) {
            return Some(daemon);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("supervisord did not answer within 15 s");
}

fn ctl(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new("supervisorctl")
        .arg("-c")
        .arg(dir.join("supervisord.conf"))
        .args(args)
        .output()
        .expect("supervisorctl");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn a_supervisor_program_is_added_started_refreshed_healed_and_stopped() {
    if !as_root("start services") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let Some(_supervisord) = supervisord(dir) else {
        return;
    };
    let manifest = |command: &str, ensure: &str| {
        format!(
            "providers:\n{SUPERVISOR_GRANTS}resources:\n  - {{id: section, type: file.file, properties: {{path: ./conf.d/web.conf, content: \"[program:web]\\ncommand={command}\\nautostart=false\\nstartsecs=1\\n\"}}, notify: [web]}}\n  - {{id: web, type: service.supervisor, properties: {{name: web, ensure: {ensure}, config: {}/supervisord.conf}}}}\n",
            dir.display()
        )
    };
    let pid = || {
        ctl(dir, &["pid", "web"])
            .1
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 0)
    };

    // The program's section does not exist yet: the plan starts it anyway, apply writes
    // the section, adds the program and starts it.
    write_manifest(dir, &manifest("/bin/sleep 1000", "running"));
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    ok(&tenet(dir, &["apply", "--yes"]));
    let first = pid().expect("running");
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("No changes"), "{}", stdout(&o));

    // A changed section: supervisord applies it and the program runs again.
    write_manifest(dir, &manifest("/bin/sleep 2000", "running"));
    ok(&tenet(dir, &["apply", "--yes"]));
    let second = pid().expect("running");
    assert_ne!(first, second);
    assert!(ctl(dir, &["status", "web"]).1.contains("RUNNING"));

    // Drift: stopped by hand.
    ctl(dir, &["stop", "web"]);
    let o = tenet(dir, &["drift", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let o = tenet(dir, &["apply", "--yes"]);
    ok(&o);
    assert!(stdout(&o).contains("(corrective)"), "{}", stdout(&o));
    assert!(pid().is_some());

    write_manifest(dir, &manifest("/bin/sleep 2000", "stopped"));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert!(ctl(dir, &["status", "web"]).1.contains("STOPPED"));

    // A program that fails at once: the error quotes its stderr.
    write_manifest(
        dir,
        &format!(
            "providers:\n{SUPERVISOR_GRANTS}resources:\n  - {{id: section, type: file.file, properties: {{path: ./conf.d/bad.conf, content: \"[program:bad]\\ncommand=/bin/sh -c 'echo boom: no config >&2; exit 1'\\nautostart=false\\nstartretries=0\\n\"}}}}\n  - {{id: bad, type: service.supervisor, properties: {{name: bad, ensure: running, config: {}/supervisord.conf}}, depends_on: [section]}}\n",
            dir.display()
        ),
    );
    let o = tenet(dir, &["apply", "--yes"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("boom: no config"), "{out}");
}

#[test]
fn systemd_units_are_enabled_and_disabled_inside_an_offline_root() {
    if tool("systemctl").is_none() {
        return;
    }
    // systemd is not PID 1 here: say so, and test what works without it.
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if pid1.trim() != "systemd" {
        eprintln!(
            "systemd is not PID 1 (it is `{}`): the running-system backend is covered by golden transcripts; testing --root here",
            pid1.trim()
        );
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let units = dir.join("image/lib/systemd/system");
    std::fs::create_dir_all(&units).expect("units");
    std::fs::write(
        units.join("demo.service"),
        "[Unit]\nDescription=demo\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    )
    .expect("unit");
    std::fs::write(
        units.join("fixed.service"),
        "[Unit]\nDescription=static\n[Service]\nExecStart=/bin/true\n",
    )
    .expect("unit");
    let grants = r#"  service:
    grants:
      exec:
        - {program: /usr/bin/systemctl, args: [["--root=/*", is-enabled, "--", "*"]], mode: probe}
        - {program: /usr/bin/systemctl, args: [["--root=/*", enable, "--", "*"], ["--root=/*", disable, "--", "*"]]}
"#;
    let manifest = |name: &str, enable: bool| {
        format!(
            "providers:\n{grants}resources:\n  - {{id: unit, type: service.systemd, properties: {{name: {name}, enable: {enable}, root: {}/image}}}}\n",
            dir.display()
        )
    };
    let wants = dir.join("image/etc/systemd/system/multi-user.target.wants/demo.service");
    write_manifest(dir, &manifest("demo", true));
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(!wants.exists());
    ok(&tenet(dir, &["apply", "--yes"]));
    assert!(wants.is_symlink(), "enabled: the wants link exists");
    let o = tenet(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    write_manifest(dir, &manifest("demo", false));
    ok(&tenet(dir, &["apply", "--yes"]));
    assert!(!wants.exists(), "disabled");
    // A unit without [Install] cannot be disabled: the plan says so, nothing changes.
    write_manifest(dir, &manifest("fixed", false));
    let o = tenet(dir, &["plan"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("`fixed.service` is static"),
        "{}",
        stdout(&o)
    );
    // Running units need a running systemd.
    write_manifest(
        dir,
        &format!(
            "providers:\n{grants}resources:\n  - {{id: unit, type: service.systemd, properties: {{name: demo, ensure: running, root: {}/image}}}}\n",
            dir.display()
        ),
    );
    let err = stderr(&tenet(dir, &["validate"]));
    assert!(
        err.contains("property `/ensure`: with `root` only enablement"),
        "{err}"
    );
}

#[test]
fn the_service_provider_passes_the_conformance_kit() {
    if !as_root("start services") {
        return;
    }
    if tool("runsvdir").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let run = std::fs::canonicalize(dir).expect("real path");
    std::fs::create_dir_all(run.join("service")).expect("service dir");
    script(&run.join("sv/kit/run"), "exec sleep 1000");
    let _runsvdir = Daemon {
        child: Command::new("runsvdir")
            .arg("-P")
            .arg(run.join("service"))
            .spawn()
            .expect("runsvdir"),
        signal: "HUP",
    };
    let Some(_supervisord) = supervisord(&run) else {
        return;
    };
    std::fs::write(
        run.join("conf.d/kit.conf"),
        "[program:kit]\ncommand=/bin/sleep 1000\nautostart=false\nstartsecs=1\n",
    )
    .expect("section");
    let r = run.display();
    std::fs::create_dir_all(run.join("fixtures")).expect("fixtures");
    std::fs::write(
        run.join("fixtures/runit.yaml"),
        format!(
            "kit:\n  properties: {{name: kit, ensure: running, enable: true, sv_dir: {r}/sv, service_dir: {r}/service}}\n  update: {{name: kit, ensure: stopped, enable: true, sv_dir: {r}/sv, service_dir: {r}/service}}\n"
        ),
    )
    .expect("fixture");
    std::fs::write(
        run.join("fixtures/supervisor.yaml"),
        format!("kit:\n  properties: {{name: kit, ensure: running, refresh: none, config: {r}/supervisord.conf}}\n"),
    )
    .expect("fixture");
    let units = run.join("image/lib/systemd/system");
    std::fs::create_dir_all(&units).expect("units");
    std::fs::write(
        units.join("kit.service"),
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    )
    .expect("unit");
    std::fs::write(
        run.join("fixtures/systemd.yaml"),
        format!("offline:\n  properties: {{name: kit, enable: true, root: {r}/image}}\n"),
    )
    .expect("fixture");
    let exec: String = RUNIT_GRANTS
        .lines()
        .chain(SUPERVISOR_GRANTS.lines())
        .filter(|l| l.trim_start().starts_with("- ") || l.trim_start().starts_with("args:"))
        .map(|l| format!("{}\n", l.strip_prefix("      ").unwrap_or(l)))
        .collect();
    let exec = format!(
        "{exec}  - {{program: /usr/bin/systemctl, args: [[\"--root=/*\", is-enabled, \"--\", \"*\"]], mode: probe}}\n  - {{program: /usr/bin/systemctl, args: [[\"--root=/*\", enable, \"--\", \"*\"], [\"--root=/*\", disable, \"--\", \"*\"]]}}\n"
    );
    std::fs::write(
        run.join("grants.yaml"),
        format!(
            "exec:\n{exec}fs: [{{path: {r}/sv, access: ro}}, {{path: {r}/service, access: rw}}]\n"
        ),
    )
    .expect("grants");
    let o = tenet(
        &run,
        &[
            "provider",
            "test",
            "builtin:service",
            "--fixtures",
            "fixtures",
            "--grants",
            "grants.yaml",
        ],
    );
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}");
}
