//! `service.systemd`: a unit systemd runs, read with `systemctl show -p …` (key=value,
//! the interface Chef and Ansible settled on; `is-active` prose is not parsed) and
//! controlled with `systemctl start|stop|restart|reload|enable|disable -- UNIT`, after a
//! `daemon-reload` when systemd says the unit file changed (`NeedDaemonReload=yes`) or
//! does not know the unit yet (a unit file another resource just wrote). A failed start
//! quotes the unit's last journal lines (`journalctl -n 20 -u UNIT`).
//!
//! systemd must be the running manager: when `systemctl show` fails, `systemctl
//! is-system-running` (which asks sd_booted — `/run/systemd/system` — never looks at
//! `/sbin/init`) tells whether it is there at all, and an `offline` answer fails the read
//! naming the other backends. With `root: DIR` the kind manages only enablement inside an
//! offline root (an image being built): `systemctl --root=DIR is-enabled|enable|disable`,
//! which needs no running systemd; `ensure` is then refused.

use crate::{Refresh, Run, Runner, failed, last_lines};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tenet_sdk::{Diagnostic, Error, KindInfo};

pub const SYSTEMCTL: &str = "/usr/bin/systemctl";
pub const JOURNALCTL: &str = "/usr/bin/journalctl";
/// What `show` is asked for.
pub const PROPERTIES: &str =
    "--property=ActiveState,SubState,UnitFileState,LoadState,NeedDaemonReload";
/// Unit file states that count as enabled (Chef's list); `static` and friends cannot be
/// enabled or disabled, they are started by what wants them.
const ENABLED: &[&str] = &[
    "enabled",
    "enabled-runtime",
    "alias",
    "static",
    "indirect",
    "generated",
    "linked",
    "linked-runtime",
];
const UNCHANGEABLE: &[&str] = &["static", "indirect", "generated", "alias"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    name: String,
    ensure: Option<Run>,
    enable: Option<bool>,
    #[serde(default)]
    refresh: Refresh,
    root: Option<String>,
}

impl Props {
    /// `web` → `web.service`; names with a suffix are units already.
    fn unit(&self) -> String {
        if self.name.contains('.') {
            self.name.clone()
        } else {
            format!("{}.service", self.name)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Observed {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    ensure: Option<Run>,
    enable: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    root: Option<String>,
}

pub fn kind() -> KindInfo {
    KindInfo::new(
        "systemd",
        "a systemd unit: active or not, enabled at boot or not",
        crate::schema(json!({
            "enable": {"type": "boolean",
                "description": "enabled (started at boot by what its [Install] section names)"},
            "root": {"type": "string",
                "description": "manage enablement inside this offline root (systemctl --root) instead of the running system"},
        })),
        "name",
    )
}

pub fn validate(properties: &Value) -> Vec<Diagnostic> {
    let p: Props = match crate::parse_props(properties) {
        Ok(p) => p,
        Err(d) => return d,
    };
    let mut out = Vec::new();
    out.extend(crate::name_problem(&p.name, "@:\\", "a unit name"));
    if let Some(problem) = crate::absolute_problem(p.root.as_deref()) {
        out.push(Diagnostic::error("/root", problem));
    }
    if p.root.is_some() && p.ensure.is_some() {
        out.push(Diagnostic::error(
            "/ensure",
            "with `root` only enablement is managed: nothing runs in an offline root",
        ));
    }
    out
}

/// `systemctl show` of the unit, as key → value.
fn show(r: &mut dyn Runner, unit: &str) -> Result<BTreeMap<String, String>, Error> {
    let args = vec![PROPERTIES.to_owned(), "--".to_owned(), unit.to_owned()];
    let mut full = vec!["show".to_owned()];
    full.extend(args);
    let out = r.run(SYSTEMCTL, &full)?;
    if !out.success() {
        let probe = r.run(SYSTEMCTL, &["is-system-running".to_owned()])?;
        if probe.stdout_text().trim() == "offline" {
            return Err(Error::Conflict(format!(
                "systemd is not the running service manager here (`systemctl is-system-running`: offline): manage `{unit}` with service.runit or service.supervisor, or give `root:` to manage an offline image"
            )));
        }
        return Err(Error::Internal(failed(SYSTEMCTL, &full, &out)));
    }
    Ok(out
        .stdout_text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn is_running(active: &str) -> bool {
    matches!(active, "active" | "activating" | "reloading")
}

/// `systemctl --root=DIR is-enabled -- UNIT`: the unit file state, `None` when the unit
/// does not exist there.
fn offline_state(r: &mut dyn Runner, root: &str, unit: &str) -> Result<Option<String>, Error> {
    let args = vec![
        format!("--root={root}"),
        "is-enabled".to_owned(),
        "--".to_owned(),
        unit.to_owned(),
    ];
    let out = r.run(SYSTEMCTL, &args)?;
    let word = out.stdout_text().trim().to_owned();
    if word.is_empty() {
        if String::from_utf8_lossy(&out.stderr).contains("No such file") {
            return Ok(None);
        }
        return Err(Error::Internal(failed(SYSTEMCTL, &args, &out)));
    }
    Ok(Some(word))
}

fn observe(r: &mut dyn Runner, p: &Props) -> Result<Option<Observed>, Error> {
    let unit = p.unit();
    if let Some(root) = &p.root {
        let Some(state) = offline_state(r, root, &unit)? else {
            return Ok(None);
        };
        if p.enable == Some(false)
            && let Some(e) = unchangeable(&unit, &state)
        {
            return Err(e);
        }
        let enable = ENABLED.contains(&state.as_str());
        return Ok(enable.then(|| Observed {
            name: p.name.clone(),
            ensure: None,
            enable,
            root: Some(root.clone()),
        }));
    }
    let s = show(r, &unit)?;
    let get = |k: &str| s.get(k).map_or("", String::as_str);
    if get("LoadState") == "not-found" {
        return Ok(None);
    }
    if p.enable == Some(false)
        && let Some(e) = unchangeable(&unit, get("UnitFileState"))
    {
        return Err(e);
    }
    let running = is_running(get("ActiveState"));
    let enable = ENABLED.contains(&get("UnitFileState"));
    if !running && !enable {
        return Ok(None);
    }
    Ok(Some(Observed {
        name: p.name.clone(),
        ensure: Some(if running { Run::Running } else { Run::Stopped }),
        enable,
        root: None,
    }))
}

pub fn read(r: &mut dyn Runner, properties: &Value) -> Result<Option<Value>, Error> {
    let p: Props = tenet_sdk::from_value(properties)?;
    observe(r, &p)?.map(|o| tenet_sdk::to_value(&o)).transpose()
}

/// `systemctl [--root=DIR] VERB -- UNIT`.
fn ctl(r: &mut dyn Runner, p: &Props, verb: &str) -> Result<(), Error> {
    let mut args: Vec<String> = p.root.iter().map(|d| format!("--root={d}")).collect();
    args.extend([verb.to_owned(), "--".to_owned(), p.unit()]);
    let out = r.run(SYSTEMCTL, &args)?;
    if out.success() {
        return Ok(());
    }
    let mut message = failed(SYSTEMCTL, &args, &out);
    if matches!(verb, "start" | "restart" | "reload") {
        let journal = vec![
            "-n".to_owned(),
            "20".to_owned(),
            "--no-pager".to_owned(),
            "-u".to_owned(),
            p.unit(),
        ];
        if let Ok(j) = r.run(JOURNALCTL, &journal) {
            message.push_str(&format!(
                "\n  its last journal lines:{}",
                last_lines(&j.stdout_text(), 20)
            ));
        }
    }
    Err(Error::Conflict(message))
}

pub fn apply(r: &mut dyn Runner, desired: &Value, refresh: bool) -> Result<Value, Error> {
    let p: Props = tenet_sdk::from_value(desired)?;
    let unit = p.unit();
    if let Some(root) = &p.root {
        let state = offline_state(r, root, &unit)?
            .ok_or_else(|| Error::NotFound(format!("no unit `{unit}` in {root}")))?;
        set_enabled(r, &p, &state)?;
    } else {
        let mut s = show(r, &unit)?;
        let reload = |s: &BTreeMap<String, String>| {
            s.get("NeedDaemonReload").is_some_and(|v| v == "yes")
                || s.get("LoadState").is_some_and(|v| v == "not-found")
        };
        if reload(&s) {
            let args = vec!["daemon-reload".to_owned()];
            let out = r.run(SYSTEMCTL, &args)?;
            if !out.success() {
                return Err(Error::Conflict(failed(SYSTEMCTL, &args, &out)));
            }
            s = show(r, &unit)?;
        }
        let get = |k: &str| s.get(k).map_or("", String::as_str);
        if get("LoadState") == "not-found" {
            return Err(Error::NotFound(format!(
                "systemd has no unit `{unit}`, even after daemon-reload"
            )));
        }
        let state = get("UnitFileState").to_owned();
        if state == "masked" && (p.enable == Some(true) || p.ensure == Some(Run::Running)) {
            return Err(Error::Conflict(format!(
                "`{unit}` is masked: unmask it first (systemctl unmask)"
            )));
        }
        set_enabled(r, &p, &state)?;
        let running = is_running(get("ActiveState"));
        match p.ensure {
            Some(Run::Running) if !running => ctl(r, &p, "start")?,
            Some(Run::Stopped) if running => ctl(r, &p, "stop")?,
            _ if refresh && running => match p.refresh {
                Refresh::Restart => ctl(r, &p, "restart")?,
                Refresh::Reload => ctl(r, &p, "reload")?,
                Refresh::None => {}
            },
            _ => {}
        }
    }
    let fresh = observe(r, &p)?.ok_or_else(|| {
        Error::Internal(format!(
            "`{unit}` is neither active nor enabled after apply"
        ))
    })?;
    tenet_sdk::to_value(&fresh)
}

/// Enable or disable the unit, whose unit file state is `state`, as `enable` asks.
fn set_enabled(r: &mut dyn Runner, p: &Props, state: &str) -> Result<(), Error> {
    let enabled = ENABLED.contains(&state);
    match p.enable {
        Some(true) if !enabled => ctl(r, p, "enable"),
        Some(false) if enabled => match unchangeable(&p.unit(), state) {
            Some(e) => Err(e),
            None => ctl(r, p, "disable"),
        },
        _ => Ok(()),
    }
}

/// A unit whose enablement is not its own to change.
fn unchangeable(unit: &str, state: &str) -> Option<Error> {
    UNCHANGEABLE.contains(&state).then(|| {
        Error::Conflict(format!(
            "`{unit}` is {state}: it has no [Install] section of its own to disable; stop what wants it, or mask it"
        ))
    })
}

pub fn delete(r: &mut dyn Runner, current: &Value) -> Result<(), Error> {
    let now: Observed = tenet_sdk::from_value(current)?;
    let p = Props {
        name: now.name,
        ensure: None,
        enable: None,
        refresh: Refresh::None,
        root: now.root,
    };
    let Some(live) = observe(r, &p)? else {
        return Ok(());
    };
    if live.ensure == Some(Run::Running) {
        ctl(r, &p, "stop")?;
    }
    if live.enable {
        ctl(r, &p, "disable")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Golden transcripts: systemd is not PID 1 on the machines these tests run on, so the
    //! exact commands and their order are checked against recorded `systemctl` answers.
    use super::*;
    use crate::transcript::{Transcript, out};

    const SHOW: &str = "/usr/bin/systemctl show --property=ActiveState,SubState,UnitFileState,LoadState,NeedDaemonReload -- web.service";

    fn state(active: &str, file: &str, reload: &str) -> tenet_sdk::exec::Output {
        out(
            0,
            &format!(
                "ActiveState={active}\nSubState=x\nUnitFileState={file}\nLoadState=loaded\nNeedDaemonReload={reload}\n"
            ),
            "",
        )
    }

    #[test]
    fn every_active_and_unit_file_state_is_read() {
        for (active, file, want) in [
            ("active", "enabled", Some(("running", true))),
            ("reloading", "disabled", Some(("running", false))),
            ("activating", "static", Some(("running", true))),
            ("inactive", "enabled", Some(("stopped", true))),
            ("failed", "enabled", Some(("stopped", true))),
            ("deactivating", "disabled", None),
            ("inactive", "masked", None),
            ("inactive", "disabled", None),
        ] {
            let mut t = Transcript::new(&[(SHOW, state(active, file, "no"))]);
            let s = read(&mut t, &json!({"name": "web"})).expect("read");
            t.done();
            assert_eq!(
                s.map(|s| (
                    s["ensure"].as_str().unwrap_or("").to_owned(),
                    s["enable"] == json!(true)
                )),
                want.map(|(e, b)| (e.to_owned(), b)),
                "{active} {file}"
            );
        }
    }

    #[test]
    fn start_and_enable_after_a_daemon_reload_when_systemd_asks_for_one() {
        let mut t = Transcript::new(&[
            (SHOW, state("inactive", "disabled", "yes")),
            ("/usr/bin/systemctl daemon-reload", out(0, "", "")),
            (SHOW, state("inactive", "disabled", "no")),
            (
                "/usr/bin/systemctl enable -- web.service",
                out(0, "", "Created symlink …\n"),
            ),
            ("/usr/bin/systemctl start -- web.service", out(0, "", "")),
            (SHOW, state("active", "enabled", "no")),
        ]);
        let s = apply(
            &mut t,
            &json!({"name": "web", "ensure": "running", "enable": true}),
            false,
        )
        .expect("apply");
        t.done();
        assert_eq!(
            s,
            json!({"name": "web", "ensure": "running", "enable": true})
        );
    }

    #[test]
    fn a_refresh_reloads_or_restarts_only_a_running_unit() {
        let mut t = Transcript::new(&[
            (SHOW, state("active", "enabled", "no")),
            ("/usr/bin/systemctl reload -- web.service", out(0, "", "")),
            (SHOW, state("active", "enabled", "no")),
        ]);
        apply(
            &mut t,
            &json!({"name": "web", "ensure": "running", "refresh": "reload"}),
            true,
        )
        .expect("refresh");
        t.done();
        let mut t = Transcript::new(&[
            (SHOW, state("inactive", "enabled", "no")),
            (SHOW, state("inactive", "enabled", "no")),
        ]);
        apply(&mut t, &json!({"name": "web", "enable": true}), true).expect("nothing to refresh");
        t.done();
    }

    #[test]
    fn a_failed_start_quotes_the_journal() {
        let mut t = Transcript::new(&[
            (SHOW, state("inactive", "enabled", "no")),
            (
                "/usr/bin/systemctl start -- web.service",
                out(
                    1,
                    "",
                    "Job for web.service failed because the control process exited with error code.\n",
                ),
            ),
            (
                "/usr/bin/journalctl -n 20 --no-pager -u web.service",
                out(0, "Dec 07 web[1]: bind: Address already in use\n", ""),
            ),
        ]);
        let err = apply(&mut t, &json!({"name": "web", "ensure": "running"}), false)
            .expect_err("failed start");
        t.done();
        let msg = err.to_string();
        assert!(
            msg.contains("Address already in use") && msg.contains("exit 1"),
            "{msg}"
        );
    }

    #[test]
    fn without_systemd_as_pid_1_the_read_names_the_other_backends() {
        let mut t = Transcript::new(&[
            (
                SHOW,
                out(
                    1,
                    "",
                    "System has not been booted with systemd as init system (PID 1). Can't operate.\n",
                ),
            ),
            (
                "/usr/bin/systemctl is-system-running",
                out(1, "offline\n", ""),
            ),
        ]);
        let err = read(&mut t, &json!({"name": "web"})).expect_err("offline");
        t.done();
        assert!(
            err.to_string()
                .contains("service.runit or service.supervisor"),
            "{err}"
        );
    }

    #[test]
    fn static_units_cannot_be_disabled_and_masked_ones_not_started() {
        let mut t = Transcript::new(&[(SHOW, state("inactive", "static", "no"))]);
        let err = read(&mut t, &json!({"name": "web", "enable": false})).expect_err("static");
        assert!(err.to_string().contains("is static"), "{err}");
        let mut t = Transcript::new(&[(SHOW, state("inactive", "masked", "no"))]);
        let err =
            apply(&mut t, &json!({"name": "web", "ensure": "running"}), false).expect_err("masked");
        assert!(err.to_string().contains("masked"), "{err}");
    }

    #[test]
    fn an_offline_root_manages_enablement_only() {
        let v = validate(&json!({"name": "web", "root": "/img", "ensure": "running"}));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path, "/ensure");
        let mut t = Transcript::new(&[
            (
                "/usr/bin/systemctl --root=/img is-enabled -- web.service",
                out(1, "disabled\n", ""),
            ),
            (
                "/usr/bin/systemctl --root=/img enable -- web.service",
                out(0, "", ""),
            ),
            (
                "/usr/bin/systemctl --root=/img is-enabled -- web.service",
                out(0, "enabled\n", ""),
            ),
        ]);
        let s = apply(
            &mut t,
            &json!({"name": "web", "root": "/img", "enable": true}),
            false,
        )
        .expect("enable");
        t.done();
        assert_eq!(s, json!({"name": "web", "enable": true, "root": "/img"}));
    }
}
