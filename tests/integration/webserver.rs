//! `examples/webserver` as an operator would run it, as root: lighttpd from Debian's
//! mirror (network), a system user and group owning the site, a managed block in
//! lighttpd's own configuration, the service under a runsvdir the test starts — then an
//! HTTP request to the port the block set, and a port change that restarts it (notify).

use crate::packages::{APT, installed, mirror_unreachable, ready};
use crate::support::{ok, skipped, stderr, stdout, tenet, tool};
use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// What the example leaves on the machine, removed however the test ends.
struct Teardown {
    runsvdir: Child,
    user: String,
    group: String,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-HUP", &self.runsvdir.id().to_string()])
            .status();
        let _ = self.runsvdir.wait();
        let _ = Command::new("apt-get")
            .args(["-y", "-q", "purge", "lighttpd"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        let _ = Command::new("userdel").arg(&self.user).output();
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

fn get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn serves(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if get(port).is_some_and(|b| b.contains("configured by Tenet")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn the_webserver_example_serves_its_page_and_restarts_on_a_config_change() {
    let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
    if !ready() || tool("runsvdir").is_none() {
        return;
    }
    if installed("lighttpd").is_some() {
        skipped("lighttpd is already installed on this machine; not touching it");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = std::fs::canonicalize(tmp.path()).expect("real path");
    // lighttpd drops to www-data, which must reach the site.
    assert!(
        Command::new("chmod")
            .arg("755")
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success())
    );
    std::fs::create_dir_all(dir.join("service")).expect("service dir");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/webserver/tenet.yaml"
        ),
        dir.join("tenet.yaml"),
    )
    .expect("copy the example");
    let id = std::process::id();
    let _teardown = Teardown {
        runsvdir: Command::new("runsvdir")
            .arg("-P")
            .arg(dir.join("service"))
            .spawn()
            .expect("runsvdir"),
        user: format!("tenetwu{id}"),
        group: format!("tenetwg{id}"),
    };
    let vars = |port: u16| -> Vec<String> {
        [
            format!("port={port}"),
            format!("docroot={}/www", dir.display()),
            format!("user=tenetwu{id}"),
            format!("group=tenetwg{id}"),
            format!("sv_dir={}/sv", dir.display()),
            format!("service_dir={}/service", dir.display()),
        ]
        .into_iter()
        .flat_map(|v| ["--var".to_owned(), v])
        .collect()
    };
    let run = |cmd: &str, port: u16| {
        let mut args = vec![cmd.to_owned()];
        if cmd == "apply" {
            args.push("--yes".into());
        }
        args.extend(vars(port));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tenet(&dir, &args)
    };
    let port = free_port();
    ok(&run("validate", port));
    let o = run("apply", port);
    if mirror_unreachable(&o) {
        return;
    }
    ok(&o);
    assert!(
        serves(port),
        "lighttpd serves the page on {port}: {}",
        stdout(&o)
    );
    let o = run("apply", port);
    ok(&o);
    assert!(stdout(&o).contains("No changes"), "{}", stdout(&o));

    // A new port in the managed block: lighttpd is restarted and listens there.
    let other = free_port();
    let o = run("apply", other);
    ok(&o);
    let out = stdout(&o);
    assert!(out.contains("config") && out.contains("lighttpd"), "{out}");
    assert!(
        serves(other),
        "restarted on the new port {other}: {out}{}",
        stderr(&o)
    );
    let conf = std::fs::read_to_string("/etc/lighttpd/lighttpd.conf").expect("conf");
    assert!(conf.contains(&format!("server.port := {other}")), "{conf}");
    assert!(
        conf.contains("server.username"),
        "the rest of Debian's file is kept"
    );
}
