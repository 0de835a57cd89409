//! Tenet's built-in `cron` provider: kind `cron.job`, one job as a file under
//! `/etc/cron.d` (`dir`), which cron reads by itself — no `crontab` program, no exec
//! grant, only an fs grant on the directory.
//!
//! Properties: `name` (the file's name: letters, digits, `-` and `_` only — run-parts and
//! cron skip names with dots), `schedule` (five fields, or `@reboot`, `@hourly`, `@daily`,
//! `@weekly`, `@monthly`, `@yearly`, `@annually`, `@midnight`), `user`, `command` (one
//! line; a `%` must be written `\%`, since cron turns a bare one into a newline), `env`
//! (variables set for the job), `ensure`, `dir`. The file is written whole and atomically,
//! mode 0644 (cron ignores group- or world-writable files); `read` parses it back, so a
//! hand edit shows as the field it changed.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::path::Path;
use tenet_sdk::{Diagnostic, Diff, Ensure, Error, FieldChange, KindInfo, Provider, ProviderInfo};

/// Where jobs go unless `dir` says otherwise.
pub const DEFAULT_DIR: &str = "/etc/cron.d";
/// The mode cron requires (it skips files others can write).
pub const MODE: u32 = 0o644;
/// Largest job file read back (anything bigger is not one of ours).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// The first line of every file this provider writes.
const HEADER: &str = "# Managed by Tenet (cron.job): edits are reverted on the next apply.";

/// The provider.
pub struct CronProvider;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    name: String,
    schedule: Option<String>,
    #[serde(default = "root")]
    user: String,
    command: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    ensure: Ensure,
    dir: Option<String>,
}

fn root() -> String {
    "root".into()
}

impl Job {
    fn path(&self) -> String {
        let dir = self.dir.as_deref().unwrap_or(DEFAULT_DIR);
        format!("{}/{}", dir.trim_end_matches('/'), self.name)
    }

    /// The file's text.
    fn render(&self) -> String {
        let mut out = format!("{HEADER}\n");
        for (k, v) in &self.env {
            out.push_str(&format!("{k}={v}\n"));
        }
        out.push_str(&format!(
            "{} {} {}\n",
            self.schedule.as_deref().unwrap_or_default(),
            self.user,
            self.command.as_deref().unwrap_or_default()
        ));
        out
    }
}

/// What `read` finds: the job as parsed back from its file, and the file's mode and text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
struct Observed {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
    ensure: Ensure,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    mode: String,
    content: String,
}

const NICKNAMES: &[&str] = &[
    "@reboot",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
    "@midnight",
];
const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Why `schedule` is not one cron accepts, if it is not.
fn schedule_problem(schedule: &str) -> Option<String> {
    if schedule.starts_with('@') {
        return (!NICKNAMES.contains(&schedule)).then(|| {
            format!(
                "`{schedule}` is not a cron nickname (one of {})",
                NICKNAMES.join(", ")
            )
        });
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Some(format!(
            "`{schedule}` has {} fields; a schedule has five (minute hour day-of-month month day-of-week) or is a nickname like @daily",
            fields.len()
        ));
    }
    let specs: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day of month", 1, 31, &[]),
        ("month", 1, 12, MONTHS),
        ("day of week", 0, 7, DAYS),
    ];
    for (field, (what, lo, hi, names)) in fields.iter().zip(specs) {
        if let Err(e) = check_field(field, lo, hi, names) {
            return Some(format!("{what} `{field}`: {e}"));
        }
    }
    None
}

/// One field: `*`, or a comma list of `N`, `N-M`, each optionally `/STEP`.
fn check_field(field: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(), String> {
    let value = |t: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| t.eq_ignore_ascii_case(n)) {
            // Months count from 1, days from 0.
            return Ok(i as u32 + lo);
        }
        let v: u32 = t.parse().map_err(|_| format!("`{t}` is not a number"))?;
        if v < lo || v > hi {
            return Err(format!("{v} is outside {lo}-{hi}"));
        }
        Ok(v)
    };
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(s) = step {
            match s.parse::<u32>() {
                Ok(n) if n >= 1 && n <= hi.max(1) => {}
                _ => return Err(format!("step `{s}` is not a number from 1 to {hi}")),
            }
        }
        if range == "*" {
            continue;
        }
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return Err(format!("range {a}-{b} runs backwards"));
                }
            }
            None => {
                value(range)?;
            }
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn one_line(text: &str) -> bool {
    !text.contains(['\n', '\r'])
}

fn schema() -> Value {
    let observed = |about: &str| json!({"readOnly": true, "description": about});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
                "description": "the job file's name under `dir` (no dots: cron skips such files)"},
            "schedule": {"type": "string", "minLength": 1,
                "description": "five fields (minute hour day-of-month month day-of-week) or @daily, @hourly, …"},
            "user": {"type": "string", "minLength": 1, "default": "root",
                "description": "the account the job runs as"},
            "command": {"type": "string", "minLength": 1, "pattern": "^[^\\n\\r]*$",
                "description": "the command line, run by cron's shell; write `%` as `\\%`"},
            "env": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[^\\n\\r]*$"},
                "description": "variables set for the job (SHELL, PATH, MAILTO, …)"},
            "ensure": {"enum": ["present", "absent"], "default": "present",
                "description": "whether the job exists"},
            "dir": {"type": "string", "minLength": 1, "default": DEFAULT_DIR,
                "description": "the directory cron reads jobs from"},
            "mode": observed("the file's permission bits, as observed"),
            "content": observed("the file's text, as observed"),
        },
        "required": ["name"],
        "additionalProperties": false,
    })
}

impl Provider for CronProvider {
    fn describe() -> ProviderInfo {
        ProviderInfo::new(
            "cron",
            env!("CARGO_PKG_VERSION"),
            "cron jobs as files under /etc/cron.d",
        )
        .kind(
            KindInfo::new(
                "job",
                "one cron job in its own file under /etc/cron.d",
                schema(),
                "name",
            )
            .path_properties(&["dir"]),
        )
    }

    fn validate(kind: &str, properties: &Value) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        if kind != "job" {
            return out;
        }
        let job: Job = match tenet_sdk::from_value(properties) {
            Ok(j) => j,
            Err(e) => return vec![Diagnostic::error("", e.to_string())],
        };
        if !valid_name(&job.name) {
            out.push(Diagnostic::error(
                "/name",
                format!(
                    "`{}` is not a job name: letters, digits, `-` and `_` only (cron skips files whose names have dots)",
                    job.name
                ),
            ));
        }
        if job.ensure == Ensure::Present {
            match &job.schedule {
                None => out.push(Diagnostic::error("/schedule", "a job needs a `schedule`")),
                Some(s) => {
                    if let Some(p) = schedule_problem(s) {
                        out.push(Diagnostic::error("/schedule", p));
                    }
                }
            }
            match &job.command {
                None => out.push(Diagnostic::error("/command", "a job needs a `command`")),
                Some(c) if !one_line(c) => {
                    out.push(Diagnostic::error("/command", "the command must be one line"))
                }
                Some(c) if has_bare_percent(c) => out.push(Diagnostic::error(
                    "/command",
                    "cron turns a bare `%` into a newline (and feeds the rest to the command's stdin): write it `\\%`",
                )),
                Some(_) => {}
            }
        }
        if job.user.is_empty() || job.user.contains(char::is_whitespace) {
            out.push(Diagnostic::error(
                "/user",
                format!("`{}` is not an account name", job.user),
            ));
        }
        for (k, v) in &job.env {
            if !valid_env_name(k) {
                out.push(Diagnostic::error(
                    &format!("/env/{k}"),
                    format!("`{k}` is not a variable name"),
                ));
            } else if !one_line(v) {
                out.push(Diagnostic::error(
                    &format!("/env/{k}"),
                    "the value must be one line",
                ));
            }
        }
        out
    }

    fn read(kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        check_kind(kind)?;
        let job: Job = tenet_sdk::from_value(properties)?;
        observe(&job)?.map(|o| tenet_sdk::to_value(&o)).transpose()
    }

    fn diff(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
        check_kind(kind)?;
        let job: Job = tenet_sdk::from_value(desired)?;
        let current: Option<Observed> = current.map(tenet_sdk::from_value).transpose()?;
        let Some(now) = current else {
            return Ok(match job.ensure {
                Ensure::Absent => Diff::none(),
                Ensure::Present => Diff::create(desired),
            });
        };
        if job.ensure == Ensure::Absent {
            return Ok(Diff::delete(&tenet_sdk::to_value(&now)?));
        }
        let mut changes = Vec::new();
        let mut field = |name: &str, before: Option<Value>, after: Value| {
            if before.as_ref() != Some(&after) {
                changes.push(FieldChange::new(name, before, Some(after)));
            }
        };
        field(
            "schedule",
            now.schedule.clone().map(Value::String),
            json!(job.schedule),
        );
        field("user", now.user.clone().map(Value::String), json!(job.user));
        field(
            "command",
            now.command.clone().map(Value::String),
            json!(job.command),
        );
        field("env", Some(json!(now.env)), json!(job.env));
        field("mode", Some(json!(now.mode)), json!(format_mode(MODE)));
        // Anything else in the file (a second job line, a comment) is not ours.
        if changes.is_empty() && now.content != job.render() {
            changes.push(FieldChange::new(
                "content",
                Some(json!(now.content)),
                Some(json!(job.render())),
            ));
        }
        Ok(Diff::from_changes(changes))
    }

    fn apply(kind: &str, desired: &Value, _current: Option<&Value>) -> Result<Value, Error> {
        check_kind(kind)?;
        let job: Job = tenet_sdk::from_value(desired)?;
        write_atomically(&job.path(), &job.render())?;
        let observed = observe(&job)?.ok_or_else(|| {
            Error::Internal(format!(
                "`{}` is missing right after it was written",
                job.path()
            ))
        })?;
        tenet_sdk::to_value(&observed)
    }

    fn delete(kind: &str, current: &Value) -> Result<(), Error> {
        check_kind(kind)?;
        let now: Observed = tenet_sdk::from_value(current)?;
        let job = Job {
            name: now.name,
            schedule: None,
            user: root(),
            command: None,
            env: BTreeMap::new(),
            ensure: Ensure::Absent,
            dir: now.dir,
        };
        let path = job.path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path, &e)),
        }
    }
}

tenet_sdk::export_provider!(CronProvider);

fn check_kind(kind: &str) -> Result<(), Error> {
    match kind {
        "job" => Ok(()),
        other => Err(Error::unknown_kind(other)),
    }
}

fn has_bare_percent(command: &str) -> bool {
    let b = command.as_bytes();
    (0..b.len()).any(|i| b[i] == b'%' && (i == 0 || b[i - 1] != b'\\'))
}

fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

fn io_error(path: &str, e: &std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::NotFound => Error::NotFound(format!("`{path}`: {e}")),
        ErrorKind::PermissionDenied => Error::CapabilityDenied(format!("`{path}`: {e}")),
        _ => Error::Internal(format!("`{path}`: {e}")),
    }
}

/// The job's file parsed back: our header, `KEY=VALUE` lines, one job line.
fn observe(job: &Job) -> Result<Option<Observed>, Error> {
    let path = job.path();
    let Some(stat) = tenet_sdk::fs::stat(&path)? else {
        return Ok(None);
    };
    if stat.kind != tenet_sdk::fs::FileKind::File {
        return Err(Error::Conflict(format!(
            "`{path}` is a {}, not a job file",
            stat.kind.name()
        )));
    }
    if stat.size > MAX_FILE_BYTES {
        return Err(Error::Conflict(format!(
            "`{path}` is larger than {MAX_FILE_BYTES} bytes: not a job file Tenet wrote"
        )));
    }
    let content = std::fs::read_to_string(&path).map_err(|e| io_error(&path, &e))?;
    let mut o = Observed {
        name: job.name.clone(),
        dir: job.dir.clone(),
        ensure: Ensure::Present,
        mode: format_mode(stat.mode),
        content: content.clone(),
        ..Observed::default()
    };
    let mut jobs = Vec::new();
    for line in content.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match t.split_once('=') {
            Some((k, v)) if valid_env_name(k.trim()) && !k.contains(char::is_whitespace) => {
                o.env.insert(k.to_owned(), v.to_owned());
            }
            _ => jobs.push(t),
        }
    }
    if let [line] = jobs[..] {
        let words: Vec<&str> = line.split_whitespace().collect();
        let n = if line.starts_with('@') { 1 } else { 5 };
        if words.len() > n + 1 {
            o.schedule = Some(words[..n].join(" "));
            o.user = Some(words[n].to_owned());
            // The command as written: everything after the user field.
            let mut rest = line;
            for w in &words[..=n] {
                rest = rest[rest.find(w).unwrap_or(0) + w.len()..].trim_start();
            }
            o.command = Some(rest.to_owned());
        }
    }
    Ok(Some(o))
}

/// Write `text` to `path` through a temporary beside it, mode 0644, synced, renamed over.
fn write_atomically(path: &str, text: &str) -> Result<(), Error> {
    let p = Path::new(path);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::InvalidInput(format!("`{path}` names no file")))?;
    // A dot-name: cron never reads it, even if a killed run leaves it behind.
    let tmp = p.with_file_name(format!(".{name}.tenet.tmp"));
    let tmp_str = tmp.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_error(path, &e))?;
        tenet_sdk::fs::chmod(&tmp_str, MODE)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io_error(path, &e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, &e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenet_sdk::Action;

    fn job(dir: &tempfile::TempDir, extra: Value) -> Value {
        let mut v = json!({"name": "backup", "schedule": "30 2 * * 1-5", "user": "backup",
            "command": "/usr/local/bin/backup --quiet", "env": {"MAILTO": ""},
            "dir": dir.path().to_string_lossy()});
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        v
    }

    fn converge(desired: &Value) -> Diff {
        let current = CronProvider::read("job", desired).expect("read");
        let diff = CronProvider::diff("job", desired, current.as_ref()).expect("diff");
        match diff.action {
            Action::None => {}
            Action::Delete => {
                CronProvider::delete("job", current.as_ref().expect("current")).expect("delete")
            }
            _ => {
                CronProvider::apply("job", desired, current.as_ref()).expect("apply");
            }
        }
        diff
    }

    #[test]
    fn a_job_is_written_parsed_back_and_converges() {
        let dir = tempfile::tempdir().expect("tmp");
        let want = job(&dir, json!({}));
        assert_eq!(converge(&want).action, Action::Create);
        let path = dir.path().join("backup");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{HEADER}\nMAILTO=\n30 2 * * 1-5 backup /usr/local/bin/backup --quiet\n")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        assert_eq!(converge(&want).action, Action::None);

        // A hand edit of the schedule shows as that field.
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, text.replace("30 2", "0 3")).expect("edit");
        let diff = converge(&want);
        assert_eq!(diff.action, Action::Update);
        assert_eq!(diff.changes.len(), 1, "{:?}", diff.changes);
        assert_eq!(diff.changes[0].path, "/schedule");
        assert_eq!(diff.changes[0].before, Some(json!("0 3 * * 1-5")));
        assert_eq!(converge(&want).action, Action::None);

        let gone = job(&dir, json!({"ensure": "absent"}));
        assert_eq!(converge(&gone).action, Action::Delete);
        assert!(!path.exists());
        assert!(
            std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
            "no temporaries left"
        );
    }

    #[test]
    fn bad_schedules_names_commands_and_variables_are_refused() {
        let problems = |v: Value| -> Vec<(String, String)> {
            CronProvider::validate("job", &v)
                .into_iter()
                .map(|d| (d.path, d.message))
                .collect()
        };
        for (schedule, what) in [
            ("61 * * * *", "61 is outside 0-59"),
            ("* * * *", "has 4 fields"),
            ("* 24 * * *", "24 is outside 0-23"),
            ("* * 0 * *", "0 is outside 1-31"),
            ("* * * 13 *", "13 is outside 1-12"),
            ("*/0 * * * *", "step `0`"),
            ("5-1 * * * *", "runs backwards"),
            ("@sometimes", "not a cron nickname"),
        ] {
            let p = problems(json!({"name": "a", "schedule": schedule, "command": "true"}));
            assert!(
                p.iter().any(|(f, m)| f == "/schedule" && m.contains(what)),
                "{schedule}: {p:?}"
            );
        }
        for ok in ["@daily", "*/15 9-17 * jan-mar mon-fri", "0 0 1,15 * 7"] {
            let p = problems(json!({"name": "a", "schedule": ok, "command": "true"}));
            assert!(p.is_empty(), "{ok}: {p:?}");
        }
        let p = problems(json!({"name": "db.backup", "schedule": "@daily", "command": "date +%F"}));
        assert!(p.iter().any(|(f, _)| f == "/name"), "{p:?}");
        assert!(
            p.iter().any(|(f, m)| f == "/command" && m.contains("\\%")),
            "{p:?}"
        );
        let p = problems(
            json!({"name": "a", "schedule": "@daily", "command": "true", "env": {"1X": "y"}}),
        );
        assert!(p.iter().any(|(f, _)| f == "/env/1X"), "{p:?}");
    }
}
