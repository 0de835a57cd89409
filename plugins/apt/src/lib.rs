//! Tenet's built-in `apt` provider: kinds `apt.package` and `apt.update` ([`update`]).
//!
//! `apt.package` reads what dpkg knows with one `dpkg-query -W` for every package of a
//! plan (a batched read: [`Provider::read_many`]), and asks `apt-cache policy` (one call
//! for all that need it) only for packages to be installed, pinned or kept `latest`. A
//! plan shows what apt would do besides (`apt-get -s`: the dependencies it pulls in, the
//! packages a removal takes with it) and fails before anything runs when apt could not do
//! it (an unknown name, a version no source has, a virtual package, unmet dependencies).
//! Apply runs `apt-get install|remove|purge` and `apt-mark hold|unhold` with fixed
//! arguments in one canonical order, so a grant can name exactly what may run.
//!
//! The provider declares (`execution.settings`) that it runs one call at a time and holds
//! the `dpkg` lock (dpkg is one global lock: an `exec` resource that runs apt takes
//! `locks: [dpkg]` and never runs beside it), and fixes `PATH` (dpkg's `checkpath` needs
//! it), `DEBIAN_FRONTEND=noninteractive` and `LC_ALL=C.UTF-8` for the programs it runs.
//!
//! States: `ensure` is the installed version, `absent` (removed, configuration files
//! kept) or `purged` (unknown to dpkg; reported only when that is what is desired —
//! otherwise `read` finds nothing); `hold` whether dpkg holds it; `candidate` (read only)
//! the version `latest` means.

pub mod dpkg;
pub mod update;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use tenet_sdk::exec::{Command, Output};
use tenet_sdk::{
    Action, Capabilities, Diagnostic, Diff, Error, FieldChange, KindInfo, Provider, ProviderInfo,
    Settings,
};

pub const DPKG_QUERY: &str = "/usr/bin/dpkg-query";
pub const APT_CACHE: &str = "/usr/bin/apt-cache";
pub const APT_GET: &str = "/usr/bin/apt-get";
pub const APT_MARK: &str = "/usr/bin/apt-mark";
/// How long apt waits for another process's dpkg lock before it gives up (the host's
/// call deadline, `limits.timeout`, still bounds the whole call).
pub const LOCK_TIMEOUT: &str = "DPkg::Lock::Timeout=300";
/// Lines of a failed program's output quoted in an error.
const ERROR_LINES: usize = 12;

/// The provider.
pub struct AptProvider;

/// `ensure` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Present,
    Absent,
    Purged,
    Latest,
    Version(String),
}

impl Want {
    fn parse(text: &str) -> Result<Want, String> {
        Ok(match text {
            "present" | "installed" => Want::Present,
            "absent" => Want::Absent,
            "purged" => Want::Purged,
            "latest" => Want::Latest,
            v if dpkg::valid_version(v) => Want::Version(v.to_owned()),
            other => {
                return Err(format!(
                    "`{other}` is not present, absent, purged, latest or a Debian version"
                ));
            }
        })
    }

    /// Whether it wants the package installed.
    fn installs(&self) -> bool {
        !matches!(self, Want::Absent | Want::Purged)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Package {
    name: String,
    #[serde(default = "present")]
    ensure: String,
    hold: Option<bool>,
    #[serde(default)]
    install_recommends: bool,
    #[serde(default)]
    allow_downgrade: bool,
    /// Read only: present in states, refused in manifests by `validate`.
    candidate: Option<String>,
}

fn present() -> String {
    "present".to_owned()
}

impl Package {
    fn want(&self) -> Result<Want, Error> {
        Want::parse(&self.ensure).map_err(Error::InvalidInput)
    }
}

/// What dpkg (and for `latest`, apt) says about a package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Observed {
    name: String,
    /// The installed version, `absent` or `purged`.
    ensure: String,
    hold: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    candidate: Option<String>,
}

impl Observed {
    fn installed(&self) -> Option<&str> {
        (!matches!(self.ensure.as_str(), "absent" | "purged")).then_some(self.ensure.as_str())
    }
}

fn schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 128,
                "description": "the package's name (no architecture qualifier, no patterns)"},
            "ensure": {"type": "string", "minLength": 1, "maxLength": 128, "default": "present",
                "description": "present, absent (configuration files kept), purged, latest, or a version to pin (e.g. 2.10-3)"},
            "hold": {"type": "boolean",
                "description": "hold it at its version (apt-mark hold); left alone when not given"},
            "install_recommends": {"type": "boolean", "default": false,
                "description": "install the packages it recommends too"},
            "allow_downgrade": {"type": "boolean", "default": false,
                "description": "allow installing an older version than the one installed"},
            "candidate": {"type": "string", "readOnly": true,
                "description": "(state only) the version `latest` installs"},
        },
        "required": ["name"],
        "additionalProperties": false,
    })
}

impl Provider for AptProvider {
    fn describe() -> ProviderInfo {
        ProviderInfo::new(
            "apt",
            env!("CARGO_PKG_VERSION"),
            "Debian packages, through dpkg-query, apt-cache, apt-get and apt-mark",
        )
        .kind(KindInfo::new(
            "package",
            "a Debian package: installed (at a version), held, removed or purged",
            schema(),
            "name",
        ))
        .kind(
            KindInfo::new(
                "update",
                "apt's package lists, refreshed when older than max_age or when notified",
                update::schema(),
                "name",
            )
            .path_properties(&["stamp"]),
        )
    }

    fn capabilities() -> Capabilities {
        Capabilities::new()
            .program(
                DPKG_QUERY,
                true,
                "reads what is installed (one call per plan)",
            )
            .program(
                APT_CACHE,
                true,
                "finds candidate versions of packages to install",
            )
            .program(
                APT_GET,
                true,
                "simulates (-s) during plans; installs, removes, purges and updates during apply",
            )
            .program(APT_MARK, false, "holds and unholds packages")
            .directory(
                update::STAMP_DIR,
                true,
                "apt.update records when the lists were last refreshed",
            )
    }

    fn settings() -> Settings {
        Settings::new()
            .max_concurrency(1)
            .lock("dpkg")
            .fixed_env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .fixed_env("DEBIAN_FRONTEND", "noninteractive")
            .fixed_env("LC_ALL", "C.UTF-8")
            .fixed_env("APT_LISTCHANGES_FRONTEND", "none")
            .fixed_env("APT_LISTBUGS_FRONTEND", "none")
            .batched_kind("package")
    }

    fn validate(kind: &str, properties: &Value) -> Vec<Diagnostic> {
        if kind == "update" {
            return update::validate(properties);
        }
        let p: Package = match tenet_sdk::from_value(properties) {
            Ok(p) => p,
            Err(e) => return vec![Diagnostic::error("", e.to_string())],
        };
        let mut out = Vec::new();
        if !dpkg::valid_name(&p.name) {
            out.push(Diagnostic::error(
                "/name",
                format!(
                    "`{}` is not a Debian package name: lowercase letters, digits, `+`, `-` and `.`, starting with a letter or digit (no architecture qualifier, no patterns)",
                    p.name
                ),
            ));
        }
        let want = Want::parse(&p.ensure);
        if let Err(e) = &want {
            out.push(Diagnostic::error("/ensure", e.clone()));
        }
        if p.candidate.is_some() {
            out.push(Diagnostic::error(
                "/candidate",
                "`candidate` is read only: apt reports it, a manifest cannot set it",
            ));
        }
        if p.hold == Some(true) && want.as_ref().is_ok_and(|w| !w.installs()) {
            out.push(Diagnostic::error(
                "/hold",
                "a package that should not be installed cannot be held",
            ));
        }
        out
    }

    fn read(kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        Self::read_many(kind, std::slice::from_ref(properties))?
            .pop()
            .unwrap_or_else(|| Err(Error::Internal("no state for the package".into())))
    }

    fn read_many(
        kind: &str,
        properties: &[Value],
    ) -> Result<Vec<Result<Option<Value>, Error>>, Error> {
        match kind {
            "package" => read_packages(properties),
            "update" => Ok(properties.iter().map(update::read).collect()),
            other => Err(Error::unknown_kind(other)),
        }
    }

    fn diff(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
        match kind {
            "package" => diff_package(desired, current),
            "update" => update::diff(desired, current),
            other => Err(Error::unknown_kind(other)),
        }
    }

    fn apply(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Value, Error> {
        match kind {
            "package" => apply_package(desired, current),
            "update" => update::apply(desired),
            other => Err(Error::unknown_kind(other)),
        }
    }

    fn delete(kind: &str, current: &Value) -> Result<(), Error> {
        match kind {
            // Removing a package from the manifest purges it, as Terraform destroys what
            // leaves its configuration (`on_remove: forget` leaves it installed).
            "package" => {
                let now: Observed = tenet_sdk::from_value(current)?;
                if query(&[now.name.as_str()])?.contains_key(&now.name) {
                    apt_get_args(&removal_args("purge", &now.name, false), &now.name)?;
                }
                Ok(())
            }
            // Nothing to undo: the lists stay as they are.
            "update" => Ok(()),
            other => Err(Error::unknown_kind(other)),
        }
    }
}

tenet_sdk::export_provider!(AptProvider);

/// `dpkg-query -W` for `names`: what dpkg knows, by name. Exit 1 only means some names
/// are unknown to dpkg.
fn query(names: &[&str]) -> Result<BTreeMap<String, dpkg::Status>, Error> {
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let out = Command::new(DPKG_QUERY)
        .args(["-W", dpkg::QUERY_FORMAT, "--"])
        .args(names.iter().copied())
        .run()?;
    if !matches!(out.status, Some(0 | 1)) {
        return Err(failed("dpkg-query -W", &out));
    }
    dpkg::parse_query(&out.stdout_text()).map_err(Error::Internal)
}

/// `apt-cache policy` for `names` (one call).
fn policy(names: &[&str]) -> Result<BTreeMap<String, dpkg::Policy>, Error> {
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let out = Command::new(APT_CACHE)
        .args(["policy", "--"])
        .args(names.iter().copied())
        .run()?;
    if !out.success() {
        return Err(failed("apt-cache policy", &out));
    }
    Ok(dpkg::parse_policy(&out.stdout_text(), names))
}

/// The batched read: one `dpkg-query` for every package, one `apt-cache policy` for
/// those that need a candidate.
fn read_packages(properties: &[Value]) -> Result<Vec<Result<Option<Value>, Error>>, Error> {
    let parsed: Vec<Result<(Package, Want), Error>> = properties
        .iter()
        .map(|p| {
            let p: Package = tenet_sdk::from_value(p)?;
            if !dpkg::valid_name(&p.name) {
                return Err(Error::InvalidInput(format!(
                    "`{}` is not a Debian package name",
                    p.name
                )));
            }
            let want = p.want()?;
            Ok((p, want))
        })
        .collect();
    let mut names: Vec<&str> = parsed
        .iter()
        .flatten()
        .map(|(p, _)| p.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let known = query(&names)?;
    let installed = |name: &str| known.get(name).is_some_and(dpkg::Status::installed);
    let mut asked: Vec<&str> = parsed
        .iter()
        .flatten()
        .filter(|(p, w)| match w {
            Want::Latest | Want::Version(_) => true,
            Want::Present => !installed(&p.name),
            Want::Absent | Want::Purged => false,
        })
        .map(|(p, _)| p.name.as_str())
        .collect();
    asked.sort_unstable();
    asked.dedup();
    let policies = policy(&asked)?;
    Ok(parsed
        .into_iter()
        .map(|r| {
            let (p, want) = r?;
            observe(&p, &want, known.get(&p.name), policies.get(&p.name))
        })
        .collect())
}

/// One package's state from what dpkg and apt said.
fn observe(
    p: &Package,
    want: &Want,
    status: Option<&dpkg::Status>,
    policy: Option<&dpkg::Policy>,
) -> Result<Option<Value>, Error> {
    if let Some(s) = status
        && s.eflag != "ok"
    {
        return Err(Error::Conflict(format!(
            "dpkg marks package `{}` as `{}` ({}): repair it first (`dpkg --configure -a`, or reinstall it)",
            p.name, s.eflag, s.status
        )));
    }
    let installed = status.filter(|s| s.installed()).map(|s| s.version.clone());
    // Packages to install must exist in a source, at the version asked for.
    let asked = policy.is_some() || want.installs() && installed.is_none();
    if asked && !matches!(want, Want::Absent | Want::Purged) {
        let Some(policy) = policy else {
            return Err(Error::InvalidInput(format!(
                "no package `{}` in apt's lists: check the name, or refresh the lists (apt.update) after adding its source",
                p.name
            )));
        };
        match want {
            Want::Version(v) => {
                let available = policy
                    .versions
                    .iter()
                    .any(|have| dpkg::compare(have, v) == Ordering::Equal);
                let is_installed = installed
                    .as_deref()
                    .is_some_and(|i| dpkg::compare(i, v) == Ordering::Equal);
                if !available && !is_installed {
                    return Err(Error::InvalidInput(format!(
                        "version `{v}` of `{}` is in none of apt's sources (available: {})",
                        p.name,
                        if policy.versions.is_empty() {
                            "none".to_owned()
                        } else {
                            policy.versions.join(", ")
                        }
                    )));
                }
            }
            _ if policy.candidate.is_none() => {
                return Err(Error::InvalidInput(format!(
                    "`{}` has no installation candidate: it is a virtual package or no source offers it; name the package that provides it",
                    p.name
                )));
            }
            _ => {}
        }
    }
    let candidate = match want {
        Want::Latest => policy.and_then(|p| p.candidate.clone()),
        _ => None,
    };
    let held = status.is_some_and(dpkg::Status::held);
    let ensure = match (installed, status.map(|s| s.status.as_str())) {
        (Some(v), _) => v,
        // Removed with its configuration kept, or half-installed / unpacked (Puppet's
        // reading too: apply installs it again).
        (None, Some(s)) if s != "not-installed" => "absent".to_owned(),
        // Unknown to dpkg: nothing exists, unless that is what is wanted.
        (None, _) if !want.installs() => "purged".to_owned(),
        (None, _) => return Ok(None),
    };
    tenet_sdk::to_value(&Observed {
        name: p.name.clone(),
        ensure,
        hold: held,
        candidate,
    })
    .map(Some)
}

/// The version `want` installs given what is installed (`None`: nothing to install).
fn target_version<'a>(
    p: &'a Package,
    want: &'a Want,
    now: Option<&'a Observed>,
) -> Result<Option<String>, Error> {
    let installed = now.and_then(Observed::installed);
    Ok(match want {
        Want::Absent | Want::Purged => None,
        Want::Present => installed.is_none().then(|| "present".to_owned()),
        Want::Latest => {
            let candidate = now.and_then(|n| n.candidate.clone()).ok_or_else(|| {
                Error::InvalidInput(format!("`{}` has no installation candidate", p.name))
            })?;
            match installed {
                Some(i) if dpkg::compare(i, &candidate) != Ordering::Less => None,
                _ => Some(candidate),
            }
        }
        Want::Version(v) => match installed {
            Some(i) if dpkg::compare(i, v) == Ordering::Equal => None,
            Some(i) if dpkg::compare(i, v) == Ordering::Greater && !p.allow_downgrade => {
                return Err(Error::Conflict(format!(
                    "`{}` {i} is installed; installing {v} would downgrade it: set `allow_downgrade: true` to do it",
                    p.name
                )));
            }
            _ => Some(v.clone()),
        },
    })
}

fn diff_package(desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
    let p: Package = tenet_sdk::from_value(desired)?;
    let want = p.want()?;
    let now: Option<Observed> = current.map(tenet_sdk::from_value).transpose()?;
    let before = now.as_ref().map(|n| json!(n.ensure));
    let mut changes = Vec::new();
    let mut simulate: Option<Vec<String>> = None;
    if let Some(version) = target_version(&p, &want, now.as_ref())? {
        let spec = install_spec(&p.name, &version);
        let after = match &want {
            Want::Latest => json!(format!("{version} (latest)")),
            _ => json!(version),
        };
        changes.push(FieldChange::new("ensure", before.clone(), Some(after)));
        simulate = Some(install_args(&p, &spec, true));
    } else if let Some(n) = &now {
        let removes = match want {
            Want::Absent => n.installed().is_some(),
            Want::Purged => n.ensure != "purged",
            _ => false,
        };
        if removes {
            let verb = if want == Want::Purged {
                "purge"
            } else {
                "remove"
            };
            changes.push(FieldChange::new(
                "ensure",
                before.clone(),
                Some(json!(p.ensure)),
            ));
            simulate = Some(removal_args(verb, &p.name, true));
        }
    }
    if let Some(hold) = p.hold {
        let held = now.as_ref().is_some_and(|n| n.hold);
        if hold != held {
            changes.push(FieldChange::new(
                "hold",
                now.as_ref().map(|_| json!(held)),
                Some(json!(hold)),
            ));
        }
    }
    // What apt would do besides: dependencies pulled in, dependents removed with it.
    if let Some(args) = simulate {
        let out = Command::new(APT_GET).args(&args).run()?;
        if !out.success() {
            return Err(apt_error(&p.name, "simulating", &out));
        }
        let others: Vec<String> = dpkg::parse_simulation(&out.stdout_text())
            .into_iter()
            .filter(|line| line.split_whitespace().nth(1) != Some(p.name.as_str()))
            .collect();
        if !others.is_empty() {
            changes.push(FieldChange::new("with", None, Some(json!(others))));
        }
    }
    if changes.is_empty() {
        return Ok(Diff::none());
    }
    Ok(Diff {
        action: if now.is_none() {
            Action::Create
        } else {
            Action::Update
        },
        changes,
    })
}

fn apply_package(desired: &Value, current: Option<&Value>) -> Result<Value, Error> {
    let p: Package = tenet_sdk::from_value(desired)?;
    let want = p.want()?;
    let now: Option<Observed> = current.map(tenet_sdk::from_value).transpose()?;
    let was_held = now.as_ref().is_some_and(|n| n.hold);
    if let Some(version) = target_version(&p, &want, now.as_ref())? {
        let spec = install_spec(&p.name, &version);
        apt_get_args(&install_args(&p, &spec, false), &p.name)?;
        // Changing a held package's version releases the hold: put it back unless the
        // manifest says otherwise.
        if was_held && p.hold.is_none() {
            mark("hold", &p.name)?;
        }
    } else if let Some(n) = &now {
        match want {
            Want::Absent if n.installed().is_some() => {
                apt_get_args(&removal_args("remove", &p.name, false), &p.name)?
            }
            Want::Purged if n.ensure != "purged" => {
                apt_get_args(&removal_args("purge", &p.name, false), &p.name)?
            }
            _ => {}
        }
    }
    let missing = || {
        Error::Internal(format!(
            "`{}` is not installed after apt-get reported success",
            p.name
        ))
    };
    // The state after the change; read again only if the hold had to change too.
    let state = AptProvider::read("package", desired)?.ok_or_else(missing)?;
    let held = state.get("hold") == Some(&json!(true));
    match p.hold {
        Some(hold) if hold != held => {
            mark(if hold { "hold" } else { "unhold" }, &p.name)?;
            AptProvider::read("package", desired)?.ok_or_else(missing)
        }
        _ => Ok(state),
    }
}

/// `name` or `name=version`.
fn install_spec(name: &str, version: &str) -> String {
    if version == "present" {
        name.to_owned()
    } else {
        format!("{name}={version}")
    }
}

/// `apt-get` arguments to install `spec`, in one canonical order (`-s`: a simulation).
fn install_args(p: &Package, spec: &str, simulate: bool) -> Vec<String> {
    let mut a: Vec<String> = if simulate {
        vec!["-s".into(), "-q".into()]
    } else {
        vec![
            "-y".into(),
            "-q".into(),
            "-o".into(),
            LOCK_TIMEOUT.into(),
            "-o".into(),
            "Dpkg::Options::=--force-confdef".into(),
            "-o".into(),
            "Dpkg::Options::=--force-confold".into(),
        ]
    };
    a.extend([
        "-o".into(),
        format!("APT::Install-Recommends={}", p.install_recommends),
        "-o".into(),
        format!("APT::Get::allow-downgrades={}", p.allow_downgrade),
        "-o".into(),
        "APT::Get::allow-change-held-packages=true".into(),
        "install".into(),
        "--".into(),
        spec.to_owned(),
    ]);
    a
}

/// `apt-get` arguments to remove or purge `name`.
fn removal_args(verb: &str, name: &str, simulate: bool) -> Vec<String> {
    let mut a: Vec<String> = if simulate {
        vec!["-s".into(), "-q".into()]
    } else {
        vec!["-y".into(), "-q".into(), "-o".into(), LOCK_TIMEOUT.into()]
    };
    a.extend([
        "-o".into(),
        "APT::Get::allow-change-held-packages=true".into(),
        verb.into(),
        "--".into(),
        name.to_owned(),
    ]);
    a
}

fn apt_get_args(args: &[String], name: &str) -> Result<(), Error> {
    let out = Command::new(APT_GET).args(args).run()?;
    if out.success() {
        return Ok(());
    }
    Err(apt_error(name, "running apt-get", &out))
}

fn mark(verb: &str, name: &str) -> Result<(), Error> {
    let out = Command::new(APT_MARK).args([verb, "--", name]).run()?;
    if out.success() {
        return Ok(());
    }
    Err(apt_error(name, &format!("apt-mark {verb}"), &out))
}

/// An apt failure: the lock held by someone else is transient; otherwise apt's own
/// explanation (its `E:` lines and the lines before them).
fn apt_error(name: &str, doing: &str, out: &Output) -> Error {
    let text = format!(
        "{}\n{}",
        out.stdout_text(),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Reading ")
                && !l.starts_with("Building ")
                && !l.starts_with("NOTE: This is only a simulation")
                && !l.starts_with("debconf: delaying")
                && !l.starts_with("(Reading database")
        })
        .collect();
    let tail = lines[lines.len().saturating_sub(ERROR_LINES)..].join("\n  ");
    let message = format!(
        "`{name}`: {doing} failed ({}):\n  {tail}",
        out.status_text()
    );
    if text.contains("Could not get lock") || text.contains("Unable to acquire the dpkg") {
        Error::Transient(message)
    } else if text.contains("Unable to locate package")
        || text.contains("has no installation candidate")
        || text.contains("was not found")
        || text.contains("unmet dependencies")
    {
        Error::InvalidInput(message)
    } else {
        Error::Internal(message)
    }
}

/// A program that failed, quoting its error output.
fn failed(what: &str, out: &Output) -> Error {
    Error::Internal(format!(
        "`{what}` failed ({}): {}",
        out.status_text(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(ensure: &str, hold: bool, candidate: Option<&str>) -> Value {
        json!({"name": "fx", "ensure": ensure, "hold": hold, "candidate": candidate})
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<serde_json::Map<_, _>>()
            })
            .map(Value::Object)
            .unwrap_or_default()
    }

    #[test]
    fn bad_input_is_refused_naming_the_field() {
        let v = AptProvider::validate(
            "package",
            &json!({"name": "lib*", "ensure": "newest", "candidate": "1"}),
        );
        let paths: Vec<&str> = v.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/name", "/ensure", "/candidate"], "{v:?}");
        let v = AptProvider::validate(
            "package",
            &json!({"name": "fx", "ensure": "absent", "hold": true}),
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path, "/hold");
        assert!(
            AptProvider::validate("package", &json!({"name": "fx", "ensure": "1:2.0-1"}))
                .is_empty()
        );
    }

    #[test]
    fn states_follow_what_is_wanted() {
        let p = |ensure: &str| Package {
            name: "fx".into(),
            ensure: ensure.into(),
            hold: None,
            install_recommends: false,
            allow_downgrade: false,
            candidate: None,
        };
        let st = |status: &str, want: &str, version: &str| dpkg::Status {
            want: want.into(),
            eflag: "ok".into(),
            status: status.into(),
            version: version.into(),
        };
        let pol = dpkg::Policy {
            candidate: Some("2.0".into()),
            versions: vec!["2.0".into(), "1.0".into()],
        };
        // Installed and held.
        let s = observe(
            &p("present"),
            &Want::Present,
            Some(&st("installed", "hold", "1.0")),
            None,
        )
        .expect("read");
        assert_eq!(s, Some(observed("1.0", true, None)));
        // Config files only: absent.
        let s = observe(
            &p("absent"),
            &Want::Absent,
            Some(&st("config-files", "deinstall", "1.0")),
            None,
        )
        .expect("read");
        assert_eq!(s, Some(observed("absent", false, None)));
        // Unknown to dpkg: nothing, unless nothing is wanted.
        assert_eq!(
            observe(&p("present"), &Want::Present, None, Some(&pol)).expect("read"),
            None
        );
        let s = observe(&p("purged"), &Want::Purged, None, None).expect("read");
        assert_eq!(s, Some(observed("purged", false, None)));
        // Unknown to apt, a virtual package, a version no source has.
        let e = observe(&p("present"), &Want::Present, None, None).expect_err("unknown");
        assert!(e.to_string().contains("no package `fx`"), "{e}");
        let virt = dpkg::Policy::default();
        let e = observe(&p("present"), &Want::Present, None, Some(&virt)).expect_err("virtual");
        assert!(e.to_string().contains("no installation candidate"), "{e}");
        let e = observe(&p("9.9"), &Want::Version("9.9".into()), None, Some(&pol))
            .expect_err("version");
        assert!(e.to_string().contains("available: 2.0, 1.0"), "{e}");
        // `latest` carries the candidate; `0:1.0` is `1.0`.
        let s = observe(
            &p("latest"),
            &Want::Latest,
            Some(&st("installed", "install", "1.0")),
            Some(&pol),
        )
        .expect("read");
        assert_eq!(s, Some(observed("1.0", false, Some("2.0"))));
        assert!(
            observe(
                &p("0:1.0"),
                &Want::Version("0:1.0".into()),
                None,
                Some(&pol)
            )
            .is_ok()
        );
        // A package dpkg marks broken is a conflict to repair, not a state.
        let mut broken = st("half-installed", "install", "1.0");
        broken.eflag = "reinstreq".into();
        assert!(matches!(
            observe(&p("present"), &Want::Present, Some(&broken), None),
            Err(Error::Conflict(_))
        ));
    }

    #[test]
    fn what_would_be_installed_follows_ensure() {
        let p = |ensure: &str, down: bool| Package {
            name: "fx".into(),
            ensure: ensure.into(),
            hold: None,
            install_recommends: false,
            allow_downgrade: down,
            candidate: None,
        };
        let now = |v: &str, c: Option<&str>| -> Observed {
            tenet_sdk::from_value(&observed(v, false, c)).expect("state")
        };
        let t =
            |pk: &Package, n: Option<&Observed>| target_version(pk, &pk.want().expect("want"), n);
        assert_eq!(
            t(&p("present", false), None).expect("t"),
            Some("present".into())
        );
        assert_eq!(
            t(&p("present", false), Some(&now("1.0", None))).expect("t"),
            None
        );
        assert_eq!(
            t(&p("present", false), Some(&now("absent", None))).expect("t"),
            Some("present".into())
        );
        assert_eq!(
            t(&p("latest", false), Some(&now("1.0", Some("2.0")))).expect("t"),
            Some("2.0".into())
        );
        assert_eq!(
            t(&p("latest", false), Some(&now("2.0", Some("2.0")))).expect("t"),
            None
        );
        assert_eq!(
            t(&p("0:2.0", false), Some(&now("2.0", None))).expect("t"),
            None
        );
        let e = t(&p("1.0", false), Some(&now("2.0", None))).expect_err("downgrade");
        assert!(e.to_string().contains("allow_downgrade"), "{e}");
        assert_eq!(
            t(&p("1.0", true), Some(&now("2.0", None))).expect("t"),
            Some("1.0".into())
        );
        assert_eq!(
            t(&p("absent", false), Some(&now("2.0", None))).expect("t"),
            None
        );
    }

    #[test]
    fn arguments_keep_one_canonical_order() {
        let p = Package {
            name: "fx".into(),
            ensure: "present".into(),
            hold: None,
            install_recommends: false,
            allow_downgrade: true,
            candidate: None,
        };
        assert_eq!(
            install_args(&p, "fx=1.0", true).join(" "),
            "-s -q -o APT::Install-Recommends=false -o APT::Get::allow-downgrades=true -o APT::Get::allow-change-held-packages=true install -- fx=1.0"
        );
        assert_eq!(
            removal_args("purge", "fx", false).join(" "),
            "-y -q -o DPkg::Lock::Timeout=300 -o APT::Get::allow-change-held-packages=true purge -- fx"
        );
    }
}
