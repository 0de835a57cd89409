//! `tenet:host/fs-ext`: stat, chmod and chown — what WASI lacks — only inside the
//! provider's grants, and chmod/chown only while the operation may write.

use super::{HostState, MAX_PATH_BYTES};
use crate::plugin::bindings::tenet::host::fs_ext::{FileKind, FileStat, FsError, Host};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

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

impl Host for HostState {
    fn stat(&mut self, path: String) -> wasmtime::Result<Result<Option<FileStat>, FsError>> {
        let host = match self.fs_path("stat", &path, false) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match std::fs::symlink_metadata(&host) {
            Ok(m) => {
                let ft = m.file_type();
                let kind = if ft.is_symlink() {
                    FileKind::Symlink
                } else if ft.is_dir() {
                    FileKind::Directory
                } else if ft.is_file() {
                    FileKind::File
                } else {
                    FileKind::Other
                };
                Ok(Some(FileStat {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    size: m.len(),
                }))
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(io_error(&path, &e)),
        })
    }

    fn chmod(&mut self, path: String, mode: u32) -> wasmtime::Result<Result<(), FsError>> {
        let host = match self.fs_path("chmod", &path, true) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        // Linux cannot chmod a symlink itself, and following it could leave the grant.
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                return Ok(Err(FsError::Io(format!(
                    "{path} is a symlink; chmod is not applied through symlinks"
                ))));
            }
            Err(e) => return Ok(Err(io_error(&path, &e))),
            Ok(_) => {}
        }
        Ok(
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(|e| io_error(&path, &e)),
        )
    }

    fn chown(
        &mut self,
        path: String,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> wasmtime::Result<Result<(), FsError>> {
        let host = match self.fs_path("chown", &path, true) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        Ok(std::os::unix::fs::lchown(&host, uid, gid).map_err(|e| io_error(&path, &e)))
    }
}
