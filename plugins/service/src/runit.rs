//! `service.runit`: a service defined by a directory `sv_dir/NAME` (its `run` script),
//! enabled by linking it into `service_dir` (the directory `runsvdir` scans), run and
//! stopped with `sv`. State comes from `sv status` — the supervisor's own answer — never
//! from files a dead `runsv` left behind.
//!
//! runit runs only services that are linked (supervised), so `enable: false` with
//! `ensure: running` is refused. Enabling waits (up to `timeout`) for `runsvdir` to pick
//! the link up — it rescans every five seconds — instead of sleeping a fixed time. A start
//! is confirmed a second later: `sv up` reports success as soon as the run script
//! started, even one that dies at once. A failed start quotes `sv` and the last lines of
//! the service's log (`log/main/current`, svlogd's file), when it has one.

use crate::{Refresh, Run, Runner, failed, last_lines};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tenet_sdk::{Diagnostic, Error, KindInfo};

pub const SV: &str = "/usr/bin/sv";
pub const SV_DIR: &str = "/etc/sv";
pub const SERVICE_DIR: &str = "/etc/service";
/// Seconds `sv -w` waits, and how long enabling waits for runsvdir, by default.
const DEFAULT_TIMEOUT: u32 = 7;
/// How long a started service must stay up to count as started.
const CONFIRM: Duration = Duration::from_secs(1);
/// How often to look while waiting for runsvdir.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    name: String,
    ensure: Option<Run>,
    enable: Option<bool>,
    #[serde(default)]
    refresh: Refresh,
    sv_dir: Option<String>,
    service_dir: Option<String>,
    timeout: Option<u32>,
}

impl Props {
    fn sv_dir(&self) -> &str {
        self.sv_dir.as_deref().unwrap_or(SV_DIR)
    }
    fn service_dir(&self) -> &str {
        self.service_dir.as_deref().unwrap_or(SERVICE_DIR)
    }
    /// The service's own directory (what `sv` is given: a path, so `SVDIR` plays no
    /// part).
    fn dir(&self) -> String {
        format!("{}/{}", self.sv_dir(), self.name)
    }
    fn link(&self) -> String {
        format!("{}/{}", self.service_dir(), self.name)
    }
    fn timeout(&self) -> u32 {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// The state: where it lives (so `delete` finds it) and how it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Observed {
    name: String,
    ensure: Run,
    enable: bool,
    sv_dir: String,
    service_dir: String,
}

pub fn kind() -> KindInfo {
    KindInfo::new(
        "runit",
        "a runit service: a directory with a run script, linked into the scanned directory",
        crate::schema(json!({
            "enable": {"type": "boolean",
                "description": "linked into service_dir, so runsvdir supervises it (and starts it at boot)"},
            "sv_dir": {"type": "string", "default": SV_DIR,
                "description": "where the service's directory (with its run script) is"},
            "service_dir": {"type": "string", "default": SERVICE_DIR,
                "description": "the directory runsvdir scans"},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 600, "default": DEFAULT_TIMEOUT,
                "description": "seconds to wait for a start, a stop or runsvdir"},
        })),
        "name",
    )
    .path_properties(&["sv_dir", "service_dir"])
}

pub fn validate(properties: &Value) -> Vec<Diagnostic> {
    let p: Props = match crate::parse_props(properties) {
        Ok(p) => p,
        Err(d) => return d,
    };
    let mut out: Vec<Diagnostic> = crate::name_problem(&p.name, "@", "a service name")
        .into_iter()
        .collect();
    if p.ensure == Some(Run::Running) && p.enable == Some(false) {
        out.push(Diagnostic::error(
            "/enable",
            "runit runs only services linked into service_dir: `ensure: running` needs `enable: true` (or no `enable`)",
        ));
    }
    out
}

/// What `sv status DIR` says: `Some(true)` running, `Some(false)` down, `None` not
/// supervised (no runsv for it).
fn status(r: &mut dyn Runner, dir: &str) -> Result<(Option<bool>, String), Error> {
    let args = vec!["status".to_owned(), dir.to_owned()];
    let out = r.run(SV, &args)?;
    let text = out.stdout_text();
    let state = if text.starts_with("run: ") {
        Some(true)
    } else if text.starts_with("down: ") || text.starts_with("finish: ") {
        Some(false)
    } else if text.contains("unable to open supervise/ok") || text.contains("runsv not running") {
        None
    } else {
        return Err(Error::Internal(failed(SV, &args, &out)));
    };
    Ok((state, text.trim().to_owned()))
}

/// `to` relative to the directory `from` (both absolute and clean): the sandbox refuses
/// absolute symlink targets, and a relative link reads the same to runsvdir.
fn relative(from: &Path, to: &Path) -> std::path::PathBuf {
    let (f, t): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = std::path::PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// Whether `link` is a symlink to `dir` (an absolute target, or a relative one that
/// leads there); a conflict when something else is there.
fn linked(link: &str, dir: &str) -> Result<bool, Error> {
    match std::fs::symlink_metadata(link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::CapabilityDenied(format!("{link}: {e}"))),
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(link)
                .map_err(|e| Error::CapabilityDenied(format!("{link}: {e}")))?;
            let parent = Path::new(link).parent().unwrap_or(Path::new("/"));
            if target == Path::new(dir) || target == relative(parent, Path::new(dir)) {
                Ok(true)
            } else {
                Err(Error::Conflict(format!(
                    "{link} links to {}, not to {dir}",
                    target.display()
                )))
            }
        }
        Ok(_) => Err(Error::Conflict(format!(
            "{link} exists and is not a link to {dir}: move it away first"
        ))),
    }
}

fn observe(r: &mut dyn Runner, p: &Props) -> Result<Option<Observed>, Error> {
    if !Path::new(&p.dir()).is_dir() {
        // Not defined yet (a run script another resource writes): nothing runs.
        return Ok(None);
    }
    let enable = linked(&p.link(), &p.dir())?;
    let (running, _) = status(r, &p.dir())?;
    let running = running == Some(true);
    if !enable && !running {
        return Ok(None);
    }
    Ok(Some(Observed {
        name: p.name.clone(),
        ensure: if running { Run::Running } else { Run::Stopped },
        enable,
        sv_dir: p.sv_dir().to_owned(),
        service_dir: p.service_dir().to_owned(),
    }))
}

pub fn read(r: &mut dyn Runner, properties: &Value) -> Result<Option<Value>, Error> {
    let p: Props = tenet_sdk::from_value(properties)?;
    observe(r, &p)?.map(|o| tenet_sdk::to_value(&o)).transpose()
}

/// `sv -w T VERB DIR`; a failure quotes sv and the service's log.
fn control(r: &mut dyn Runner, p: &Props, verb: &str) -> Result<(), Error> {
    let args = vec![
        "-w".to_owned(),
        p.timeout().to_string(),
        verb.to_owned(),
        p.dir(),
    ];
    let out = r.run(SV, &args)?;
    if out.success() && out.stdout_text().starts_with("ok: ") {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "{}{}",
        failed(SV, &args, &out),
        log_tail(p)
    )))
}

/// Start (or restart) and confirm it stays up.
fn start(r: &mut dyn Runner, p: &Props, verb: &str) -> Result<(), Error> {
    control(r, p, verb)?;
    r.sleep(CONFIRM);
    let (state, text) = status(r, &p.dir())?;
    if state == Some(true) && !text.contains("want down") {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "`{}` did not stay up after {verb}: {text}{}",
        p.name,
        log_tail(p)
    )))
}

/// The last lines of the service's svlogd log, when it has one.
fn log_tail(p: &Props) -> String {
    let file = format!("{}/log/main/current", p.dir());
    match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => {
            format!("\n  last lines of {file}:{}", last_lines(&text, 10))
        }
        _ => String::new(),
    }
}

/// Wait until runsvdir supervises the service (it rescans at least every five seconds).
fn await_supervision(r: &mut dyn Runner, p: &Props) -> Result<(), Error> {
    let rounds = u64::from(p.timeout()) * 1000 / POLL.as_millis() as u64;
    for _ in 0..=rounds {
        if status(r, &p.dir())?.0.is_some() {
            return Ok(());
        }
        r.sleep(POLL);
    }
    Err(Error::Conflict(format!(
        "runsvdir did not pick up {} within {}s: is a runsvdir scanning {}?",
        p.link(),
        p.timeout(),
        p.service_dir()
    )))
}

pub fn apply(r: &mut dyn Runner, desired: &Value, refresh: bool) -> Result<Value, Error> {
    let p: Props = tenet_sdk::from_value(desired)?;
    if !Path::new(&p.dir()).is_dir() {
        return Err(Error::NotFound(format!(
            "no runit service directory {}: create it (with its run script) first",
            p.dir()
        )));
    }
    let now = observe(r, &p)?;
    let enabled = now.as_ref().is_some_and(|n| n.enable);
    let running = now.as_ref().is_some_and(|n| n.ensure == Run::Running);
    let want_enabled = p.enable.unwrap_or(enabled) || p.ensure == Some(Run::Running);
    if want_enabled && !enabled {
        let parent = Path::new(p.service_dir());
        let target = relative(parent, Path::new(&p.dir()));
        tenet_sdk::fs::symlink(&target.to_string_lossy(), Path::new(&p.link()))
            .map_err(|e| Error::CapabilityDenied(format!("{}: {e}", p.link())))?;
        await_supervision(r, &p)?;
    }
    match p.ensure {
        Some(Run::Running) if !running => start(r, &p, "up")?,
        Some(Run::Stopped) if running => control(r, &p, "down")?,
        _ if refresh && running => match p.refresh {
            Refresh::Restart => start(r, &p, "restart")?,
            Refresh::Reload => {
                let args = vec!["hup".to_owned(), p.dir()];
                let out = r.run(SV, &args)?;
                if !out.success() {
                    return Err(Error::Conflict(failed(SV, &args, &out)));
                }
            }
            Refresh::None => {}
        },
        _ => {}
    }
    if !want_enabled && enabled {
        unlink(&p)?;
    }
    let fresh = observe(r, &p)?.ok_or_else(|| {
        Error::Internal(format!(
            "`{}` is neither running nor linked after apply",
            p.name
        ))
    })?;
    tenet_sdk::to_value(&fresh)
}

/// Remove the link; runsv stops supervising at runsvdir's next scan.
fn unlink(p: &Props) -> Result<(), Error> {
    std::fs::remove_file(p.link())
        .map_err(|e| Error::CapabilityDenied(format!("{}: {e}", p.link())))
}

pub fn delete(r: &mut dyn Runner, current: &Value) -> Result<(), Error> {
    let now: Observed = tenet_sdk::from_value(current)?;
    let p = Props {
        name: now.name,
        ensure: None,
        enable: None,
        refresh: Refresh::None,
        sv_dir: Some(now.sv_dir),
        service_dir: Some(now.service_dir),
        timeout: None,
    };
    if status(r, &p.dir())?.0 == Some(true) {
        control(r, &p, "down")?;
    }
    if linked(&p.link(), &p.dir())? {
        unlink(&p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_to_the_scanned_directory() {
        let rel = |a: &str, b: &str| relative(Path::new(a), Path::new(b)).display().to_string();
        assert_eq!(rel("/etc/service", "/etc/sv/web"), "../sv/web");
        assert_eq!(rel("/srv/a/service", "/opt/sv/web"), "../../../opt/sv/web");
        assert_eq!(rel("/t/service", "/t/service/x"), "x");
    }
}
