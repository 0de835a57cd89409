//! `tenet:host/fs-ext`: stat, chmod and chown — what WASI lacks — only inside the
//! provider's grants, and chmod/chown only while the operation may write.
//!
//! A path is checked against the grants, then used through file descriptors opened
//! beneath its grant's root (`openat2` with `RESOLVE_BENEATH`): the directories above it
//! are resolved by the kernel, inside the grant, at the moment of use, and the last
//! component is never followed. So a directory swapped for a symlink between the check
//! and the call (by anything outside the sandbox) cannot redirect a chmod, chown or stat.

use super::{HostState, MAX_PATH_BYTES};
use crate::wasm::bindings::tenet::host::fs_ext::{FileKind, FileStat, FsError, Host};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The directory holding `path`'s last component, opened beneath its grant without
/// leaving it, and that component's name (`.` for the grant itself). `root` is the grant
/// as written (`path` starts with it); `seen` is where it resolved when it was checked,
/// opened with no symlink allowed on the way, so a grant swapped since leads nowhere.
fn beneath(root: &Path, seen: &Path, path: &Path) -> std::io::Result<(OwnedFd, OsString)> {
    let rel = path.strip_prefix(root).unwrap_or(Path::new(""));
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let slash = rustix::fs::open("/", dir_flags, Mode::empty())?;
    let seen_rel = seen.strip_prefix("/").unwrap_or(seen);
    let root_fd = if seen_rel.as_os_str().is_empty() {
        slash
    } else {
        open_within(&slash, seen_rel, ResolveFlags::NO_SYMLINKS)?
    };
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => (parent, name.to_owned()),
        _ => return Ok((root_fd, OsString::from("."))),
    };
    if parent.as_os_str().is_empty() {
        return Ok((root_fd, name));
    }
    let dir = open_within(
        &root_fd,
        parent,
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )?;
    Ok((dir, name))
}

/// A directory opened with `openat2` and `resolve`; where the kernel has no `openat2`
/// (before Linux 5.6, or a seccomp filter that hides it), one component at a time with
/// no symlink followed at all (stricter than `RESOLVE_BENEATH`, never looser).
fn open_within(dir: &OwnedFd, rel: &Path, resolve: ResolveFlags) -> std::io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::openat2(dir, rel, flags, Mode::empty(), resolve) {
        Err(rustix::io::Errno::NOSYS) => open_by_components(dir, rel),
        other => other.map_err(Into::into),
    }
}

/// [`open_within`] without `openat2`.
fn open_by_components(dir: &OwnedFd, rel: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut at: Option<OwnedFd> = None;
    for part in rel.components() {
        let std::path::Component::Normal(name) = part else {
            // Paths were cleaned: `..` and `.` cannot be here; refuse rather than guess.
            return Err(rustix::io::Errno::XDEV.into());
        };
        let next = rustix::fs::openat(
            at.as_ref().unwrap_or(dir),
            name,
            flags | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| {
            // A symlink where a directory was expected: it could lead anywhere.
            if e == rustix::io::Errno::NOTDIR || e == rustix::io::Errno::LOOP {
                rustix::io::Errno::XDEV
            } else {
                e
            }
        })?;
        at = Some(next);
    }
    match at {
        Some(fd) => Ok(fd),
        None => Ok(rustix::io::dup(dir)?),
    }
}

impl HostState {
    /// Resolve `path` for an fs-ext call, or produce the guest-visible denial (also
    /// logged, naming provider, resource, operation and capability).
    fn fs_path(&mut self, call: &str, path: &str, write: bool) -> Result<PathBuf, FsError> {
        if path.len() > MAX_PATH_BYTES {
            return Err(FsError::Io(format!(
                "path longer than {MAX_PATH_BYTES} bytes"
            )));
        }
        let resolved = self.grants.resolve(path, write, self.mode);
        resolved.map_err(|denied| {
            let capability = if write { "fs write" } else { "fs read" };
            FsError::Denied(self.deny(&format!("{call} {path}"), &denied, capability, write))
        })
    }
}

/// An operating-system failure. `denied` is reserved for the sandbox's refusals, so an
/// OS permission error (EACCES, EPERM) is reported as `io`, saying so.
fn io_error(path: &str, e: &std::io::Error) -> FsError {
    match e.kind() {
        ErrorKind::NotFound => FsError::NotFound(format!("{path}: {e}")),
        ErrorKind::PermissionDenied => {
            FsError::Io(format!("{path}: the operating system refused: {e}"))
        }
        _ => FsError::Io(format!("{path}: {e}")),
    }
}

impl HostState {
    /// `path` checked against the grants, then opened beneath its grant: the parent
    /// directory's descriptor and the last component's name.
    fn fs_beneath(
        &mut self,
        call: &str,
        path: &str,
        write: bool,
    ) -> Result<Result<(OwnedFd, OsString), std::io::Error>, FsError> {
        let host = self.fs_path(call, path, write)?;
        let Some((root, seen)) = self
            .grants
            .root_of(&host)
            .map(|(r, s)| (r.to_path_buf(), s.to_path_buf()))
        else {
            return Err(FsError::Io(format!("{path}: no grant holds it")));
        };
        match beneath(&root, &seen, &host) {
            // The grant itself resolves elsewhere than when it was checked.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                Err(FsError::Io(format!(
                    "{path}: its granted directory {} no longer resolves to {} as when it was checked",
                    root.display(),
                    seen.display()
                )))
            }
            // A symlink on the way leads out of the grant (or is a /proc magic link).
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
                let denied = crate::wasm::grants::Denied::Escapes {
                    provider: self.grants.provider().to_owned(),
                    path: path.to_owned(),
                };
                let capability = if write { "fs write" } else { "fs read" };
                Err(FsError::Denied(self.deny(
                    &format!("{call} {path}"),
                    &denied,
                    capability,
                    write,
                )))
            }
            other => Ok(other),
        }
    }
}

impl Host for HostState {
    fn stat(&mut self, path: String) -> wasmtime::Result<Result<Option<FileStat>, FsError>> {
        let opened = match self.fs_beneath("stat", &path, false) {
            Ok(o) => o,
            Err(e) => return Ok(Err(e)),
        };
        let stat = opened.and_then(|(dir, name)| {
            rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into)
        });
        Ok(match stat {
            Ok(st) => {
                let kind = match FileType::from_raw_mode(st.st_mode) {
                    FileType::Symlink => FileKind::Symlink,
                    FileType::Directory => FileKind::Directory,
                    FileType::RegularFile => FileKind::File,
                    _ => FileKind::Other,
                };
                Ok(Some(FileStat {
                    kind,
                    mode: st.st_mode & 0o7777,
                    uid: st.st_uid,
                    gid: st.st_gid,
                    size: u64::try_from(st.st_size).unwrap_or(0),
                }))
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(io_error(&path, &e)),
        })
    }

    fn chmod(&mut self, path: String, mode: u32) -> wasmtime::Result<Result<(), FsError>> {
        let opened = match self.fs_beneath("chmod", &path, true) {
            Ok(o) => o,
            Err(e) => return Ok(Err(e)),
        };
        // The object itself, not followed if it is a symlink: Linux cannot chmod a
        // symlink, and following it could leave the grant.
        let target = opened.and_then(|(dir, name)| {
            let fd = rustix::fs::openat2(
                &dir,
                &name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH,
            )?;
            let st = rustix::fs::fstat(&fd)?;
            Ok((fd, FileType::from_raw_mode(st.st_mode)))
        });
        Ok(match target {
            Ok((_, FileType::Symlink)) => Err(FsError::Io(format!(
                "{path} is a symlink; chmod is not applied through symlinks"
            ))),
            // Through the descriptor: the very inode opened above, wherever names move.
            Ok((fd, _)) => std::fs::set_permissions(
                format!("/proc/self/fd/{}", fd.as_raw_fd()),
                std::fs::Permissions::from_mode(mode & 0o7777),
            )
            .map_err(|e| io_error(&path, &e)),
            Err(e) => Err(io_error(&path, &e)),
        })
    }

    fn chown(
        &mut self,
        path: String,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> wasmtime::Result<Result<(), FsError>> {
        let opened = match self.fs_beneath("chown", &path, true) {
            Ok(o) => o,
            Err(e) => return Ok(Err(e)),
        };
        Ok(opened
            .and_then(|(dir, name)| {
                rustix::fs::chownat(
                    &dir,
                    &name,
                    uid.map(rustix::fs::Uid::from_raw),
                    gid.map(rustix::fs::Gid::from_raw),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(Into::into)
            })
            .map_err(|e| io_error(&path, &e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Access, FsGrant, Grants};
    use crate::wasm::grants::Capabilities;

    /// Regression (issue 12): fs-ext checked a path and then used it by path, so a
    /// directory swapped for a symlink in between redirected the call.
    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_check_leads_nowhere() {
        let root = tempfile::tempdir().expect("root");
        let outside = tempfile::tempdir().expect("outside");
        std::fs::write(outside.path().join("victim"), "x").expect("victim");
        std::fs::create_dir(root.path().join("sub")).expect("sub");
        std::fs::write(root.path().join("sub/victim"), "mine").expect("mine");
        let grants = Capabilities::new(
            "p",
            &Grants {
                fs: vec![FsGrant {
                    path: root.path().to_path_buf(),
                    access: Access::ReadWrite,
                    location: None,
                }],
                ..Grants::default()
            },
        )
        .expect("grants");
        let guest = format!("{}/sub/victim", root.path().display());
        let checked = grants
            .resolve(&guest, true, crate::wasm::grants::Mode::ReadWrite)
            .expect("inside");
        let (at, seen) = grants.root_of(&checked).expect("root");
        assert!(
            beneath(at, seen, &checked).is_ok(),
            "a real directory inside"
        );

        // Swapped after the check, before the use.
        std::fs::rename(root.path().join("sub"), root.path().join("old")).expect("mv");
        std::os::unix::fs::symlink(outside.path(), root.path().join("sub")).expect("ln");
        let err = beneath(at, seen, &checked).expect_err("the swap must not lead out");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::XDEV.raw_os_error())
        );

        // A relative link that stays inside is fine.
        std::fs::remove_file(root.path().join("sub")).expect("rm");
        std::os::unix::fs::symlink("old", root.path().join("sub")).expect("ln");
        let (dir, name) = beneath(at, seen, &checked).expect("inside through a link");
        let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).expect("stat");
        assert_eq!(st.st_size, 4);

        // Without openat2: component by component, no symlink followed at all.
        let slash =
            rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).expect("/");
        let rel = root.path().strip_prefix("/").expect("abs").to_path_buf();
        std::fs::remove_file(root.path().join("sub")).expect("rm");
        std::os::unix::fs::symlink(outside.path(), root.path().join("sub")).expect("ln");
        assert!(open_by_components(&slash, &rel.join("old")).is_ok());
        let err = open_by_components(&slash, &rel.join("sub")).expect_err("a symlink");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::XDEV.raw_os_error())
        );
    }

    /// The grant itself replaced by a symlink after it was checked: refused.
    #[test]
    fn a_grant_that_resolves_elsewhere_than_when_checked_is_not_opened() {
        let base = tempfile::tempdir().expect("base");
        let outside = tempfile::tempdir().expect("outside");
        let granted = base.path().join("granted");
        std::fs::create_dir(&granted).expect("granted");
        let grants = Capabilities::new(
            "p",
            &Grants {
                fs: vec![FsGrant {
                    path: granted.clone(),
                    access: Access::ReadWrite,
                    location: None,
                }],
                ..Grants::default()
            },
        )
        .expect("grants");
        std::fs::remove_dir(&granted).expect("rmdir");
        std::os::unix::fs::symlink(outside.path(), &granted).expect("ln");
        let pipe = || wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(16);
        let Err(err) = grants.wasi_ctx(crate::wasm::grants::Mode::ReadWrite, pipe(), pipe()) else {
            panic!("a swapped grant was opened");
        };
        assert!(err.to_string().contains("now resolves to"), "{err}");
        let checked = granted.join("x");
        let (at, seen) = grants.root_of(&checked).expect("root");
        let err = beneath(at, seen, &checked).expect_err("fs-ext too");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
    }
}
