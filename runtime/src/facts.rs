//! Facts: what the host is, for `${ facts.… }` in manifests — gathered on the host, only
//! when a manifest uses them, in Facter's shape where Facter has the fact
//! (`os.family`, `os.release.major`, `processors.count`, `memory.system.total_bytes`,
//! `networking.ip`, …), plus the two whose wrong values cause the worst bugs elsewhere:
//! `service_mgr` (from `/run/systemd/system` and PID 1's name, never `/sbin/init`) and
//! `pkg_mgr`. External facts — every `*.json`, `*.yaml` and `*.yml` file of a directory
//! (`/etc/tenet/facts.d` by default), each a mapping — are merged over the core ones.
//!
//! Reading only: files under `/etc`, `/proc` and `/run`, `uname`, and the address the
//! kernel would send from (a UDP socket that is connected, never written to).

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// Where external facts live unless told otherwise (Facter's is /etc/facter/facts.d).
pub const EXTERNAL_DIR: &str = "/etc/tenet/facts.d";
/// Largest external facts file read.
pub const MAX_EXTERNAL_BYTES: u64 = 1024 * 1024;

/// Every fact of this host, core facts first, then external ones from `external`
/// (a directory; missing is fine). Problems with external files are returned beside the
/// facts, each naming its file: a fact file that does not parse is an error, not a
/// silent gap.
pub fn gather(external: Option<&Path>) -> (Value, Vec<String>) {
    let mut facts = core();
    let mut problems = Vec::new();
    let dir = external.unwrap_or(Path::new(EXTERNAL_DIR));
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => Some(entries),
        // The default directory need not exist; one the operator named must.
        Err(e) if external.is_none() && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            None
        }
    };
    if let Some(entries) = entries {
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "json" | "yaml" | "yml") {
                continue;
            }
            match read_external(&file) {
                Ok(Value::Object(m)) => {
                    if let Some(f) = facts.as_object_mut() {
                        f.extend(m);
                    }
                }
                Ok(_) => problems.push(format!(
                    "{}: external facts must be a mapping of names to values",
                    file.display()
                )),
                Err(e) => problems.push(format!("{}: {e}", file.display())),
            }
        }
    }
    (facts, problems)
}

fn read_external(file: &Path) -> Result<Value, String> {
    let size = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
    if size > MAX_EXTERNAL_BYTES {
        return Err(format!(
            "{size} bytes, over the limit of {MAX_EXTERNAL_BYTES}"
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))
    } else {
        crate::manifest::yaml::parse(file, &text)
            .map(|(v, _)| v)
            .map_err(|e| format!("{}: {}", e.location, e.message))
    }
}

/// The core facts.
fn core() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let os_release = parse_os_release(&read("/etc/os-release"));
    let uname = rustix::system::uname();
    let nodename = uname.nodename().to_string_lossy().into_owned();
    let hostname = nodename.split('.').next().unwrap_or_default().to_owned();
    let domain = match nodename.split_once('.') {
        Some((_, d)) => d.to_owned(),
        None => resolv_domain(&read("/etc/resolv.conf")).unwrap_or_default(),
    };
    let fqdn = if domain.is_empty() {
        hostname.clone()
    } else {
        format!("{hostname}.{domain}")
    };
    let cpus = read("/proc/cpuinfo")
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let cpus = if cpus > 0 {
        cpus
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    };
    let mem = parse_meminfo(&read("/proc/meminfo"));
    let total = mem.get("MemTotal").copied().unwrap_or(0);
    let available = mem.get("MemAvailable").copied().unwrap_or(0);
    let ip = primary_ip();
    let pid1 = read("/proc/1/comm").trim().to_owned();
    json!({
        "os": os(&os_release, &read("/etc/debian_version")),
        "kernel": uname.sysname().to_string_lossy(),
        "kernelrelease": uname.release().to_string_lossy(),
        "architecture": std::env::consts::ARCH,
        "hostname": hostname,
        "domain": domain,
        "fqdn": fqdn,
        "processors": {"count": cpus},
        "memory": {
            "total_bytes": total,
            "system": {"total_bytes": total, "available_bytes": available},
        },
        "networking": {
            "hostname": hostname,
            "domain": domain,
            "fqdn": fqdn,
            "ip": ip,
        },
        "service_mgr": service_mgr(Path::new("/run/systemd/system").is_dir(), &pid1),
        "pkg_mgr": pkg_mgr(&|p| Path::new(p).exists()),
    })
}

/// `KEY=value` lines of os-release (quotes removed).
fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.trim().trim_matches('"').trim_matches('\'').to_owned(),
            )
        })
        .collect()
}

/// Facter's `os` fact: name, family, release (full, major, minor), distro codename.
fn os(release: &BTreeMap<String, String>, debian_version: &str) -> Value {
    let id = release.get("ID").cloned().unwrap_or_else(|| "linux".into());
    let like = release.get("ID_LIKE").cloned().unwrap_or_default();
    let is = |names: &[&str]| {
        names
            .iter()
            .any(|n| id == *n || like.split_whitespace().any(|l| l == *n))
    };
    let family = if is(&["debian", "ubuntu"]) {
        "Debian"
    } else if is(&["rhel", "fedora", "centos"]) {
        "RedHat"
    } else if is(&["suse", "opensuse", "sles"]) {
        "Suse"
    } else if is(&["arch"]) {
        "Archlinux"
    } else if is(&["alpine"]) {
        "Alpine"
    } else {
        "Linux"
    };
    let name = match id.as_str() {
        "rhel" => "RedHat".to_owned(),
        "opensuse-leap" | "opensuse-tumbleweed" => "openSUSE".to_owned(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
    };
    // Debian's point release is in /etc/debian_version (os-release says only "12").
    let full = match debian_version.trim() {
        v if id == "debian" && v.chars().next().is_some_and(|c| c.is_ascii_digit()) => v.to_owned(),
        _ => release.get("VERSION_ID").cloned().unwrap_or_default(),
    };
    let mut parts = full.split('.');
    json!({
        "name": name,
        "family": family,
        "release": {
            "full": full,
            "major": parts.next().unwrap_or_default(),
            "minor": parts.next().unwrap_or_default(),
        },
        "distro": {"codename": release.get("VERSION_CODENAME").cloned().unwrap_or_default()},
    })
}

/// `Key: N kB` lines of /proc/meminfo, in bytes.
fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb: u64 = v.split_whitespace().next()?.parse().ok()?;
            Some((k.to_owned(), kb * 1024))
        })
        .collect()
}

/// The `domain` (or first `search`) entry of resolv.conf.
fn resolv_domain(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("domain" | "search") => w.next().map(str::to_owned),
            _ => None,
        }
    })
}

/// The address the kernel would send from to reach the Internet (no packet is sent);
/// 127.0.0.1 without a route.
fn primary_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map_or_else(|_| "127.0.0.1".to_owned(), |a| a.ip().to_string())
}

/// The running service manager: systemd only when it booted the machine
/// (`/run/systemd/system`, what sd_booted checks); otherwise PID 1's name.
fn service_mgr(systemd_booted: bool, pid1: &str) -> &'static str {
    if systemd_booted {
        return "systemd";
    }
    match pid1 {
        "systemd" => "systemd",
        "runit" | "runsvdir" => "runit",
        "s6-svscan" => "s6",
        "openrc-init" => "openrc",
        "supervisord" => "supervisor",
        "init" => "sysvinit",
        _ => "unknown",
    }
}

/// The package manager, by the first of its programs present.
fn pkg_mgr(exists: &dyn Fn(&str) -> bool) -> &'static str {
    [
        ("/usr/bin/apt-get", "apt"),
        ("/usr/bin/dnf", "dnf"),
        ("/usr/bin/yum", "yum"),
        ("/usr/bin/zypper", "zypper"),
        ("/sbin/apk", "apk"),
        ("/usr/bin/pacman", "pacman"),
    ]
    .iter()
    .find(|(p, _)| exists(p))
    .map_or("unknown", |(_, m)| m)
}

/// Every fact as `path = value` lines, sorted (for `tenet facts`).
pub fn lines(facts: &Value) -> Vec<String> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            other => out.push(format!("{prefix} = {other}")),
        }
    }
    let mut out = Vec::new();
    walk("", facts, &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_facts_follow_facter() {
        let debian = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n",
        );
        let os = os(&debian, "12.15\n");
        assert_eq!(os["family"], "Debian");
        assert_eq!(os["name"], "Debian");
        assert_eq!(os["release"]["full"], "12.15");
        assert_eq!(os["release"]["major"], "12");
        assert_eq!(os["distro"]["codename"], "bookworm");
        let rocky =
            parse_os_release("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n");
        let os = super::os(&rocky, "");
        assert_eq!(
            (os["family"].as_str(), os["name"].as_str()),
            (Some("RedHat"), Some("Rocky"))
        );
        assert_eq!(os["release"]["minor"], "4");
    }

    #[test]
    fn service_manager_trusts_the_boot_not_sbin_init() {
        assert_eq!(service_mgr(true, "systemd"), "systemd");
        // A container whose PID 1 is something else, with /sbin/init -> systemd on disk.
        assert_eq!(service_mgr(false, "process_api"), "unknown");
        assert_eq!(service_mgr(false, "runit"), "runit");
        assert_eq!(pkg_mgr(&|p| p == "/usr/bin/dnf"), "dnf");
    }

    #[test]
    fn meminfo_and_resolv_conf_are_read() {
        let m = parse_meminfo("MemTotal:       16384 kB\nMemAvailable:    8192 kB\n");
        assert_eq!(m["MemTotal"], 16 * 1024 * 1024);
        assert_eq!(
            resolv_domain("nameserver 1.1.1.1\nsearch corp.example other\n").as_deref(),
            Some("corp.example")
        );
    }

    #[test]
    fn external_facts_merge_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("role.yaml"), "role: web\nos: overridden\n").expect("yaml");
        std::fs::write(dir.path().join("dc.json"), "{\"datacenter\": \"fra1\"}").expect("json");
        std::fs::write(dir.path().join("broken.json"), "{nope").expect("bad");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("txt");
        let (facts, problems) = gather(Some(dir.path()));
        assert_eq!(facts["role"], "web");
        assert_eq!(facts["datacenter"], "fra1");
        assert_eq!(
            facts["os"], "overridden",
            "external facts win over core ones"
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("broken.json") && problems[0].contains("not valid JSON"));
        assert!(
            facts["processors"]["count"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        );
        assert!(
            lines(&facts)
                .iter()
                .any(|l| l.starts_with("memory.system.total_bytes = "))
        );
    }
}
