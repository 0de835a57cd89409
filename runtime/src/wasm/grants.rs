//! Capabilities: what the operator granted one provider, turned into a WASI context per
//! access mode and checked again on every host call (`fs-ext`, `exec`, outgoing HTTP).
//!
//! Nothing is granted by default (no env, no stdio, no network, no directories, no
//! programs). Each fs
//! grant is mirrored into the guest at its own absolute path, so the provider sees the
//! same paths the operator wrote. The access mode follows the operation, not just the
//! grant: during `describe`, `validate`, `read` and `diff` every grant is read-only — a
//! plan can never change the system — and only `apply` and `delete` get the `rw` grants
//! as writable.
//!
//! A granted directory that does not exist yet is shown to read-only calls as an empty
//! directory (so a plan honestly reports "create"), and is created by the host the first
//! time a writable context is built for an `rw` grant.

use crate::manifest::{Access, ExecGrant, FsGrant, Grants, NetGrant};
pub use crate::provider::{DirectoryRequest, EnvRequest, HostRequest, ProgramRequest, Requested};
use globset::{Glob, GlobMatcher};
use std::io;
use std::path::{Path, PathBuf};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx};

/// The access an operation runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `describe`, `validate`, `read`, `diff`.
    ReadOnly,
    /// `apply`, `delete`.
    ReadWrite,
}

/// An fs-ext call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("`{path}` is outside every directory granted to provider `{provider}`")]
    OutsideGrants { provider: String, path: String },
    #[error("provider `{provider}` has no write access to `{path}` now: {reason}")]
    ReadOnly {
        provider: String,
        path: String,
        reason: &'static str,
    },
    #[error("`{path}` leaves the grant of provider `{provider}` through a symlink")]
    Escapes { provider: String, path: String },
    #[error("program `{program}` is not granted to provider `{provider}`")]
    ProgramNotGranted { provider: String, program: String },
    #[error(
        "provider `{provider}` may not run `{program}` with arguments {args:?}: no granted argument pattern matches"
    )]
    Arguments {
        provider: String,
        program: String,
        args: Vec<String>,
    },
    #[error(
        "provider `{provider}` may not run `{program}` during a plan or read: it is not granted with `mode: probe`"
    )]
    NotAProbe { provider: String, program: String },
    #[error("environment variable `{name}` is not granted to provider `{provider}`")]
    Env { provider: String, name: String },
    #[error("provider `{provider}` has no net grant for {origin}")]
    Net { provider: String, origin: String },
    #[error(
        "provider `{provider}` may not send {method} to {origin} during a plan or read: only GET and HEAD"
    )]
    Method {
        provider: String,
        method: String,
        origin: String,
    },
}

/// One exec grant, with its patterns compiled.
#[derive(Debug)]
struct ExecRule {
    grant: ExecGrant,
    /// The program with symlinks resolved, when it exists.
    real: Option<PathBuf>,
    /// Per allowed argument list: the patterns, and whether it ended in `**`.
    args: Vec<(Vec<GlobMatcher>, bool)>,
}

impl ExecRule {
    fn new(grant: &ExecGrant) -> Self {
        let args = grant
            .args
            .iter()
            .filter_map(|list| {
                let rest = list.last().is_some_and(|p| p == "**");
                let fixed = &list[..list.len() - usize::from(rest)];
                // Patterns were checked when the manifest was loaded; a list with one
                // that still fails to compile allows nothing.
                let matchers: Option<Vec<GlobMatcher>> = fixed
                    .iter()
                    .map(|p| Glob::new(p).ok().map(|g| g.compile_matcher()))
                    .collect();
                Some((matchers?, rest))
            })
            .collect();
        ExecRule {
            real: grant.program.canonicalize().ok(),
            grant: grant.clone(),
            args,
        }
    }

    fn allows_args(&self, args: &[String]) -> bool {
        if self.grant.args.is_empty() {
            return args.is_empty();
        }
        self.args.iter().any(|(patterns, rest)| {
            (args.len() == patterns.len() || (*rest && args.len() >= patterns.len()))
                && patterns.iter().zip(args).all(|(p, a)| {
                    // A wildcard does not let an option in: an argument starting with `-`
                    // must be matched by a pattern that itself starts with `-` (so
                    // `[pull, "*"]` does not accept `--upload-pack=…`). A final `**`
                    // accepts anything.
                    p.is_match(a) && (!a.starts_with('-') || p.glob().glob().starts_with('-'))
                })
        })
    }
}

/// What the host adds to a request its grants allow: the grant's credentials, and the
/// CA bundle its TLS trusts instead of the public roots.
#[derive(Debug, Clone, Default)]
pub struct Brokered {
    pub credentials: Option<crate::manifest::Credentials>,
    pub ca: Option<crate::manifest::CaBundle>,
}

/// Everything granted to one provider, ready to check host calls against.
#[derive(Debug)]
pub struct Capabilities {
    provider: String,
    grants: Vec<FsGrant>,
    /// Each grant with symlinks resolved when it was checked (see `manifest::protect`):
    /// a grant that resolves elsewhere later (a directory swapped for a symlink) is
    /// refused, never opened.
    seen: Vec<PathBuf>,
    exec: Vec<ExecRule>,
    net: Vec<NetGrant>,
    env: Vec<String>,
    /// Environment the provider itself sets on its programs (`execution.settings`),
    /// checked by [`check_fixed_env`]; set once, when it was loaded.
    fixed_env: std::sync::OnceLock<Vec<(String, String)>>,
    /// Stands in for granted directories that do not exist yet, in read-only contexts.
    empty: tempfile::TempDir,
}

impl Capabilities {
    pub fn new(provider: &str, grants: &Grants) -> io::Result<Self> {
        Ok(Capabilities {
            provider: provider.to_owned(),
            grants: grants.fs.clone(),
            seen: grants
                .fs
                .iter()
                .map(|g| crate::manifest::protect::resolved(&g.path))
                .collect(),
            exec: grants.exec.iter().map(ExecRule::new).collect(),
            net: grants.net.clone(),
            env: grants.env.clone(),
            fixed_env: std::sync::OnceLock::new(),
            empty: tempfile::Builder::new().prefix("tenet-empty-").tempdir()?,
        })
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The granted environment variables that are set in Tenet's own environment.
    pub fn env_values(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
            .collect()
    }

    /// The environment every program of this provider starts with: the provider's
    /// fixed values (checked by [`check_fixed_env`]), then the granted variables that are
    /// set in Tenet's own environment (the operator's grant wins over the provider).
    pub fn child_env(&self) -> Vec<(String, String)> {
        let granted = self.env_values();
        let mut out: Vec<(String, String)> = self
            .fixed_env
            .get()
            .into_iter()
            .flatten()
            .filter(|(n, _)| !granted.iter().any(|(g, _)| g == n))
            .cloned()
            .collect();
        out.extend(granted);
        out
    }

    /// Record the environment the provider declared (once; later calls are ignored).
    pub fn set_fixed_env(&self, env: Vec<(String, String)>) {
        let _ = self.fixed_env.set(env);
    }

    /// Check an `exec` request; on success the program to start (the granted path).
    /// The program is matched by its real path, so a symlink cannot smuggle in another
    /// binary, and a bare name matches a granted program of that file name.
    pub fn check_exec(
        &self,
        program: &str,
        args: &[String],
        mode: Mode,
    ) -> Result<PathBuf, Denied> {
        let not_granted = || Denied::ProgramNotGranted {
            provider: self.provider.clone(),
            program: program.to_owned(),
        };
        let candidates: Vec<&ExecRule> = if program.contains('/') {
            let path = Path::new(program);
            if !path.is_absolute() {
                return Err(not_granted());
            }
            let real = path.canonicalize().ok();
            self.exec
                .iter()
                .filter(|r| r.grant.program == path || (real.is_some() && r.real == real))
                .collect()
        } else {
            self.exec
                .iter()
                .filter(|r| r.grant.program.file_name().is_some_and(|n| n == program))
                .collect()
        };
        if candidates.is_empty() {
            return Err(not_granted());
        }
        // During a plan only probes count: running a program granted for apply is an
        // attempt to change the system, whatever its arguments.
        let usable: Vec<&&ExecRule> = candidates
            .iter()
            .filter(|r| mode == Mode::ReadWrite || r.grant.probe)
            .collect();
        if usable.is_empty() {
            return Err(Denied::NotAProbe {
                provider: self.provider.clone(),
                program: program.to_owned(),
            });
        }
        usable
            .iter()
            .find(|r| r.allows_args(args))
            .map(|r| r.grant.program.clone())
            .ok_or_else(|| Denied::Arguments {
                provider: self.provider.clone(),
                program: program.to_owned(),
                args: args.to_vec(),
            })
    }

    /// A directory a program may run in: inside a grant once every symlink is resolved
    /// (the final component included), returned resolved so the child starts exactly
    /// there.
    pub fn resolve_dir(&self, guest: &str, mode: Mode) -> Result<PathBuf, Denied> {
        let path = self.resolve(guest, false, mode)?;
        let Ok(real) = path.canonicalize() else {
            // Missing: the caller reports it as such.
            return Ok(path);
        };
        let inside = self.grants.iter().any(|g| {
            g.path
                .canonicalize()
                .is_ok_and(|root| real.starts_with(root))
        });
        if inside {
            Ok(real)
        } else {
            Err(Denied::Escapes {
                provider: self.provider.clone(),
                path: guest.to_owned(),
            })
        }
    }

    /// Check an environment variable a provider wants to pass to a program.
    pub fn check_env(&self, name: &str) -> Result<(), Denied> {
        if self.env.iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(Denied::Env {
                provider: self.provider.clone(),
                name: name.to_owned(),
            })
        }
    }

    /// Check an outgoing HTTP request. During a plan or read only GET and HEAD pass.
    pub fn check_http(
        &self,
        method: &str,
        scheme: &str,
        host: &str,
        port: u16,
        mode: Mode,
    ) -> Result<Brokered, Denied> {
        let origin = format!("{scheme}://{host}:{port}");
        // The method first: a POST during a plan is an attempt to change something,
        // wherever it was going.
        if mode == Mode::ReadOnly && !matches!(method, "GET" | "HEAD") {
            return Err(Denied::Method {
                provider: self.provider.clone(),
                method: method.to_owned(),
                origin,
            });
        }
        if !self.net.iter().any(|g| g.allows(scheme, host, port)) {
            return Err(Denied::Net {
                provider: self.provider.clone(),
                origin,
            });
        }
        // Credentials belong to exact origins only (checked at load), so the first
        // grant with credentials that allows the request names this very origin.
        let allowing = || self.net.iter().filter(|g| g.allows(scheme, host, port));
        Ok(Brokered {
            credentials: allowing().find_map(|g| g.credentials.clone()),
            ca: allowing().find_map(|g| g.ca.clone()),
        })
    }

    /// A WASI context for one instance: the fs grants as preopens with the access the
    /// mode allows, stdout/stderr captured into `stdout`/`stderr`, nothing else.
    pub fn wasi_ctx(
        &self,
        mode: Mode,
        stdout: MemoryOutputPipe,
        stderr: MemoryOutputPipe,
    ) -> io::Result<WasiCtx> {
        let mut b = WasiCtx::builder();
        for (name, value) in self.env_values() {
            b.env(name, value);
        }
        b.stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // File I/O on the calling thread instead of a hop to the blocking pool per
            // operation; each call runs on its own task, so a stuck one cannot hold the
            // deadline (see `plugin::wasm`).
            .allow_blocking_current_thread(true);
        for (i, g) in self.grants.iter().enumerate() {
            let writable = mode == Mode::ReadWrite && g.access == Access::ReadWrite;
            if writable && !g.path.exists() {
                std::fs::create_dir_all(&g.path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create granted directory {}: {e}", g.path.display()),
                    )
                })?;
            }
            self.still_where_checked(i)?;
            let guest = g.path.to_string_lossy();
            let perms = if writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            let host: &Path = if g.path.is_dir() {
                &g.path
            } else if g.path.exists() {
                return Err(io::Error::other(format!(
                    "granted path {} is not a directory",
                    g.path.display()
                )));
            } else {
                // Only ever read-only: a missing `ro` grant, or any grant during a plan.
                self.empty.path()
            };
            b.preopened_dir(host, guest.as_ref(), perms).map_err(|e| {
                io::Error::other(format!(
                    "cannot open granted directory {}: {e}",
                    g.path.display()
                ))
            })?;
        }
        Ok(b.build())
    }

    /// Map a guest path to the host path an `fs-ext` call may touch, or refuse.
    /// `write` is whether the call changes the path. The final component is never
    /// followed (calls act on a symlink itself), but every directory above it must
    /// resolve inside the grant.
    /// The granted directory `path` (as [`Self::resolve`] returned it) lies in, as
    /// written and as it resolved when checked: the root beneath which fs-ext opens it.
    pub fn root_of(&self, path: &Path) -> Option<(&Path, &Path)> {
        self.grants
            .iter()
            .zip(&self.seen)
            .filter(|(g, _)| path.starts_with(&g.path))
            .max_by_key(|(g, _)| g.path.as_os_str().len())
            .map(|(g, seen)| (g.path.as_path(), seen.as_path()))
    }

    /// Refuse a grant that no longer resolves where it did when it was checked.
    fn still_where_checked(&self, i: usize) -> io::Result<()> {
        let (g, seen) = (&self.grants[i], &self.seen[i]);
        match g.path.canonicalize() {
            Ok(now) if now != *seen => Err(io::Error::other(format!(
                "granted directory {} now resolves to {}, not {} as when the manifest was checked; refusing to open it (was a directory replaced by a symlink?)",
                g.path.display(),
                now.display(),
                seen.display()
            ))),
            _ => Ok(()),
        }
    }

    pub fn resolve(&self, guest: &str, write: bool, mode: Mode) -> Result<PathBuf, Denied> {
        // Absolute (a relative guest path resolves against `/`), `.` and `..` removed
        // lexically; a `..` never climbs above `/`.
        let path = path_clean::clean(Path::new("/").join(guest));
        let grant = self
            .grants
            .iter()
            .filter(|g| path.starts_with(&g.path))
            .max_by_key(|g| g.path.as_os_str().len())
            .ok_or_else(|| Denied::OutsideGrants {
                provider: self.provider.clone(),
                path: guest.to_owned(),
            })?;
        if write {
            let reason = if grant.access == Access::ReadOnly {
                Some("the grant is read-only")
            } else if mode == Mode::ReadOnly {
                Some("only apply and delete may change the system (this is a plan or read)")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Denied::ReadOnly {
                    provider: self.provider.clone(),
                    path: guest.to_owned(),
                    reason,
                });
            }
        }
        // Symlinks in the directories above must not lead out of the grant. A parent that
        // does not exist cannot lead anywhere; any other failure to resolve it is a denial.
        // (fs-ext then opens the path again beneath the grant's root with openat2 and
        // RESOLVE_BENEATH, so a directory swapped for a symlink in between leads nowhere.)
        if path != grant.path
            && let Some(parent) = path.parent()
        {
            let escapes = || Denied::Escapes {
                provider: self.provider.clone(),
                path: guest.to_owned(),
            };
            match parent.canonicalize() {
                Ok(real_parent) => {
                    let real_root = grant.path.canonicalize().map_err(|_| escapes())?;
                    if !real_parent.starts_with(&real_root) {
                        return Err(escapes());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => return Err(escapes()),
            }
        }
        Ok(path)
    }
}

/// Names a provider may set on its programs itself (`execution.settings.fixed-env`),
/// without a grant: each only narrows what a child does (non-interactive front ends, a
/// fixed locale, no colour). Names that load code or files (`LD_*`, `PAGER`,
/// `LOCPATH`, `TZ`, `*_OPTIONS`, `HOME`) are not here: they need an operator's `env`
/// grant, which passes Tenet's own value.
pub const FIXED_ENV_NAMES: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "DEBIAN_FRONTEND",
    "DEBCONF_NONINTERACTIVE_SEEN",
    "APT_LISTCHANGES_FRONTEND",
    "APT_LISTBUGS_FRONTEND",
    "NEEDRESTART_MODE",
    "SYSTEMD_COLORS",
    "NO_COLOR",
];
/// The only directories a fixed `PATH` may list: the system's own, which only root can
/// write. A provider's `PATH` could otherwise point a granted program (dpkg runs
/// `ldconfig` by name) at a binary the provider planted in a writable grant.
pub const FIXED_PATH_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];
/// Most fixed environment entries, and the longest value (a `PATH` of every allowed
/// directory is 60 bytes).
pub const MAX_FIXED_ENV: usize = 16;
pub const MAX_FIXED_ENV_VALUE: usize = 128;

/// Check the environment a provider wants to set on its programs: only names in
/// [`FIXED_ENV_NAMES`], each once; a `PATH` of [`FIXED_PATH_DIRS`] only; other values
/// plain words (letters, digits, `_ . - @ :` — a locale name with `/` is a file path
/// to glibc). The message names the entry.
pub fn check_fixed_env(env: &[(String, String)]) -> Result<(), String> {
    if env.len() > MAX_FIXED_ENV {
        return Err(format!(
            "{} fixed environment entries, over the limit of {MAX_FIXED_ENV}",
            env.len()
        ));
    }
    let shown = |t: &str| crate::wasm::host::truncate(t.to_owned(), 64);
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in env {
        if !FIXED_ENV_NAMES.contains(&name.as_str()) {
            return Err(format!(
                "fixed environment variable `{}` is not one a provider may set (allowed: {}); the operator can grant it with `env:` instead",
                shown(name),
                FIXED_ENV_NAMES.join(", ")
            ));
        }
        if !seen.insert(name) {
            return Err(format!("fixed environment variable `{name}` is set twice"));
        }
        if value.len() > MAX_FIXED_ENV_VALUE {
            return Err(format!(
                "fixed environment variable `{name}` has a value of {} bytes, over the limit of {MAX_FIXED_ENV_VALUE}",
                value.len()
            ));
        }
        let ok = if name == "PATH" {
            !value.is_empty() && value.split(':').all(|d| FIXED_PATH_DIRS.contains(&d))
        } else {
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-@:".contains(&b))
        };
        if !ok {
            return Err(if name == "PATH" {
                format!(
                    "fixed `PATH={}` may list only the system directories {}",
                    shown(value),
                    FIXED_PATH_DIRS.join(":")
                )
            } else {
                format!(
                    "fixed environment variable `{name}={}` may hold only letters, digits and `_ . - @ :`",
                    shown(value)
                )
            });
        }
    }
    Ok(())
}

/// One line of the requested / granted / missing report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Requirement {
    /// `fs rw /etc/app`, `exec /usr/bin/systemctl (probe)`, `net https://api:443`, `env LANG`.
    pub capability: String,
    pub reason: String,
    pub granted: bool,
}

impl Capabilities {
    /// Every grant as one line for people: `fs rw /srv/app`, `exec /usr/bin/systemctl
    /// [is-active *] (probe)`, `net https://api.example.com`, `env LANG`.
    pub fn grant_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .grants
            .iter()
            .map(|g| format!("fs {} {}", g.access, g.path.display()))
            .collect();
        for r in &self.exec {
            let args = if r.grant.args.is_empty() {
                "(no arguments)".to_owned()
            } else {
                r.grant
                    .args
                    .iter()
                    .map(|l| format!("[{}]", l.join(" ")))
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            out.push(format!(
                "exec {} {args}{}",
                r.grant.program.display(),
                if r.grant.probe { " (probe)" } else { "" }
            ));
        }
        out.extend(self.net.iter().map(|g| match &g.credentials {
            Some(c) => format!(
                "net {} (the host adds `{}` from {})",
                g.pattern, c.header, c.source
            ),
            None => format!("net {}", g.pattern),
        }));
        for g in self.net.iter().filter(|g| g.ca.is_some()) {
            if let (Some(line), Some(ca)) = (
                out.iter_mut()
                    .rev()
                    .find(|l| l.starts_with(&format!("net {}", g.pattern))),
                &g.ca,
            ) {
                line.push_str(&format!(" (TLS roots: {})", ca.path.display()));
            }
        }
        out.extend(self.env.iter().map(|e| format!("env {e}")));
        out.extend(
            self.fixed_env
                .get()
                .into_iter()
                .flatten()
                .map(|(n, v)| format!("env {n}={v} (set by the provider)")),
        );
        out
    }

    /// Each request of `requested`, and whether the grants cover it.
    pub fn requirements(&self, requested: &Requested) -> Vec<Requirement> {
        let mut out = Vec::new();
        for d in &requested.directories {
            let path = path_clean::clean(Path::new("/").join(&d.path));
            let granted = self
                .grants
                .iter()
                .any(|g| path.starts_with(&g.path) && (!d.write || g.access == Access::ReadWrite));
            out.push(Requirement {
                capability: format!("fs {} {}", if d.write { "rw" } else { "ro" }, d.path),
                reason: d.reason.clone(),
                granted,
            });
        }
        for p in &requested.programs {
            let path = Path::new(&p.program);
            let real = path.canonicalize().ok();
            let granted = self.exec.iter().any(|r| {
                let same = if p.program.contains('/') {
                    r.grant.program == path || (real.is_some() && r.real == real)
                } else {
                    r.grant
                        .program
                        .file_name()
                        .is_some_and(|n| n == p.program.as_str())
                };
                same && (!p.probe || r.grant.probe)
            });
            out.push(Requirement {
                capability: format!(
                    "exec {}{}",
                    p.program,
                    if p.probe { " (probe)" } else { "" }
                ),
                reason: p.reason.clone(),
                granted,
            });
        }
        for h in &requested.hosts {
            let granted = NetGrant::parse(&h.origin).is_ok_and(|want| match want.port {
                Some(port) => self
                    .net
                    .iter()
                    .any(|g| g.allows(&want.scheme, &want.host, port)),
                // Any port asked for: only a grant of any port covers it.
                None => self
                    .net
                    .iter()
                    .any(|g| g.port.is_none() && g.scheme == want.scheme && g.host == want.host),
            });
            out.push(Requirement {
                capability: format!("net {}", h.origin),
                reason: h.reason.clone(),
                granted,
            });
        }
        for e in &requested.env {
            out.push(Requirement {
                capability: format!("env {}", e.name),
                reason: e.reason.clone(),
                granted: self.env.contains(&e.name),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(dir: &Path, access: Access) -> Capabilities {
        Capabilities::new(
            "file",
            &Grants {
                fs: vec![FsGrant {
                    path: dir.to_path_buf(),
                    access,
                    location: None,
                }],
                ..Grants::default()
            },
        )
        .expect("grants")
    }

    fn exec(program: &str, args: &[&[&str]], probe: bool) -> Capabilities {
        Capabilities::new(
            "svc",
            &Grants {
                exec: vec![ExecGrant {
                    program: PathBuf::from(program),
                    args: args
                        .iter()
                        .map(|l| l.iter().map(|a| (*a).to_owned()).collect())
                        .collect(),
                    probe,
                }],
                net: vec![NetGrant::parse("http://127.0.0.1:*").expect("net")],
                env: vec!["LANG".into()],
                ..Grants::default()
            },
        )
        .expect("grants")
    }

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn exec_checks_program_arguments_and_mode() {
        let c = exec("/bin/sh", &[&["-c", "echo *"], &["--version", "**"]], false);
        let rw = Mode::ReadWrite;
        assert!(
            c.check_exec("/bin/sh", &strings(&["-c", "echo hi"]), rw)
                .is_ok()
        );
        assert!(c.check_exec("sh", &strings(&["--version"]), rw).is_ok());
        assert!(
            c.check_exec("sh", &strings(&["--version", "a", "b"]), rw)
                .is_ok()
        );
        assert!(matches!(
            c.check_exec("/bin/sh", &strings(&["-c", "rm -rf /"]), rw),
            Err(Denied::Arguments { .. })
        ));
        assert!(matches!(
            c.check_exec("/bin/sh", &strings(&["-c", "echo hi", "extra"]), rw),
            Err(Denied::Arguments { .. })
        ));
        assert!(matches!(
            c.check_exec("/bin/rm", &strings(&[]), rw),
            Err(Denied::ProgramNotGranted { .. })
        ));
        assert!(matches!(
            c.check_exec("bin/sh", &strings(&["--version"]), rw),
            Err(Denied::ProgramNotGranted { .. })
        ));
        assert!(matches!(
            c.check_exec("/bin/sh", &strings(&["--version"]), Mode::ReadOnly),
            Err(Denied::NotAProbe { .. })
        ));
        let probe = exec("/bin/sh", &[&["--version"]], true);
        assert!(
            probe
                .check_exec("/bin/sh", &strings(&["--version"]), Mode::ReadOnly)
                .is_ok()
        );
        // No argument lists granted: only a bare invocation.
        let bare = exec("/bin/true", &[], false);
        assert!(bare.check_exec("/bin/true", &[], rw).is_ok());
        assert!(bare.check_exec("/bin/true", &strings(&["x"]), rw).is_err());
    }

    #[test]
    fn wildcards_do_not_let_options_in() {
        let c = exec(
            "/usr/bin/git",
            &[&["pull", "*"], &["log", "--oneline", "**"]],
            false,
        );
        let rw = Mode::ReadWrite;
        assert!(
            c.check_exec("git", &strings(&["pull", "origin"]), rw)
                .is_ok()
        );
        assert!(matches!(
            c.check_exec("git", &strings(&["pull", "--upload-pack=touch /tmp/x"]), rw),
            Err(Denied::Arguments { .. })
        ));
        assert!(
            c.check_exec("git", &strings(&["log", "--oneline", "-n", "3"]), rw)
                .is_ok()
        );
    }

    #[test]
    fn during_a_plan_an_apply_program_is_a_mutation_whatever_its_arguments() {
        let c = exec("/bin/sh", &[&["-c", "true"]], false);
        assert!(matches!(
            c.check_exec("/bin/sh", &strings(&["-c", "rm -rf /"]), Mode::ReadOnly),
            Err(Denied::NotAProbe { .. })
        ));
    }

    #[test]
    fn a_working_directory_cannot_leave_the_grant_through_a_symlink() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(d.path().join("inside")).expect("mkdir");
        std::os::unix::fs::symlink("/", d.path().join("up")).expect("symlink");
        let g = grants(d.path(), Access::ReadWrite);
        let inside = format!("{}/inside", d.path().display());
        assert_eq!(
            g.resolve_dir(&inside, Mode::ReadWrite).expect("inside"),
            d.path().join("inside").canonicalize().expect("real")
        );
        let up = format!("{}/up", d.path().display());
        assert!(matches!(
            g.resolve_dir(&up, Mode::ReadWrite),
            Err(Denied::Escapes { .. })
        ));
    }

    #[test]
    fn a_provider_may_fix_only_narrowing_environment_values() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            check_fixed_env(&env(&[
                ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                ("DEBIAN_FRONTEND", "noninteractive"),
                ("LC_ALL", "C.UTF-8"),
            ])),
            Ok(())
        );
        // What an attacker would try: code loading, a planted PATH, a locale file path,
        // a value that smuggles a second variable, a name set twice.
        for (bad, why) in [
            (env(&[("LD_PRELOAD", "/tmp/x.so")]), "LD_PRELOAD"),
            (env(&[("PAGER", "sh")]), "PAGER"),
            (env(&[("PATH", "/tmp/evil:/usr/bin")]), "system directories"),
            (env(&[("PATH", "")]), "system directories"),
            (env(&[("PATH", "/usr/bin/../../tmp")]), "system directories"),
            (env(&[("LC_ALL", "/tmp/locale")]), "letters, digits"),
            (env(&[("LANG", "C\nLD_PRELOAD=x")]), "letters, digits"),
            (env(&[("LANG", "C"), ("LANG", "C")]), "twice"),
        ] {
            let err = check_fixed_env(&bad).expect_err(why);
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn the_operators_grant_wins_over_the_providers_fixed_value() {
        let c = Capabilities::new(
            "apt",
            &Grants {
                env: vec!["PATH".into()],
                ..Grants::default()
            },
        )
        .expect("grants");
        c.set_fixed_env(vec![
            ("PATH".into(), "/usr/bin".into()),
            ("LC_ALL".into(), "C".into()),
        ]);
        let env = c.child_env();
        assert!(env.contains(&("LC_ALL".into(), "C".into())));
        let path: Vec<_> = env.iter().filter(|(n, _)| n == "PATH").collect();
        assert_eq!(path.len(), 1, "{env:?}");
        assert_eq!(Some(path[0].1.clone()), std::env::var("PATH").ok());
        assert!(
            c.grant_lines()
                .contains(&"env LC_ALL=C (set by the provider)".to_owned())
        );
    }

    #[test]
    fn exec_env_needs_a_grant() {
        let c = exec("/bin/true", &[], false);
        assert!(c.check_env("LANG").is_ok());
        assert!(matches!(
            c.check_env("LD_PRELOAD"),
            Err(Denied::Env { name, .. }) if name == "LD_PRELOAD"
        ));
    }

    #[test]
    fn exec_matches_by_real_path() {
        let d = tempfile::tempdir().expect("tmp");
        let link = d.path().join("true");
        std::os::unix::fs::symlink("/bin/true", &link).expect("symlink");
        let c = exec(link.to_str().expect("utf-8"), &[], false);
        // The real program behind the granted symlink is the same program.
        let real = Path::new("/bin/true").canonicalize().expect("real");
        assert!(
            c.check_exec(real.to_str().expect("utf-8"), &[], Mode::ReadWrite)
                .is_ok()
        );
        // A symlink to another program does not pass for the granted one.
        let other = d.path().join("other");
        std::os::unix::fs::symlink("/bin/false", &other).expect("symlink");
        assert!(
            c.check_exec(other.to_str().expect("utf-8"), &[], Mode::ReadWrite)
                .is_err()
        );
    }

    #[test]
    fn http_checks_origin_and_method() {
        let c = exec("/bin/true", &[], false);
        assert!(
            c.check_http("POST", "http", "127.0.0.1", 8080, Mode::ReadWrite)
                .is_ok()
        );
        assert!(
            c.check_http("GET", "http", "127.0.0.1", 8080, Mode::ReadOnly)
                .is_ok()
        );
        assert!(matches!(
            c.check_http("DELETE", "http", "127.0.0.1", 8080, Mode::ReadOnly),
            Err(Denied::Method { .. })
        ));
        assert!(matches!(
            c.check_http("GET", "https", "127.0.0.1", 443, Mode::ReadWrite),
            Err(Denied::Net { .. })
        ));
        assert!(matches!(
            c.check_http("GET", "http", "example.com", 80, Mode::ReadWrite),
            Err(Denied::Net { .. })
        ));
        let g = NetGrant::parse("https://*.example.com").expect("parse");
        assert!(g.allows("https", "api.Example.com", 443));
        assert!(!g.allows("https", "example.com", 443));
        assert!(!g.allows("https", "evil-example.com", 443));
        assert!(!g.allows("https", "api.example.com", 8443));
        assert!(NetGrant::parse("ftp://x").is_err());
        assert!(NetGrant::parse("https://x/path").is_err());
        assert!(NetGrant::parse("https://a*b.com").is_err());
        let v6 = NetGrant::parse("http://[::1]").expect("IPv6");
        assert!(v6.allows("http", "[::1]", 80));
        assert!(
            NetGrant::parse("http://[::1]:*")
                .expect("IPv6")
                .allows("http", "[::1]", 8080)
        );
    }

    #[test]
    fn resolves_inside_and_refuses_outside() {
        let d = tempfile::tempdir().expect("tmp");
        let g = grants(d.path(), Access::ReadWrite);
        let inside = format!("{}/a/../b", d.path().display());
        assert_eq!(
            g.resolve(&inside, true, Mode::ReadWrite).expect("inside"),
            d.path().join("b")
        );
        let escape = format!("{}/../etc/passwd", d.path().display());
        assert!(matches!(
            g.resolve(&escape, false, Mode::ReadWrite),
            Err(Denied::OutsideGrants { .. })
        ));
    }

    #[test]
    fn writes_need_rw_grant_and_rw_mode() {
        let d = tempfile::tempdir().expect("tmp");
        let p = format!("{}/x", d.path().display());
        let rw = grants(d.path(), Access::ReadWrite);
        let err = rw.resolve(&p, true, Mode::ReadOnly).expect_err("plan");
        assert!(err.to_string().contains("only apply and delete"), "{err}");
        assert!(rw.resolve(&p, false, Mode::ReadOnly).is_ok());
        let ro = grants(d.path(), Access::ReadOnly);
        let err = ro.resolve(&p, true, Mode::ReadWrite).expect_err("ro grant");
        assert!(err.to_string().contains("read-only"), "{err}");
    }

    #[test]
    fn symlinked_directory_cannot_escape() {
        let d = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).expect("symlink");
        let g = grants(d.path(), Access::ReadWrite);
        let p = format!("{}/link/file", d.path().display());
        assert!(matches!(
            g.resolve(&p, true, Mode::ReadWrite),
            Err(Denied::Escapes { .. })
        ));
    }
}
