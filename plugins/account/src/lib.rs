//! Tenet's built-in `account` provider: kinds `account.group` and `account.user`
//! ([`user`]).
//!
//! Read with `getent group NAME` (a probe: granted with `mode: probe`, it runs during
//! plans); changed with `groupadd`, `groupmod`, `gpasswd -M` and `groupdel` — each with
//! its arguments in one canonical order, options first, then `--`, then the name, so a
//! grant can name exactly what may run. Properties: `name` (identity), `ensure`, `gid`,
//! `system` (at creation), `members` (the exact member list, when given),
//! `allow_gid_change` (a gid change is refused without it: files keep the old number).

pub mod user;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenet_sdk::exec::Command;
use tenet_sdk::{Diagnostic, Diff, Ensure, Error, FieldChange, KindInfo, Provider, ProviderInfo};

/// Where the programs live on Debian.
pub const GETENT: &str = "/usr/bin/getent";
pub const GROUPADD: &str = "/usr/sbin/groupadd";
pub const GROUPMOD: &str = "/usr/sbin/groupmod";
pub const GROUPDEL: &str = "/usr/sbin/groupdel";
pub const GPASSWD: &str = "/usr/bin/gpasswd";
/// Longest account name (shadow-utils' limit).
pub const MAX_NAME: usize = 32;

/// The provider.
pub struct AccountProvider;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    #[serde(default)]
    ensure: Ensure,
    gid: Option<u32>,
    #[serde(default)]
    system: bool,
    members: Option<Vec<String>>,
    #[serde(default)]
    allow_gid_change: bool,
}

/// What `getent group` reports.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct Observed {
    name: String,
    ensure: Ensure,
    gid: u32,
    members: Vec<String>,
}

/// A name `useradd`/`groupadd` accept on Debian by default (`NAME_REGEX`), and never one
/// a program could read as an option.
pub(crate) fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && name.len() <= MAX_NAME
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..].iter().enumerate().all(|(i, &c)| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == b'_'
                || c == b'-'
                || (c == b'$' && i == b.len() - 2)
        })
}

fn schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME,
                "description": "the group's name"},
            "ensure": {"enum": ["present", "absent"], "default": "present",
                "description": "whether the group exists"},
            "gid": {"type": "integer", "minimum": 0, "maximum": 2147483647u32,
                "description": "its number (chosen by groupadd when not given)"},
            "system": {"type": "boolean", "default": false,
                "description": "a system group (a gid from the system range) when created"},
            "members": {"type": "array", "items": {"type": "string"}, "uniqueItems": true,
                "description": "exactly these users are members (left alone when not given)"},
            "allow_gid_change": {"type": "boolean", "default": false,
                "description": "allow changing the gid of an existing group (files keep the old number)"},
        },
        "required": ["name"],
        "additionalProperties": false,
    })
}

impl Provider for AccountProvider {
    fn describe() -> ProviderInfo {
        ProviderInfo::new(
            "account",
            env!("CARGO_PKG_VERSION"),
            "local groups (and users), through getent and the shadow-utils programs",
        )
        .kind(KindInfo::new("group", "a local group", schema(), "name"))
        .kind(KindInfo::new(
            "user",
            "a local user account",
            user::schema(),
            "name",
        ))
    }

    fn validate(kind: &str, properties: &Value) -> Vec<Diagnostic> {
        if kind == "user" {
            return user::validate(properties);
        }
        if kind != "group" {
            return Vec::new();
        }
        let g: Group = match tenet_sdk::from_value(properties) {
            Ok(g) => g,
            Err(e) => return vec![Diagnostic::error("", e.to_string())],
        };
        let mut out = Vec::new();
        if !valid_name(&g.name) {
            out.push(Diagnostic::error(
                "/name",
                format!(
                    "`{}` is not a group name: a lowercase letter or `_`, then lowercase letters, digits, `_` or `-` (at most {MAX_NAME})",
                    g.name
                ),
            ));
        }
        for (i, m) in g.members.iter().flatten().enumerate() {
            if !valid_name(m) {
                out.push(Diagnostic::error(
                    &format!("/members/{i}"),
                    format!("`{m}` is not a user name"),
                ));
            }
        }
        out
    }

    fn read(kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        check_kind(kind)?;
        if kind == "user" {
            return user::read(properties);
        }
        let g: Group = tenet_sdk::from_value(properties)?;
        getent(&g.name)?
            .map(|o| tenet_sdk::to_value(&o))
            .transpose()
    }

    fn diff(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
        check_kind(kind)?;
        if kind == "user" {
            return user::diff(desired, current);
        }
        let g: Group = tenet_sdk::from_value(desired)?;
        let Some(now) = current.map(tenet_sdk::from_value::<Observed>).transpose()? else {
            return Ok(match g.ensure {
                Ensure::Absent => Diff::none(),
                Ensure::Present => Diff::create(desired),
            });
        };
        if g.ensure == Ensure::Absent {
            return Ok(Diff::delete(&tenet_sdk::to_value(&now)?));
        }
        let mut changes = Vec::new();
        if let Some(gid) = g.gid
            && gid != now.gid
        {
            if !g.allow_gid_change {
                return Err(Error::Conflict(format!(
                    "group `{}` has gid {}, not {gid}: changing it leaves files owned by the old number; set `allow_gid_change: true` to do it anyway",
                    g.name, now.gid
                )));
            }
            changes.push(FieldChange::new(
                "gid",
                Some(json!(now.gid)),
                Some(json!(gid)),
            ));
        }
        if let Some(members) = &g.members
            && !same_members(members, &now.members)
        {
            changes.push(FieldChange::new(
                "members",
                Some(json!(now.members)),
                Some(json!(members)),
            ));
        }
        Ok(Diff::from_changes(changes))
    }

    fn apply(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Value, Error> {
        check_kind(kind)?;
        if kind == "user" {
            return user::apply(desired, current);
        }
        let g: Group = tenet_sdk::from_value(desired)?;
        let now: Option<Observed> = current.map(tenet_sdk::from_value).transpose()?;
        match &now {
            None => {
                let mut args = Vec::new();
                if let Some(gid) = g.gid {
                    args.extend(["--gid".to_owned(), gid.to_string()]);
                }
                if g.system {
                    args.push("--system".to_owned());
                }
                run(GROUPADD, args, &g.name)?;
            }
            Some(now) => {
                if let Some(gid) = g.gid.filter(|gid| *gid != now.gid) {
                    run(GROUPMOD, vec!["--gid".into(), gid.to_string()], &g.name)?;
                }
            }
        }
        let have = now.as_ref().map_or(&[][..], |n| n.members.as_slice());
        if let Some(members) = &g.members
            && !same_members(members, have)
        {
            run(
                GPASSWD,
                vec!["--members".into(), members.join(",")],
                &g.name,
            )?;
        }
        let observed = getent(&g.name)?.ok_or_else(|| {
            Error::Internal(format!(
                "group `{}` is missing right after it was created",
                g.name
            ))
        })?;
        tenet_sdk::to_value(&observed)
    }

    fn delete(kind: &str, current: &Value) -> Result<(), Error> {
        check_kind(kind)?;
        if kind == "user" {
            return user::delete(current);
        }
        let now: Observed = tenet_sdk::from_value(current)?;
        if getent(&now.name)?.is_none() {
            return Ok(());
        }
        run(GROUPDEL, Vec::new(), &now.name)
    }
}

tenet_sdk::export_provider!(AccountProvider);

/// The same members in any order (getent lists them as they were added).
fn same_members(want: &[String], have: &[String]) -> bool {
    let (mut a, mut b) = (want.to_vec(), have.to_vec());
    a.sort();
    b.sort();
    a == b
}

fn check_kind(kind: &str) -> Result<(), Error> {
    match kind {
        "group" | "user" => Ok(()),
        other => Err(Error::unknown_kind(other)),
    }
}

/// Run `program OPTIONS -- NAME`; a failure quotes the program's stderr.
pub(crate) fn run(program: &str, mut args: Vec<String>, name: &str) -> Result<(), Error> {
    args.extend(["--".to_owned(), name.to_owned()]);
    let out = Command::new(program).args(&args).run()?;
    if out.success() {
        return Ok(());
    }
    Err(Error::Internal(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status_text(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// `getent group NAME`: exit 2 means there is no such group.
fn getent(name: &str) -> Result<Option<Observed>, Error> {
    let out = Command::new(GETENT).args(["group", name]).run()?;
    match out.status {
        Some(0) => parse_group(&out.stdout_text(), name).map(Some),
        Some(2) => Ok(None),
        _ => Err(Error::Internal(format!(
            "`getent group {name}` failed ({}): {}",
            out.status_text(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// `name:password:gid:member,member`.
fn parse_group(line: &str, name: &str) -> Result<Observed, Error> {
    let fields: Vec<&str> = line.trim_end_matches('\n').split(':').collect();
    let bad = || Error::Internal(format!("`getent group {name}` printed `{}`", line.trim()));
    let [found, _, gid, members] = fields[..] else {
        return Err(bad());
    };
    if found != name {
        return Err(bad());
    }
    Ok(Observed {
        name: name.to_owned(),
        ensure: Ensure::Present,
        gid: gid.parse().map_err(|_| bad())?,
        members: members
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_programs_could_read_as_options_are_refused() {
        for bad in ["-r", "Root", "9lives", "a b", "", "x:y", &"a".repeat(33)] {
            assert!(!valid_name(bad), "{bad}");
        }
        for good in ["www-data", "_apt", "svc1", "machine$"] {
            assert!(valid_name(good), "{good}");
        }
        let v =
            AccountProvider::validate("group", &json!({"name": "-g0", "members": ["ok", "Bad"]}));
        let paths: Vec<&str> = v.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/name", "/members/1"], "{v:?}");
    }

    #[test]
    fn getent_lines_are_parsed_and_checked() {
        let g = parse_group("web:x:1234:alice,bob\n", "web").expect("parse");
        assert_eq!(
            (g.gid, g.members.clone()),
            (1234, vec!["alice".into(), "bob".into()])
        );
        assert!(
            parse_group("web:x:1234:\n", "web")
                .expect("parse")
                .members
                .is_empty()
        );
        assert!(parse_group("other:x:1:\n", "web").is_err());
        assert!(parse_group("web:x:notanumber:\n", "web").is_err());
    }

    #[test]
    fn a_gid_change_is_refused_unless_allowed() {
        let now = json!({"name": "web", "ensure": "present", "gid": 1000, "members": []});
        let err = AccountProvider::diff("group", &json!({"name": "web", "gid": 1001}), Some(&now))
            .expect_err("refused");
        assert!(err.to_string().contains("allow_gid_change"), "{err}");
        let d = AccountProvider::diff(
            "group",
            &json!({"name": "web", "gid": 1001, "allow_gid_change": true, "members": ["a"]}),
            Some(&now),
        )
        .expect("diff");
        let fields: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(fields, ["/gid", "/members"]);
    }
}
