//! Replacing a file so that every reader, and the disk after a crash or a power cut,
//! sees either the old bytes or the new ones, never a mix: the bytes go to a temporary
//! file in the same directory (so the rename stays on one file system), are flushed to
//! the disk (`fsync`), the file is renamed over the target, and the directory is flushed
//! too, so the rename itself survives. The temporary file is created `0600` and keeps
//! that mode; on any failure before the rename it is removed and the target is untouched.
//! Flushing the directory is best effort: some file systems refuse it (FUSE, 9p, CIFS),
//! and a directory may be writable but not readable; the file is in place either way.
//!
//! Used for everything Tenet writes whole for itself: saved plans, `tenet.lock`, bundles,
//! the plugin store's references and signatures, compiled code in the compile cache.
//! (SQLite keeps its own journal; the `file` provider, a guest, does its own atomic
//! writes through WASI; detached `.minisig` files written for the operator to publish keep
//! the operator's umask and are written in place.)

use std::io::{self, Write};
use std::path::Path;

/// Replace `path` with `bytes`, durably.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_parts(path, &[bytes])
}

/// Replace `path` with the concatenation of `parts`, durably.
pub fn write_parts(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    for part in parts {
        tmp.write_all(part)?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// A directory holding `files`, each flushed to the disk, built under a temporary name
/// (starting with `prefix`) in `parent`: the caller renames it into place, then calls
/// [`sync_dir`] on `parent`. Removed when dropped unless kept.
pub fn stage_dir(
    parent: &Path,
    prefix: &str,
    files: &[(&str, &[u8])],
) -> io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
    for (name, data) in files {
        let mut f = std::fs::File::create(dir.path().join(name))?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    sync_dir(dir.path());
    Ok(dir)
}

/// Flush a directory's entries (a rename or a new file in it) to the disk, if the file
/// system allows it (see the module's doc).
pub fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), "directory not flushed: {e}");
    }
}

/// The directory `path` is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        write(&path, b"old").expect("write");
        write_parts(&path, &[b"ne", b"w"]).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let entries = std::fs::read_dir(dir.path()).expect("ls").count();
        assert_eq!(entries, 1, "no temporary file left");
    }

    #[test]
    fn a_failed_write_leaves_the_target_untouched() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        write(&path, b"old").expect("write");
        // A directory cannot be renamed over by a file.
        let target = dir.path().join("d");
        std::fs::create_dir(&target).expect("dir");
        std::fs::write(target.join("x"), "x").expect("x");
        assert!(write(&target, b"new").is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        let entries = std::fs::read_dir(dir.path()).expect("ls").count();
        assert_eq!(entries, 2, "no temporary file left");
    }
}
