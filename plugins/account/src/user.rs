//! `account.user`: read with `getent passwd` and `id -Gn` (and `getent shadow` when a
//! password hash is managed) — all probes; changed with one `useradd` or `usermod` call
//! whose options come in a fixed order, `chpasswd --encrypted` (the hash on stdin, never
//! in an argument) and `userdel`.
//!
//! Properties: `name` (identity), `ensure`, `uid`, `group` (the primary group), `groups`
//! with `groups_mode` (`append`, the default, adds; `exact` also removes), `home` with
//! `manage_home` (create it, or move it when it changes), `shell`, `comment`, `system`,
//! `password_hash` (sensitive), `allow_uid_change`, `remove_home` (with `absent`).

use super::{Ensure, run, valid_name};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenet_sdk::exec::Command;
use tenet_sdk::{Diagnostic, Diff, Error, FieldChange};

pub const USERADD: &str = "/usr/sbin/useradd";
pub const USERMOD: &str = "/usr/sbin/usermod";
pub const USERDEL: &str = "/usr/sbin/userdel";
pub const CHPASSWD: &str = "/usr/sbin/chpasswd";
pub const ID: &str = "/usr/bin/id";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum GroupsMode {
    #[default]
    Append,
    Exact,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    name: String,
    #[serde(default)]
    ensure: Ensure,
    uid: Option<u32>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    #[serde(default)]
    groups_mode: GroupsMode,
    home: Option<String>,
    #[serde(default = "yes")]
    manage_home: bool,
    shell: Option<String>,
    comment: Option<String>,
    #[serde(default)]
    system: bool,
    password_hash: Option<String>,
    #[serde(default)]
    allow_uid_change: bool,
    #[serde(default)]
    remove_home: bool,
}

fn yes() -> bool {
    true
}

/// What `getent passwd` (and `id`, `getent shadow`) report.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct Observed {
    name: String,
    ensure: Ensure,
    uid: u32,
    group: String,
    groups: Vec<String>,
    home: String,
    shell: String,
    comment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_hash: Option<String>,
    /// Carried from the desired properties to the deletion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    remove_home: bool,
}

pub(crate) fn schema() -> Value {
    let text =
        |about: &str| json!({"type": "string", "pattern": "^[^:\\n\\r]*$", "description": about});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": super::MAX_NAME,
                "description": "the account's name"},
            "ensure": {"enum": ["present", "absent"], "default": "present",
                "description": "whether the account exists"},
            "uid": {"type": "integer", "minimum": 0, "maximum": 2147483647u32,
                "description": "its number (chosen by useradd when not given)"},
            "group": {"type": "string", "minLength": 1, "description": "the primary group"},
            "groups": {"type": "array", "items": {"type": "string"}, "uniqueItems": true,
                "description": "supplementary groups"},
            "groups_mode": {"enum": ["append", "exact"], "default": "append",
                "description": "append: be in at least these; exact: in these and no others"},
            "home": text("the home directory"),
            "manage_home": {"type": "boolean", "default": true,
                "description": "create the home directory, and move it when `home` changes"},
            "shell": text("the login shell"),
            "comment": text("the GECOS field (full name)"),
            "system": {"type": "boolean", "default": false,
                "description": "a system account (a uid from the system range, no home) when created"},
            "password_hash": {"type": "string", "sensitive": true, "pattern": "^[^:\\n\\r]*$",
                "description": "the crypt(3) hash (never the password); compared exactly"},
            "allow_uid_change": {"type": "boolean", "default": false,
                "description": "allow changing the uid of an existing account"},
            "remove_home": {"type": "boolean", "default": false,
                "description": "with ensure: absent, remove the home directory and mail spool too"},
        },
        "required": ["name"],
        "additionalProperties": false,
    })
}

pub(crate) fn validate(properties: &Value) -> Vec<Diagnostic> {
    let u: User = match tenet_sdk::from_value(properties) {
        Ok(u) => u,
        Err(e) => return vec![Diagnostic::error("", e.to_string())],
    };
    let mut out = Vec::new();
    if !valid_name(&u.name) {
        out.push(Diagnostic::error(
            "/name",
            format!(
                "`{}` is not a user name: a lowercase letter or `_`, then lowercase letters, digits, `_` or `-` (at most {})",
                u.name,
                super::MAX_NAME
            ),
        ));
    }
    if let Some(g) = &u.group
        && !valid_name(g)
    {
        out.push(Diagnostic::error(
            "/group",
            format!("`{g}` is not a group name"),
        ));
    }
    for (i, g) in u.groups.iter().flatten().enumerate() {
        if !valid_name(g) {
            out.push(Diagnostic::error(
                &format!("/groups/{i}"),
                format!("`{g}` is not a group name"),
            ));
        }
    }
    for (field, v) in [("/home", &u.home), ("/shell", &u.shell)] {
        if let Some(p) = v
            && !p.starts_with('/')
        {
            out.push(Diagnostic::error(
                field,
                format!("`{p}` is not an absolute path"),
            ));
        }
    }
    if let Some(h) = &u.password_hash
        && !(h.starts_with('$') || h == "!" || h == "*" || h.starts_with('!'))
    {
        out.push(Diagnostic::error(
            "/password_hash",
            "not a crypt(3) hash (`$y$…`, `$6$…`) or a locked marker (`!`, `*`): give the hash, never the password",
        ));
    }
    out
}

fn probe(args: &[&str]) -> Result<(Option<i32>, String), Error> {
    let (program, rest) = args.split_first().unwrap_or((&"", &[]));
    let out = Command::new(program).args(rest.iter().copied()).run()?;
    if !matches!(out.status, Some(0) | Some(2)) {
        return Err(Error::Internal(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((out.status, out.stdout_text()))
}

fn observe(u: &User) -> Result<Option<Observed>, Error> {
    let (status, line) = probe(&[super::GETENT, "passwd", &u.name])?;
    if status == Some(2) {
        return Ok(None);
    }
    let bad = || {
        Error::Internal(format!(
            "`getent passwd {}` printed `{}`",
            u.name,
            line.trim()
        ))
    };
    let f: Vec<&str> = line.trim_end_matches('\n').split(':').collect();
    let [name, _, uid, gid, comment, home, shell] = f[..] else {
        return Err(bad());
    };
    if name != u.name {
        return Err(bad());
    }
    let (_, group_line) = probe(&[super::GETENT, "group", gid])?;
    let group = group_line
        .split(':')
        .next()
        .unwrap_or(gid)
        .trim()
        .to_owned();
    let (_, ids) = probe(&[ID, "-Gn", "--", &u.name])?;
    let groups: Vec<String> = ids
        .split_whitespace()
        .filter(|g| *g != group)
        .map(str::to_owned)
        .collect();
    let password_hash = match &u.password_hash {
        Some(_) => {
            let (_, shadow) = probe(&[super::GETENT, "shadow", &u.name])?;
            shadow.split(':').nth(1).map(str::to_owned)
        }
        None => None,
    };
    Ok(Some(Observed {
        name: name.to_owned(),
        ensure: Ensure::Present,
        uid: uid.parse().map_err(|_| bad())?,
        group,
        groups,
        home: home.to_owned(),
        shell: shell.to_owned(),
        comment: comment.to_owned(),
        password_hash,
        // From the desired properties: the deletion of an `absent` account sees the
        // state, not the manifest.
        remove_home: u.remove_home,
    }))
}

pub(crate) fn read(properties: &Value) -> Result<Option<Value>, Error> {
    let u: User = tenet_sdk::from_value(properties)?;
    observe(&u)?.map(|o| tenet_sdk::to_value(&o)).transpose()
}

/// The supplementary groups `u` should end up in, given `now`.
fn wanted_groups(u: &User, now: &[String]) -> Option<Vec<String>> {
    let want = u.groups.as_ref()?;
    let mut out: Vec<String> = match u.groups_mode {
        GroupsMode::Exact => want.clone(),
        GroupsMode::Append => {
            let mut all = now.to_vec();
            all.extend(want.iter().filter(|g| !now.contains(g)).cloned());
            all
        }
    };
    out.sort();
    out.dedup();
    let mut have = now.to_vec();
    have.sort();
    (out != have).then_some(out)
}

pub(crate) fn diff(desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
    let u: User = tenet_sdk::from_value(desired)?;
    let Some(mut now) = current.map(tenet_sdk::from_value::<Observed>).transpose()? else {
        return Ok(match u.ensure {
            Ensure::Absent => Diff::none(),
            Ensure::Present => Diff::create(desired),
        });
    };
    if u.ensure == Ensure::Absent {
        now.remove_home = u.remove_home;
        return Ok(Diff::delete(&tenet_sdk::to_value(&now)?));
    }
    let now = now;
    let mut changes = Vec::new();
    if let Some(uid) = u.uid
        && uid != now.uid
    {
        if !u.allow_uid_change {
            return Err(Error::Conflict(format!(
                "user `{}` has uid {}, not {uid}: changing it leaves files owned by the old number; set `allow_uid_change: true` to do it anyway",
                u.name, now.uid
            )));
        }
        changes.push(FieldChange::new(
            "uid",
            Some(json!(now.uid)),
            Some(json!(uid)),
        ));
    }
    let mut field = |name: &str, want: &Option<String>, have: &str| {
        if let Some(w) = want
            && w != have
        {
            changes.push(FieldChange::new(name, Some(json!(have)), Some(json!(w))));
        }
    };
    field("group", &u.group, &now.group);
    field("home", &u.home, &now.home);
    field("shell", &u.shell, &now.shell);
    field("comment", &u.comment, &now.comment);
    field(
        "password_hash",
        &u.password_hash,
        now.password_hash.as_deref().unwrap_or(""),
    );
    if let Some(groups) = wanted_groups(&u, &now.groups) {
        changes.push(FieldChange::new(
            "groups",
            Some(json!(now.groups)),
            Some(json!(groups)),
        ));
    }
    Ok(Diff::from_changes(changes))
}

pub(crate) fn apply(desired: &Value, current: Option<&Value>) -> Result<Value, Error> {
    let u: User = tenet_sdk::from_value(desired)?;
    let now: Option<Observed> = current.map(tenet_sdk::from_value).transpose()?;
    let mut args: Vec<String> = Vec::new();
    fn opt(args: &mut Vec<String>, flag: &str, value: Option<String>) {
        if let Some(v) = value {
            args.extend([flag.to_owned(), v]);
        }
    }
    match &now {
        None => {
            opt(&mut args, "--uid", u.uid.map(|n| n.to_string()));
            opt(&mut args, "--gid", u.group.clone());
            opt(
                &mut args,
                "--groups",
                u.groups.as_ref().map(|g| g.join(",")),
            );
            opt(&mut args, "--home-dir", u.home.clone());
            opt(&mut args, "--shell", u.shell.clone());
            opt(&mut args, "--comment", u.comment.clone());
            if u.manage_home && !u.system {
                args.push("--create-home".into());
            }
            if u.system {
                args.push("--system".into());
            }
            run(USERADD, args, &u.name)?;
        }
        Some(now) => {
            opt(
                &mut args,
                "--uid",
                u.uid.filter(|n| *n != now.uid).map(|n| n.to_string()),
            );
            opt(
                &mut args,
                "--gid",
                u.group.clone().filter(|g| *g != now.group),
            );
            let groups = wanted_groups(&u, &now.groups);
            opt(&mut args, "--groups", groups.map(|g| g.join(",")));
            let home = u.home.clone().filter(|h| *h != now.home);
            let moving = home.is_some() && u.manage_home;
            opt(&mut args, "--home-dir", home);
            if moving {
                args.push("--move-home".into());
            }
            opt(
                &mut args,
                "--shell",
                u.shell.clone().filter(|s| *s != now.shell),
            );
            opt(
                &mut args,
                "--comment",
                u.comment.clone().filter(|c| *c != now.comment),
            );
            if !args.is_empty() {
                run(USERMOD, args, &u.name)?;
            }
        }
    }
    if let Some(hash) = &u.password_hash
        && now.as_ref().and_then(|n| n.password_hash.as_ref()) != Some(hash)
    {
        // The hash on stdin: an argument would be visible to every process on the host.
        let out = Command::new(CHPASSWD)
            .arg("--encrypted")
            .stdin(format!("{}:{hash}\n", u.name))
            .run()?;
        if !out.success() {
            return Err(Error::Internal(format!(
                "`chpasswd --encrypted` failed for `{}`: {}",
                u.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let observed = observe(&u)?.ok_or_else(|| {
        Error::Internal(format!(
            "user `{}` is missing right after it was created",
            u.name
        ))
    })?;
    tenet_sdk::to_value(&observed)
}

pub(crate) fn delete(current: &Value) -> Result<(), Error> {
    let now: Observed = tenet_sdk::from_value(current)?;
    let (status, _) = probe(&[super::GETENT, "passwd", &now.name])?;
    if status == Some(2) {
        return Ok(());
    }
    let args = if now.remove_home {
        vec!["--remove".to_owned()]
    } else {
        Vec::new()
    };
    run(USERDEL, args, &now.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(extra: Value) -> User {
        let mut v = json!({"name": "deploy"});
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        tenet_sdk::from_value(&v).expect("user")
    }

    #[test]
    fn groups_append_adds_and_exact_also_removes() {
        let now = vec!["adm".to_owned(), "video".to_owned()];
        assert_eq!(wanted_groups(&user(json!({"groups": ["adm"]})), &now), None);
        assert_eq!(
            wanted_groups(&user(json!({"groups": ["sudo"]})), &now),
            Some(vec!["adm".into(), "sudo".into(), "video".into()])
        );
        assert_eq!(
            wanted_groups(
                &user(json!({"groups": ["adm"], "groups_mode": "exact"})),
                &now
            ),
            Some(vec!["adm".into()])
        );
    }

    #[test]
    fn a_password_is_refused_where_a_hash_belongs_and_paths_must_be_absolute() {
        let v = validate(&json!({"name": "deploy", "password_hash": "hunter2", "shell": "bash"}));
        let paths: Vec<&str> = v.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/shell", "/password_hash"], "{v:?}");
        assert!(validate(&json!({"name": "deploy", "password_hash": "$y$j9T$abc$def"})).is_empty());
    }
}
