//! Tenet's built-in `service` provider: one kind per service manager, because the
//! manager is part of what a service is and of what the provider must be granted —
//! `service.runit` ([`runit`]), `service.supervisor` ([`supervisor`]) and
//! `service.systemd` ([`systemd`]).
//!
//! Every kind has `name` (identity), `ensure: running | stopped`, and `refresh: restart
//! (default) | reload | none`: what a `notify` from a changed resource does. `runit` and
//! `systemd` add `enable` (started at boot). Each backend trusts only the manager that
//! runs the service (`sv status`, `supervisorctl status`, `systemctl show`), never an
//! init script's `status`, which is known to lie; a failed start reports the service's
//! last log lines.
//!
//! A service that is neither running nor enabled reads as absent (so removing it from a
//! manifest stops and disables it, and the conformance kit's create/delete cycle maps to
//! start/stop). A service whose definition does not exist yet (a unit file, run script or
//! program section another resource of the same run writes) also reads as absent: the
//! plan shows it started, and apply fails clearly if it is still missing then.
//!
//! Programs run through a [`Runner`], so the systemd backend — which cannot run here,
//! systemd not being PID 1 — is tested against golden command transcripts.

pub mod runit;
pub mod supervisor;
pub mod systemd;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::Duration;
use tenet_sdk::exec::{Command, Output};
use tenet_sdk::{Capabilities, Diagnostic, Diff, Error, Provider, ProviderInfo, Settings};

/// Runs the managers' programs: the host's `exec` ([`Host`]) or, in tests, a recorded
/// transcript.
pub trait Runner {
    fn run(&mut self, program: &str, args: &[String]) -> Result<Output, Error>;
    fn sleep(&mut self, d: Duration);
}

/// The real runner: `tenet:host/exec`, checked against the provider's grants.
pub struct Host;

impl Runner for Host {
    fn run(&mut self, program: &str, args: &[String]) -> Result<Output, Error> {
        Ok(Command::new(program).args(args.iter().cloned()).run()?)
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// `ensure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Run {
    Running,
    Stopped,
}

/// What a `notify` does to a service that is running and otherwise unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Refresh {
    #[default]
    Restart,
    Reload,
    None,
}

/// The properties every kind shares, as JSON Schema.
fn common_schema() -> Map<String, Value> {
    let Value::Object(m) = json!({
        "name": {"type": "string", "minLength": 1, "maxLength": 128,
            "description": "the service's name as its manager knows it"},
        "ensure": {"enum": ["running", "stopped"],
            "description": "whether it runs (left alone when not given)"},
        "refresh": {"enum": ["restart", "reload", "none"], "default": "restart",
            "description": "what a notify from a changed resource does: restart, reload (SIGHUP / systemctl reload) or nothing"},
    }) else {
        return Map::new();
    };
    m
}

/// A kind's schema: the shared properties plus `extra`.
fn schema(extra: Value) -> Value {
    let mut props = common_schema();
    if let Value::Object(e) = extra {
        props.extend(e);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": props,
        "required": ["name"],
        "additionalProperties": false,
    })
}

/// The properties, or the diagnostic saying why they do not decode.
pub fn parse_props<T: serde::de::DeserializeOwned>(
    properties: &Value,
) -> Result<T, Vec<Diagnostic>> {
    tenet_sdk::from_value(properties).map_err(|e| vec![Diagnostic::error("", e.to_string())])
}

/// A diagnostic at `/name` when `name` is not `what` (letters, digits, `_ . -` and the
/// `extra` characters, starting with a letter or digit).
pub fn name_problem(name: &str, extra: &str, what: &str) -> Option<Diagnostic> {
    (!valid_name(name, extra.as_bytes())).then(|| {
        let also: String = extra.chars().map(|c| format!(" {c}")).collect();
        Diagnostic::error(
            "/name",
            format!(
                "`{name}` is not {what}: letters, digits, `_ . -{also}`, starting with a letter or digit"
            ),
        )
    })
}

/// A service name a manager accepts and no program reads as an option or a path.
pub fn valid_name(name: &str, extra: &[u8]) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c) || extra.contains(c))
}

/// Why `path` (given to a manager's program, which the sandbox does not see into) is not
/// a plain absolute path, if it is not.
pub fn absolute_problem(path: Option<&str>) -> Option<String> {
    let path = path?;
    let plain = path.starts_with('/')
        && !path.split('/').any(|c| c == "..")
        && !path.chars().any(char::is_control);
    (!plain).then(|| {
        format!("`{path}` must be an absolute path without `..` (the manager's program reads it)")
    })
}

/// The last `n` non-empty lines of `text`, indented for an error message.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("\n    {l}"))
        .collect()
}

/// `program args` failed: its status and output.
pub fn failed(program: &str, args: &[String], out: &Output) -> String {
    format!(
        "`{program} {}` failed ({}):{}",
        args.join(" "),
        out.status_text(),
        last_lines(
            &format!(
                "{}\n{}",
                out.stdout_text(),
                String::from_utf8_lossy(&out.stderr)
            ),
            8
        )
    )
}

/// The provider.
pub struct ServiceProvider;

impl Provider for ServiceProvider {
    fn describe() -> ProviderInfo {
        ProviderInfo::new(
            "service",
            env!("CARGO_PKG_VERSION"),
            "services under runit, supervisor or systemd: running or stopped, enabled at boot, refreshed when notified",
        )
        .kind(runit::kind())
        .kind(supervisor::kind())
        .kind(systemd::kind())
    }

    fn capabilities() -> Capabilities {
        Capabilities::new()
            .program(
                runit::SV,
                true,
                "runit: reads (status) and controls services",
            )
            .directory(runit::SV_DIR, false, "runit: the services' definitions")
            .directory(
                runit::SERVICE_DIR,
                true,
                "runit: enabled services are linked here",
            )
            .program(
                supervisor::SUPERVISORCTL,
                true,
                "supervisor: reads (status) and controls programs",
            )
            .program(
                systemd::SYSTEMCTL,
                true,
                "systemd: reads (show, is-enabled) and controls units",
            )
            .program(
                systemd::JOURNALCTL,
                false,
                "systemd: the last log lines of a unit that failed to start",
            )
    }

    fn settings() -> Settings {
        Settings::new()
            .fixed_env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .fixed_env("LC_ALL", "C.UTF-8")
            .fixed_env("SYSTEMD_COLORS", "0")
    }

    fn validate(kind: &str, properties: &Value) -> Vec<Diagnostic> {
        match kind {
            "runit" => runit::validate(properties),
            "supervisor" => supervisor::validate(properties),
            "systemd" => systemd::validate(properties),
            _ => Vec::new(),
        }
    }

    fn read(kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        let r = &mut Host;
        match kind {
            "runit" => runit::read(r, properties),
            "supervisor" => supervisor::read(r, properties),
            "systemd" => systemd::read(r, properties),
            other => Err(Error::unknown_kind(other)),
        }
    }

    fn diff(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
        match kind {
            "runit" | "systemd" => Ok(diff(desired, current, true)),
            "supervisor" => Ok(diff(desired, current, false)),
            other => Err(Error::unknown_kind(other)),
        }
    }

    fn apply(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Value, Error> {
        let r = &mut Host;
        // Called with nothing to change: a refresh (a resource it listens to changed).
        let refresh = diff(desired, current, kind != "supervisor")
            .changes
            .is_empty();
        match kind {
            "runit" => runit::apply(r, desired, refresh),
            "supervisor" => supervisor::apply(r, desired, refresh),
            "systemd" => systemd::apply(r, desired, refresh),
            other => Err(Error::unknown_kind(other)),
        }
    }

    fn delete(kind: &str, current: &Value) -> Result<(), Error> {
        let r = &mut Host;
        match kind {
            "runit" => runit::delete(r, current),
            "supervisor" => supervisor::delete(r, current),
            "systemd" => systemd::delete(r, current),
            other => Err(Error::unknown_kind(other)),
        }
    }
}

tenet_sdk::export_provider!(ServiceProvider);

/// The fields of `desired` a state reports (`ensure`, `enable`) that differ from
/// `current`; a field not given is left alone. Absent means stopped and disabled: a
/// service that should be off (stopped, and disabled where the manager has `enable`)
/// and is not is deleted — stopped and disabled — so nothing of it is left to read.
pub fn diff(desired: &Value, current: Option<&Value>, has_enable: bool) -> Diff {
    // Nothing runs in an offline root (`service.systemd` with `root`): there, off is
    // disabled.
    let stopped = desired.get("ensure") == Some(&json!("stopped")) || desired.get("root").is_some();
    let off = stopped && (!has_enable || desired.get("enable") == Some(&json!(false)));
    if off {
        return current.map_or_else(Diff::none, Diff::delete);
    }
    let off = json!({"ensure": "stopped", "enable": false});
    let now = current.unwrap_or(&off);
    let mut changes = Vec::new();
    for field in ["ensure", "enable"] {
        if let Some(want) = desired.get(field)
            && now.get(field).is_some_and(|have| have != want)
        {
            changes.push(tenet_sdk::FieldChange::new(
                field,
                current.and_then(|c| c.get(field)).cloned(),
                Some(want.clone()),
            ));
        }
    }
    if changes.is_empty() {
        return Diff::none();
    }
    Diff {
        action: if current.is_none() {
            tenet_sdk::Action::Create
        } else {
            tenet_sdk::Action::Update
        },
        changes,
    }
}

#[cfg(test)]
pub mod transcript {
    //! A [`Runner`] that replays a recorded transcript: each call must be the next
    //! expected program and arguments, and gets the recorded output.
    use super::*;

    pub struct Transcript {
        pub steps: std::collections::VecDeque<(String, Output)>,
        pub slept: Duration,
    }

    pub fn out(status: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: Some(status),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            truncated: false,
            timed_out: false,
        }
    }

    impl Transcript {
        pub fn new(steps: &[(&str, Output)]) -> Transcript {
            Transcript {
                steps: steps
                    .iter()
                    .map(|(c, o)| ((*c).to_owned(), o.clone()))
                    .collect(),
                slept: Duration::ZERO,
            }
        }

        pub fn done(&self) {
            assert!(
                self.steps.is_empty(),
                "commands expected but not run: {:?}",
                self.steps.iter().map(|(c, _)| c).collect::<Vec<_>>()
            );
        }
    }

    impl Runner for Transcript {
        fn run(&mut self, program: &str, args: &[String]) -> Result<Output, Error> {
            let line = format!("{program} {}", args.join(" "));
            let (want, out) = self
                .steps
                .pop_front()
                .unwrap_or_else(|| panic!("unexpected command: {line}"));
            assert_eq!(line, want, "command out of order");
            Ok(out)
        }

        fn sleep(&mut self, d: Duration) {
            self.slept += d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_compares_only_what_is_given_and_absent_is_off() {
        let d = diff(&json!({"name": "web", "ensure": "running"}), None, true);
        assert_eq!(d.action, tenet_sdk::Action::Create);
        assert_eq!(d.changes.len(), 1);
        let now = json!({"name": "web", "ensure": "running", "enable": true});
        assert_eq!(
            diff(&json!({"name": "web"}), Some(&now), true),
            Diff::none()
        );
        let d = diff(&json!({"name": "web", "enable": false}), Some(&now), true);
        assert_eq!(d.changes[0].path, "/enable");
        assert_eq!(
            diff(&json!({"name": "web", "ensure": "stopped"}), None, true),
            Diff::none()
        );
        // Off where the manager has no `enable` (supervisor): stopped is gone.
        let d = diff(
            &json!({"name": "web", "ensure": "stopped"}),
            Some(&now),
            false,
        );
        assert_eq!(d.action, tenet_sdk::Action::Delete);
        // Stopped but still enabled is an update.
        let d = diff(
            &json!({"name": "web", "ensure": "stopped"}),
            Some(&now),
            true,
        );
        assert_eq!(d.action, tenet_sdk::Action::Update);
    }

    #[test]
    fn names_that_are_options_or_paths_are_refused() {
        for bad in ["-f", "../x", "a/b", "", "a b", ".hidden"] {
            assert!(!valid_name(bad, b""), "{bad}");
        }
        assert!(valid_name("web-1.api_x", b""));
        assert!(valid_name("getty@tty1", b"@"));
    }
}
