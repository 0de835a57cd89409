//! `service.supervisor`: a program supervisord runs, read and controlled with
//! `supervisorctl -c CONFIG` (always with `-c`: without it supervisorctl looks for a
//! configuration in the working directory first). State is the word supervisorctl
//! prints (`RUNNING`, `STARTING` count as running), never its exit code alone.
//!
//! supervisor has no "enabled" of its own — whether a program starts with supervisord is
//! `autostart=` in its section, a file another resource manages — so this kind has no
//! `enable`. A program supervisord does not know yet (its section was just written) is
//! added with `supervisorctl update NAME` before it starts; a refresh runs `update NAME`
//! too, so a changed section takes effect, then restarts (or sends SIGHUP). A failed start
//! quotes the last lines of the program's stderr (`supervisorctl tail NAME stderr`).

use crate::{Refresh, Run, Runner, failed, last_lines};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenet_sdk::{Diagnostic, Error, KindInfo};

pub const SUPERVISORCTL: &str = "/usr/bin/supervisorctl";
pub const CONFIG: &str = "/etc/supervisor/supervisord.conf";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    name: String,
    ensure: Option<Run>,
    #[serde(default)]
    refresh: Refresh,
    config: Option<String>,
}

impl Props {
    fn config(&self) -> &str {
        self.config.as_deref().unwrap_or(CONFIG)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Observed {
    name: String,
    ensure: Run,
    config: String,
}

pub fn kind() -> KindInfo {
    KindInfo::new(
        "supervisor",
        "a program supervisord runs ([program:NAME] in its configuration)",
        crate::schema(json!({
            "config": {"type": "string", "default": CONFIG,
                "description": "supervisord's configuration (supervisorctl -c), which names its socket"},
        })),
        "name",
    )
}

pub fn validate(properties: &Value) -> Vec<Diagnostic> {
    let p: Props = match crate::parse_props(properties) {
        Ok(p) => p,
        Err(d) => return d,
    };
    let mut out: Vec<Diagnostic> = crate::name_problem(&p.name, "", "a supervisor program name")
        .into_iter()
        .collect();
    if let Some(problem) = crate::absolute_problem(p.config.as_deref()) {
        out.push(Diagnostic::error("/config", problem));
    }
    out
}

/// What supervisorctl says of the program: `Some(state word)`, or `None` when
/// supervisord does not know it.
fn state(r: &mut dyn Runner, p: &Props) -> Result<Option<String>, Error> {
    let out = ctl(r, p, &["status", &p.name])?;
    let text = out.stdout_text();
    if text.contains("no such process") {
        return Ok(None);
    }
    if text.contains("no such file") || text.contains("refused connection") {
        return Err(Error::Conflict(format!(
            "supervisord is not running for {} (supervisorctl: {})",
            p.config(),
            text.trim()
        )));
    }
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(name), Some(word)) if name == p.name => Ok(Some(word.to_owned())),
        _ => Err(Error::Internal(failed(
            SUPERVISORCTL,
            &args(p, &["status", &p.name]),
            &out,
        ))),
    }
}

fn args(p: &Props, rest: &[&str]) -> Vec<String> {
    let mut a = vec!["-c".to_owned(), p.config().to_owned()];
    a.extend(rest.iter().map(|s| (*s).to_owned()));
    a
}

fn ctl(r: &mut dyn Runner, p: &Props, rest: &[&str]) -> Result<tenet_sdk::exec::Output, Error> {
    r.run(SUPERVISORCTL, &args(p, rest))
}

fn running(word: &str) -> bool {
    matches!(word, "RUNNING" | "STARTING")
}

fn observe(r: &mut dyn Runner, p: &Props) -> Result<Option<Observed>, Error> {
    Ok(state(r, p)?.filter(|w| running(w)).map(|_| Observed {
        name: p.name.clone(),
        ensure: Run::Running,
        config: p.config().to_owned(),
    }))
}

pub fn read(r: &mut dyn Runner, properties: &Value) -> Result<Option<Value>, Error> {
    let p: Props = tenet_sdk::from_value(properties)?;
    observe(r, &p)?.map(|o| tenet_sdk::to_value(&o)).transpose()
}

/// `supervisorctl VERB NAME`, checked by what it prints (`NAME: started`), with the
/// program's stderr when it failed.
fn control(r: &mut dyn Runner, p: &Props, verb: &str) -> Result<(), Error> {
    let out = ctl(r, p, &[verb, &p.name])?;
    let text = out.stdout_text();
    let ok = out.success()
        && text.lines().all(|l| {
            !l.contains("ERROR") || l.contains("already started") || l.contains("not running")
        });
    if ok {
        return Ok(());
    }
    let tail = ctl(r, p, &["tail", &p.name, "stderr"])
        .ok()
        .filter(|o| o.success())
        .map(|o| {
            format!(
                "\n  last lines of its stderr:{}",
                last_lines(&o.stdout_text(), 10)
            )
        })
        .unwrap_or_default();
    Err(Error::Conflict(format!(
        "{}{tail}",
        failed(SUPERVISORCTL, &args(p, &[verb, &p.name]), &out)
    )))
}

/// `supervisorctl update NAME`: add the program, or apply a changed section.
fn update(r: &mut dyn Runner, p: &Props) -> Result<(), Error> {
    let out = ctl(r, p, &["update", &p.name])?;
    if out.success() {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "no program `{}` in supervisord's configuration {}: {}",
        p.name,
        p.config(),
        out.stdout_text().trim()
    )))
}

pub fn apply(r: &mut dyn Runner, desired: &Value, refresh: bool) -> Result<Value, Error> {
    let p: Props = tenet_sdk::from_value(desired)?;
    let mut word = state(r, &p)?;
    if word.is_none() || refresh {
        update(r, &p)?;
        word = state(r, &p)?;
    }
    let Some(word) = word else {
        return Err(Error::NotFound(format!(
            "supervisord does not know program `{}` even after `update` (is there a [program:{}] section in {}?)",
            p.name,
            p.name,
            p.config()
        )));
    };
    let is_running = running(&word);
    match p.ensure {
        Some(Run::Running) if !is_running => control(r, &p, "start")?,
        Some(Run::Stopped) if is_running => control(r, &p, "stop")?,
        _ if refresh && is_running => match p.refresh {
            Refresh::Restart => control(r, &p, "restart")?,
            Refresh::Reload => {
                let out = ctl(r, &p, &["signal", "HUP", &p.name])?;
                if !out.success() {
                    return Err(Error::Conflict(failed(
                        SUPERVISORCTL,
                        &args(&p, &["signal", "HUP", &p.name]),
                        &out,
                    )));
                }
            }
            Refresh::None => {}
        },
        _ => {}
    }
    let fresh = observe(r, &p)?
        .ok_or_else(|| Error::Internal(format!("`{}` is not running after apply", p.name)))?;
    tenet_sdk::to_value(&fresh)
}

pub fn delete(r: &mut dyn Runner, current: &Value) -> Result<(), Error> {
    let now: Observed = tenet_sdk::from_value(current)?;
    let p = Props {
        name: now.name,
        ensure: None,
        refresh: Refresh::None,
        config: Some(now.config),
    };
    if state(r, &p)?.is_some_and(|w| running(&w)) {
        control(r, &p, "stop")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{Transcript, out};

    #[test]
    fn an_unknown_program_is_added_then_started_and_a_failed_start_quotes_stderr() {
        let c = "/usr/bin/supervisorctl -c /s.conf";
        let mut t = Transcript::new(&[
            (
                &format!("{c} status web"),
                out(4, "web: ERROR (no such process)\n", ""),
            ),
            (
                &format!("{c} update web"),
                out(0, "web: added process group\n", ""),
            ),
            (
                &format!("{c} status web"),
                out(3, "web    STOPPED   Not started\n", ""),
            ),
            (
                &format!("{c} start web"),
                out(7, "web: ERROR (spawn error)\n", ""),
            ),
            (
                &format!("{c} tail web stderr"),
                out(0, "boom\nboom\n\n", ""),
            ),
        ]);
        let err = apply(
            &mut t,
            &json!({"name": "web", "ensure": "running", "config": "/s.conf"}),
            false,
        )
        .expect_err("spawn error");
        t.done();
        let msg = err.to_string();
        assert!(
            msg.contains("spawn error") && msg.contains("    boom"),
            "{msg}"
        );
    }

    #[test]
    fn a_refresh_applies_the_section_then_restarts() {
        let c = "/usr/bin/supervisorctl -c /s.conf";
        let mut t = Transcript::new(&[
            (
                &format!("{c} status web"),
                out(0, "web  RUNNING   pid 1, uptime 0:01:00\n", ""),
            ),
            (&format!("{c} update web"), out(0, "", "")),
            (
                &format!("{c} status web"),
                out(0, "web  RUNNING   pid 1, uptime 0:01:00\n", ""),
            ),
            (
                &format!("{c} restart web"),
                out(0, "web: stopped\nweb: started\n", ""),
            ),
            (
                &format!("{c} status web"),
                out(0, "web  RUNNING   pid 2, uptime 0:00:01\n", ""),
            ),
        ]);
        let s = apply(
            &mut t,
            &json!({"name": "web", "ensure": "running", "config": "/s.conf"}),
            true,
        )
        .expect("refresh");
        t.done();
        assert_eq!(s["ensure"], "running");
    }

    #[test]
    fn supervisord_down_is_a_conflict_naming_the_config() {
        let mut t = Transcript::new(&[(
            "/usr/bin/supervisorctl -c /s.conf status web",
            out(4, "unix:///tmp/s.sock no such file\n", ""),
        )]);
        let err = read(&mut t, &json!({"name": "web", "config": "/s.conf"})).expect_err("down");
        assert!(
            err.to_string()
                .contains("supervisord is not running for /s.conf"),
            "{err}"
        );
    }
}
