//! Capabilities: what the operator granted one provider, turned into a WASI context per
//! access mode and checked again on every `fs-ext` host call.
//!
//! Nothing is granted by default (no env, no stdio, no network, no directories). Each fs
//! grant is mirrored into the guest at its own absolute path, so the provider sees the
//! same paths the operator wrote. The access mode follows the operation, not just the
//! grant: during `describe`, `validate`, `read` and `diff` every grant is read-only — a
//! plan can never change the system — and only `apply` and `delete` get the `rw` grants
//! as writable.
//!
//! A granted directory that does not exist yet is shown to read-only calls as an empty
//! directory (so a plan honestly reports "create"), and is created by the host the first
//! time a writable context is built for an `rw` grant.

use crate::manifest::{Access, FsGrant, Grants};
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
}

/// The fs grants of one provider.
#[derive(Debug)]
pub struct FsGrants {
    provider: String,
    grants: Vec<FsGrant>,
    /// Stands in for granted directories that do not exist yet, in read-only contexts.
    empty: tempfile::TempDir,
}

impl FsGrants {
    pub fn new(provider: &str, grants: &Grants) -> io::Result<Self> {
        Ok(FsGrants {
            provider: provider.to_owned(),
            grants: grants.fs.clone(),
            empty: tempfile::Builder::new().prefix("tenet-empty-").tempdir()?,
        })
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn grants(&self) -> &[FsGrant] {
        &self.grants
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
        b.stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // File I/O on the calling thread instead of a hop to the blocking pool per
            // operation; each call runs on its own task, so a stuck one cannot hold the
            // deadline (see `plugin::wasm`).
            .allow_blocking_current_thread(true);
        for g in &self.grants {
            let writable = mode == Mode::ReadWrite && g.access == Access::ReadWrite;
            if writable && !g.path.exists() {
                std::fs::create_dir_all(&g.path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create granted directory {}: {e}", g.path.display()),
                    )
                })?;
            }
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
        // (Checked, then used by path: a process outside the sandbox racing to swap a
        // directory for a symlink in between is not defended against yet.)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(dir: &Path, access: Access) -> FsGrants {
        FsGrants::new(
            "file",
            &Grants {
                fs: vec![FsGrant {
                    path: dir.to_path_buf(),
                    access,
                }],
            },
        )
        .expect("grants")
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
