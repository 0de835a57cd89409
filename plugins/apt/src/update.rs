//! `apt.update`: refresh apt's package lists (`apt-get update`) when the last refresh is
//! older than `max_age` (default one day), or only when notified (`refresh_only: true`,
//! e.g. by the file resource that adds a source). A refresh is recorded in a stamp file
//! (`/var/lib/apt/periodic/update-success-stamp`, the one Debian's daily apt job and
//! Ansible's `cache_valid_time` read), whose modification time is the state: the lists'
//! own timestamps say when a source last changed, not when it was last asked.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};
use tenet_sdk::exec::Command;
use tenet_sdk::{Diagnostic, Diff, Error, FieldChange};

/// Where the refresh stamp lives (granted `rw` to the provider).
pub const STAMP_DIR: &str = "/var/lib/apt/periodic";
pub const STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";
const DEFAULT_MAX_AGE: &str = "1d";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    name: String,
    max_age: Option<String>,
    #[serde(default)]
    refresh_only: bool,
    stamp: Option<String>,
    source_list: Option<String>,
    /// Read only: state.
    #[allow(dead_code)]
    updated_at: Option<String>,
}

impl Update {
    fn stamp(&self) -> &str {
        self.stamp.as_deref().unwrap_or(STAMP)
    }

    fn max_age(&self) -> Result<Duration, String> {
        let text = self.max_age.as_deref().unwrap_or(DEFAULT_MAX_AGE);
        humantime::parse_duration(text)
            .map_err(|e| format!("`{text}` is not a duration (e.g. 6h, 1d): {e}"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Observed {
    name: String,
    /// When the lists were last refreshed (RFC 3339, UTC).
    updated_at: String,
}

pub fn schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 128,
                "description": "a name for this refresh (any label)"},
            "max_age": {"type": "string", "default": DEFAULT_MAX_AGE,
                "description": "refresh when the last refresh is older than this (e.g. 6h, 1d)"},
            "refresh_only": {"type": "boolean", "default": false,
                "description": "refresh only when a resource that notifies it changes"},
            "stamp": {"type": "string", "default": STAMP,
                "description": "the file whose modification time records the last refresh"},
            "source_list": {"type": "string",
                "description": "refresh only the sources of this .list file (e.g. one just added) instead of all of them; other lists are kept"},
            "updated_at": {"type": "string", "readOnly": true,
                "description": "(state only) when the lists were last refreshed"},
        },
        "required": ["name"],
        "additionalProperties": false,
    })
}

pub fn validate(properties: &Value) -> Vec<Diagnostic> {
    let u: Update = match tenet_sdk::from_value(properties) {
        Ok(u) => u,
        Err(e) => return vec![Diagnostic::error("", e.to_string())],
    };
    let mut out = Vec::new();
    if let Err(e) = u.max_age() {
        out.push(Diagnostic::error("/max_age", e));
    }
    if !u.stamp().starts_with('/') {
        out.push(Diagnostic::error(
            "/stamp",
            "the stamp must be an absolute path",
        ));
    }
    if let Some(list) = &u.source_list
        && (!list.starts_with('/') || list.contains(['\n', '\0']))
    {
        out.push(Diagnostic::error(
            "/source_list",
            "the source list must be an absolute path",
        ));
    }
    if u.updated_at.is_some() {
        out.push(Diagnostic::error(
            "/updated_at",
            "`updated_at` is read only: the stamp file says it",
        ));
    }
    out
}

/// The stamp's modification time, or nothing when the lists were never refreshed here.
pub fn read(properties: &Value) -> Result<Option<Value>, Error> {
    let u: Update = tenet_sdk::from_value(properties)?;
    let modified = match std::fs::metadata(u.stamp()) {
        Ok(m) => m
            .modified()
            .map_err(|e| Error::Internal(format!("{}: {e}", u.stamp())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::CapabilityDenied(format!("{}: {e}", u.stamp()))),
    };
    tenet_sdk::to_value(&Observed {
        name: u.name,
        updated_at: humantime::format_rfc3339_seconds(modified).to_string(),
    })
    .map(Some)
}

pub fn diff(desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
    let u: Update = tenet_sdk::from_value(desired)?;
    if u.refresh_only {
        return Ok(Diff::none());
    }
    let max_age = u.max_age().map_err(Error::InvalidInput)?;
    let Some(now) = current.map(tenet_sdk::from_value::<Observed>).transpose()? else {
        return Ok(Diff::create(&json!({"name": u.name, "updated_at": "now"})));
    };
    let at = humantime::parse_rfc3339(&now.updated_at)
        .map_err(|e| Error::Internal(format!("bad state `{}`: {e}", now.updated_at)))?;
    let age = SystemTime::now().duration_since(at).unwrap_or_default();
    if age <= max_age {
        return Ok(Diff::none());
    }
    Ok(Diff::from_changes(vec![FieldChange::new(
        "updated_at",
        Some(json!(format!(
            "{} ({} ago)",
            now.updated_at,
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        ))),
        Some(json!("now")),
    )]))
}

/// `apt-get update` arguments; with a source list, only its sources are fetched and the
/// other lists are kept (`List-Cleanup=0`: without it apt deletes every list it did not
/// fetch).
fn update_args(source_list: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = vec!["-q".into(), "-o".into(), super::LOCK_TIMEOUT.into()];
    if let Some(list) = source_list {
        a.extend([
            "-o".into(),
            format!("Dir::Etc::sourcelist={list}"),
            "-o".into(),
            "Dir::Etc::sourceparts=-".into(),
            "-o".into(),
            "APT::Get::List-Cleanup=0".into(),
        ]);
    }
    a.push("update".into());
    a
}

/// `apt-get update`, then the stamp.
pub fn apply(desired: &Value) -> Result<Value, Error> {
    let u: Update = tenet_sdk::from_value(desired)?;
    let out = Command::new(super::APT_GET)
        .args(update_args(u.source_list.as_deref()))
        .run()?;
    let text = format!(
        "{}\n{}",
        out.stdout_text(),
        String::from_utf8_lossy(&out.stderr)
    );
    // apt exits 0 when some index could not be fetched; its `E:`/`W:` lines say so.
    let failed = !out.success()
        || text
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W: Failed to fetch"));
    if failed {
        return Err(super::apt_error(&u.name, "apt-get update", &out));
    }
    std::fs::write(u.stamp(), b"")
        .map_err(|e| Error::CapabilityDenied(format!("{}: {e}", u.stamp())))?;
    read(desired)?.ok_or_else(|| Error::Internal(format!("{} is missing after update", u.stamp())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_stamp_is_kept_and_a_stale_one_refreshed() {
        let now = SystemTime::now();
        let at = |ago: u64| {
            json!({"name": "lists", "updated_at":
                humantime::format_rfc3339_seconds(now - Duration::from_secs(ago)).to_string()})
        };
        let want = json!({"name": "lists", "max_age": "1h"});
        assert_eq!(diff(&want, Some(&at(60))).expect("diff"), Diff::none());
        let d = diff(&want, Some(&at(7200))).expect("diff");
        assert_eq!(d.changes[0].path, "/updated_at");
        assert_eq!(
            diff(&want, None).expect("diff").action,
            tenet_sdk::Action::Create
        );
        // Only when notified.
        let notified = json!({"name": "lists", "refresh_only": true});
        assert_eq!(diff(&notified, None).expect("diff"), Diff::none());
    }

    #[test]
    fn a_source_list_restricts_the_refresh_and_keeps_other_lists() {
        assert_eq!(
            update_args(Some("/etc/apt/sources.list.d/x.list")).join(" "),
            "-q -o DPkg::Lock::Timeout=300 -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/x.list -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 update"
        );
        let v = validate(&json!({"name": "l", "max_age": "soon", "source_list": "rel.list"}));
        let paths: Vec<&str> = v.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/max_age", "/source_list"]);
    }
}
