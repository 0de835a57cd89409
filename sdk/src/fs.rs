//! Ownership and permission bits through the host's `tenet:host/fs-ext` interface.
//!
//! WASI 0.2 has no modes, owners or groups; the host provides them, inside the
//! directories granted to the provider only. Built natively (unit tests) the same
//! functions use the host's own file system.

/// Create the symbolic link `link` pointing at `target` (written as given, not
/// resolved), through the granted directory that holds `link` (std's `symlink_path` is
/// still unstable on WASI). Natively (unit tests), std's own.
pub fn symlink(target: &str, link: &std::path::Path) -> std::io::Result<()> {
    imp_link::symlink(target, link)
}

#[cfg(target_family = "wasm")]
mod imp_link {
    use std::io::ErrorKind;
    use std::path::Path;
    use wasip2::filesystem::{preopens, types::ErrorCode};

    pub fn symlink(target: &str, link: &Path) -> std::io::Result<()> {
        let dirs = preopens::get_directories();
        let (dir, rel) = dirs
            .iter()
            .filter_map(|(d, root)| link.strip_prefix(root).ok().map(|rel| (d, rel, root.len())))
            .max_by_key(|(_, _, len)| *len)
            .map(|(d, rel, _)| (d, rel))
            .ok_or_else(|| {
                std::io::Error::new(
                    ErrorKind::PermissionDenied,
                    format!("{} is outside every granted directory", link.display()),
                )
            })?;
        dir.symlink_at(target, &rel.to_string_lossy()).map_err(|e| {
            let kind = match e {
                ErrorCode::Exist => ErrorKind::AlreadyExists,
                ErrorCode::NoEntry => ErrorKind::NotFound,
                ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => {
                    ErrorKind::PermissionDenied
                }
                _ => ErrorKind::Other,
            };
            std::io::Error::new(kind, format!("symlink: {e:?}"))
        })
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp_link {
    pub fn symlink(target: &str, link: &std::path::Path) -> std::io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
}

/// What a path names. [`stat`] never follows a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A device, socket or fifo.
    Other,
}

impl FileKind {
    /// Lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Other => "special file",
        }
    }
}

/// Metadata WASI does not expose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// What the path names.
    pub kind: FileKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsError {
    /// Outside the grants, or write access needed and not held now.
    Denied(String),
    /// The path does not exist.
    NotFound(String),
    /// Any other failure.
    Io(String),
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsError::Denied(m) => write!(f, "denied: {m}"),
            FsError::NotFound(m) => write!(f, "not found: {m}"),
            FsError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for FsError {}

impl From<FsError> for crate::Error {
    fn from(e: FsError) -> Self {
        match e {
            FsError::Denied(m) => crate::Error::CapabilityDenied(m),
            FsError::NotFound(m) => crate::Error::NotFound(m),
            FsError::Io(m) => crate::Error::Internal(m),
        }
    }
}

/// Metadata of `path`, or `None` when nothing is there.
pub fn stat(path: &str) -> Result<Option<Stat>, FsError> {
    imp::stat(path)
}

/// Set the permission bits of `path`.
pub fn chmod(path: &str, mode: u32) -> Result<(), FsError> {
    imp::chmod(path, mode)
}

/// Change owner and/or group of `path`.
pub fn chown(path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<(), FsError> {
    imp::chown(path, uid, gid)
}

#[cfg(target_family = "wasm")]
mod imp {
    use super::{FileKind, FsError, Stat};
    use crate::__bindings::tenet::host::fs_ext as wit;

    fn err(e: wit::FsError) -> FsError {
        match e {
            wit::FsError::Denied(m) => FsError::Denied(m),
            wit::FsError::NotFound(m) => FsError::NotFound(m),
            wit::FsError::Io(m) => FsError::Io(m),
        }
    }

    pub fn stat(path: &str) -> Result<Option<Stat>, FsError> {
        let s = wit::stat(path).map_err(err)?;
        Ok(s.map(|s| Stat {
            kind: match s.kind {
                wit::FileKind::File => FileKind::File,
                wit::FileKind::Directory => FileKind::Directory,
                wit::FileKind::Symlink => FileKind::Symlink,
                wit::FileKind::Other => FileKind::Other,
            },
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            size: s.size,
        }))
    }

    pub fn chmod(path: &str, mode: u32) -> Result<(), FsError> {
        wit::chmod(path, mode).map_err(err)
    }

    pub fn chown(path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<(), FsError> {
        wit::chown(path, uid, gid).map_err(err)
    }
}

#[cfg(all(not(target_family = "wasm"), unix))]
mod imp {
    use super::{FileKind, FsError, Stat};
    use std::io::ErrorKind;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn err(path: &str, e: std::io::Error) -> FsError {
        match e.kind() {
            ErrorKind::NotFound => FsError::NotFound(format!("{path}: {e}")),
            ErrorKind::PermissionDenied => FsError::Denied(format!("{path}: {e}")),
            _ => FsError::Io(format!("{path}: {e}")),
        }
    }

    pub fn stat(path: &str) -> Result<Option<Stat>, FsError> {
        match std::fs::symlink_metadata(path) {
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
                Ok(Some(Stat {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    size: m.len(),
                }))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(path, e)),
        }
    }

    pub fn chmod(path: &str, mode: u32) -> Result<(), FsError> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| err(path, e))
    }

    pub fn chown(path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<(), FsError> {
        std::os::unix::fs::lchown(path, uid, gid).map_err(|e| err(path, e))
    }
}
