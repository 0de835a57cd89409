//! The built-in `exec` provider: run a command when its guards say the system needs it.
//!
//! Kind `exec.command` (Puppet's `exec`, Ansible's `command` with `creates`/`removes`):
//! - `command`: the program and its arguments, run directly through `tenet:host/exec`
//!   (never through a shell, unless the manifest grants a shell and names it here);
//! - guards, evaluated by `read` — so during plans, where the programs must be granted
//!   with `mode: probe`: `creates` (in sync when that path exists), `unless` (in sync when
//!   that command exits 0), `onlyif` (in sync when that command exits non-zero);
//! - `refresh_only: true`: never runs on its own, only when a resource that `notify`s it
//!   changed in the same run (a handler: restart after a config change).
//!
//! A command without any guard would run on every apply, which no desired state can
//! express: `validate` refuses it. After a run, the guards must say "in sync", or the
//! host's consistency check reports that the command did not converge.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tenet_sdk::exec::{Command, Output};
use tenet_sdk::{Diagnostic, Error, KindInfo, Provider, ProviderInfo, from_value};

/// Most bytes of a failing command's stderr quoted in its error.
const MAX_QUOTED_STDERR: usize = 2048;

/// The desired properties of `exec.command`; its JSON Schema is generated from this type
/// (doc comments are the descriptions), so the two cannot drift apart.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Cmd {
    /// Program (absolute path or granted name) and arguments; no shell.
    #[schemars(length(min = 1))]
    command: Vec<String>,
    /// In sync when this path exists.
    #[serde(default)]
    #[schemars(length(min = 1))]
    creates: Option<String>,
    /// In sync when this command exits 0 (runs during plans: grant it with mode: probe).
    #[serde(default)]
    #[schemars(length(min = 1))]
    unless: Option<Vec<String>>,
    /// In sync when this command exits non-zero (runs during plans: grant it with mode:
    /// probe).
    #[serde(default)]
    #[schemars(length(min = 1))]
    onlyif: Option<Vec<String>>,
    /// Working directory, inside an fs grant.
    #[serde(default)]
    cwd: Option<String>,
    /// Environment variables; each name must be granted.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Seconds.
    #[serde(default)]
    #[schemars(range(min = 1))]
    timeout: Option<u64>,
    /// Exit codes that mean success (default [0]).
    #[serde(default = "success")]
    #[schemars(length(min = 1))]
    returns: Vec<i32>,
    /// Run only when notified by a resource that changed in this run.
    #[serde(default)]
    refresh_only: bool,
}

fn success() -> Vec<i32> {
    vec![0]
}

fn command_line(argv: &[String]) -> String {
    argv.join(" ")
}

fn run(argv: &[String], c: &Cmd) -> Result<Output, Error> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::InvalidInput("an empty command".into()))?;
    let mut cmd = Command::new(program).args(args.iter().cloned());
    if let Some(dir) = &c.cwd {
        cmd = cmd.cwd(dir);
    }
    for (k, v) in &c.env {
        cmd = cmd.env(k, v);
    }
    if let Some(secs) = c.timeout {
        cmd = cmd.timeout(Duration::from_secs(secs));
    }
    let out = cmd.run()?;
    if out.timed_out {
        return Err(Error::Transient(format!(
            "`{}` was stopped at its timeout",
            command_line(argv)
        )));
    }
    Ok(out)
}

/// Whether the guards say the system is already as desired.
fn in_sync(c: &Cmd) -> Result<bool, Error> {
    if c.refresh_only {
        return Ok(true);
    }
    // Guards run in the command's working directory; while that does not exist yet
    // (created by an earlier resource of this run) nothing can be in sync.
    if let Some(dir) = &c.cwd
        && tenet_sdk::fs::stat(dir)?.is_none()
    {
        return Ok(false);
    }
    if let Some(path) = &c.creates
        && tenet_sdk::fs::stat(path)?.is_some()
    {
        return Ok(true);
    }
    if let Some(unless) = &c.unless
        && run(unless, c)?.success()
    {
        return Ok(true);
    }
    if let Some(onlyif) = &c.onlyif
        && !run(onlyif, c)?.success()
    {
        return Ok(true);
    }
    Ok(false)
}

pub struct ExecProvider;

impl Provider for ExecProvider {
    fn describe() -> ProviderInfo {
        ProviderInfo::new(
            "exec",
            env!("CARGO_PKG_VERSION"),
            "commands guarded by creates/unless/onlyif, and refresh-only handlers",
        )
        .kind(
            KindInfo::of::<Cmd>(
                "command",
                "a command run when its guards say the system needs it",
                "command",
            )
            .path_properties(&["creates", "cwd"]),
        )
    }

    fn validate(_kind: &str, properties: &Value) -> Vec<Diagnostic> {
        let guarded = ["creates", "unless", "onlyif"]
            .iter()
            .any(|k| properties.get(*k).is_some())
            || properties.get("refresh_only") == Some(&Value::Bool(true));
        if guarded {
            Vec::new()
        } else {
            vec![Diagnostic::error(
                "",
                "a command without `creates`, `unless`, `onlyif` or `refresh_only: true` would run on every apply; add a guard that says when the system is already as desired",
            )]
        }
    }

    fn read(_kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        let c: Cmd = from_value(properties)?;
        Ok(in_sync(&c)?.then(|| properties.clone()))
    }

    fn apply(_kind: &str, desired: &Value, _current: Option<&Value>) -> Result<Value, Error> {
        let c: Cmd = from_value(desired)?;
        let out = run(&c.command, &c)?;
        for line in out.stdout_text().lines().take(20) {
            tenet_sdk::log::info(line);
        }
        match out.status {
            Some(code) if c.returns.contains(&code) => Ok(desired.clone()),
            status => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: String = stderr
                    .chars()
                    .rev()
                    .take(MAX_QUOTED_STDERR)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Err(Error::Conflict(format!(
                    "`{}` exited with {}{}",
                    command_line(&c.command),
                    status.map_or("a signal".to_owned(), |s| format!("status {s}")),
                    if tail.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", tail.trim())
                    }
                )))
            }
        }
    }

    /// A command cannot be undone: removing the resource forgets it.
    fn delete(_kind: &str, _current: &Value) -> Result<(), Error> {
        Ok(())
    }
}

tenet_sdk::export_provider!(ExecProvider);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schema_is_generated_from_the_properties_type() {
        let info = ExecProvider::describe();
        let schema = &info.kinds[0].schema;
        assert_eq!(schema["required"], json!(["command"]));
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["command"]["minItems"], 1);
        assert_eq!(schema["properties"]["timeout"]["minimum"], 1);
        assert_eq!(
            schema["properties"]["creates"]["description"],
            "In sync when this path exists."
        );
        // Every field of the type is in the schema, and nothing else.
        let fields: Vec<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "command",
                "creates",
                "unless",
                "onlyif",
                "cwd",
                "env",
                "timeout",
                "returns",
                "refresh_only"
            ]
        );
    }

    fn sh(script: &str) -> Value {
        json!(["/bin/sh", "-c", script])
    }

    #[test]
    fn guards_decide_whether_the_command_runs() {
        let d = tempfile::tempdir().expect("tmp");
        let marker = d.path().join("done");
        let m = marker.to_str().expect("utf-8");
        let props = json!({"command": ["/bin/touch", m], "creates": m});
        assert_eq!(ExecProvider::read("command", &props).expect("read"), None);
        let state = ExecProvider::apply("command", &props, None).expect("apply");
        assert_eq!(state, props);
        assert!(marker.exists());
        assert_eq!(
            ExecProvider::read("command", &props).expect("read"),
            Some(props.clone())
        );

        let unless = json!({"command": ["/bin/true"], "unless": ["/bin/true"]});
        assert!(
            ExecProvider::read("command", &unless)
                .expect("read")
                .is_some()
        );
        let onlyif = json!({"command": ["/bin/true"], "onlyif": ["/bin/false"]});
        assert!(
            ExecProvider::read("command", &onlyif)
                .expect("read")
                .is_some()
        );
        let needed = json!({"command": ["/bin/true"], "onlyif": ["/bin/true"]});
        assert!(
            ExecProvider::read("command", &needed)
                .expect("read")
                .is_none()
        );
        let handler = json!({"command": ["/bin/false"], "refresh_only": true});
        assert!(
            ExecProvider::read("command", &handler)
                .expect("read")
                .is_some()
        );
    }

    #[test]
    fn failures_name_the_command_and_quote_stderr() {
        let props = json!({"command": sh("echo broken >&2; exit 3"), "onlyif": ["/bin/true"]});
        let err = ExecProvider::apply("command", &props, None).expect_err("fails");
        assert_eq!(
            err,
            Error::Conflict(
                "`/bin/sh -c echo broken >&2; exit 3` exited with status 3: broken".into()
            )
        );
        let ok = json!({"command": sh("exit 3"), "onlyif": ["/bin/true"], "returns": [0, 3]});
        assert!(ExecProvider::apply("command", &ok, None).is_ok());
    }

    #[test]
    fn unguarded_commands_are_refused() {
        let d = ExecProvider::validate("command", &json!({"command": ["/bin/true"]}));
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("would run on every apply"));
        assert!(
            ExecProvider::validate(
                "command",
                &json!({"command": ["/bin/true"], "creates": "/x"})
            )
            .is_empty()
        );
    }
}
