//! The on-disk cache of compiled components. Compiling a component with Cranelift takes
//! from a third of a second (Rust) to many seconds (Python); loading a cached artifact
//! takes about a millisecond. Entries are keyed by the component's sha256 and the
//! engine's compatibility hash (wasmtime version, target, settings) and written
//! atomically (temporary file + rename).
//!
//! An entry is native code the host will execute, so it is trusted only when it is known
//! to be ours, whoever else could write the file (another local user, a restored backup,
//! a provider whose grant reached the cache, a flipped bit):
//! - the cache directory and each entry must be owned by the current user and not
//!   writable by group or others, and are opened without following symlinks;
//! - each entry starts with an HMAC-SHA256 tag over its name and code, keyed by a
//!   per-user secret kept 0600 outside the cache (`$TENET_CACHE_KEY`, else
//!   `~/.local/share/tenet/cache.key`), checked before anything is deserialized: a cache
//!   copied from another user or machine, or restored from a backup, carries no valid
//!   tag;
//! - the bytes are read into memory and deserialized from there, never mapped from the
//!   file (a file mapped while someone rewrites it changes code under the process: seen
//!   as SIGBUS).
//!
//! Anything off is a warning and a recompile; the run goes on.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

type Tag = Hmac<Sha256>;
/// Bytes of the HMAC-SHA256 tag at the start of every entry.
const TAG_LEN: usize = 32;
/// Bytes of the per-user key.
const KEY_LEN: usize = 32;
/// Largest entry read back: compiled code of the 18 MB Python provider is ~60 MB; an
/// entry past this is not ours and is not read into memory.
const MAX_ENTRY_BYTES: u64 = 1 << 30;
/// Domain separation for the tag, versioned with the entry format.
const TAG_CONTEXT: &[u8] = b"tenet compiled component v1\0";

/// The compile cache; counts compilations, hits and refused entries so callers and
/// tests can tell.
#[derive(Debug)]
pub struct CompileCache {
    root: Option<PathBuf>,
    key_file: Option<PathBuf>,
    key: OnceLock<Option<[u8; KEY_LEN]>>,
    pub compiled: AtomicUsize,
    pub hits: AtomicUsize,
    pub refused: AtomicUsize,
}

/// Why a cache entry or the cache itself is not trusted.
#[derive(Debug, thiserror::Error)]
enum Untrusted {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path} is owned by uid {owner}, not by this user (uid {me})")]
    Owner { path: String, owner: u32, me: u32 },
    #[error("{path} is writable by group or others (mode {mode:o})")]
    Writable { path: String, mode: u32 },
    #[error("{path} is readable by group or others (mode {mode:o})")]
    Readable { path: String, mode: u32 },
    #[error("{path} is not a regular file")]
    NotAFile { path: String },
    #[error("{path} is too large ({size} bytes) to be a cache entry")]
    TooLarge { path: String, size: u64 },
    #[error("{path} does not carry this user's key: written by someone else, or damaged")]
    Tag { path: String },
}

impl CompileCache {
    /// `root: None` disables the cache (every load compiles). Entries live in
    /// `ROOT/compiled`; the key is [`Self::default_key_file`].
    pub fn new(root: Option<PathBuf>) -> Self {
        Self::with_key_file(root, Self::default_key_file())
    }

    /// A cache keyed by the secret in `key_file` (created if missing); without one,
    /// nothing can be trusted and every load compiles.
    pub fn with_key_file(root: Option<PathBuf>, key_file: Option<PathBuf>) -> Self {
        CompileCache {
            root,
            key_file,
            key: OnceLock::new(),
            compiled: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    /// The default location: `$TENET_CACHE_DIR`, else the user's cache directory.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("TENET_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("tenet")))
    }

    /// Where the per-user key lives: `$TENET_CACHE_KEY`, else the user's data directory.
    pub fn default_key_file() -> Option<PathBuf> {
        std::env::var_os("TENET_CACHE_KEY")
            .map(PathBuf::from)
            .or_else(|| dirs::data_dir().map(|d| d.join("tenet").join("cache.key")))
    }

    /// The directory the cache owns, if enabled.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The file holding the cache's key.
    pub fn key_file(&self) -> Option<&Path> {
        self.key_file.as_deref()
    }

    fn entries(&self) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join("compiled"))
    }

    fn suffix(engine: &Engine) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        format!("-{:016x}.cwasm", h.finish())
    }

    /// The per-user key, created on first use; `None` (cache off, with a warning) when
    /// the cache's directories or key are not this user's alone.
    fn key(&self) -> Option<&[u8; KEY_LEN]> {
        self.key
            .get_or_init(|| {
                let root = self.root.as_ref()?;
                let Some(key_file) = &self.key_file else {
                    tracing::warn!(cache = %root.display(), "compile cache disabled: no place for its key (set TENET_CACHE_KEY)");
                    return None;
                };
                match open_key(root, key_file) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        tracing::warn!(cache = %root.display(), "compile cache disabled: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Remove every entry that is not for this engine or not for one of the `keep`
    /// digests, and stray temporary files; returns (entries removed, bytes freed, kept).
    pub fn gc(
        &self,
        engine: &Engine,
        keep: &std::collections::BTreeSet<String>,
    ) -> std::io::Result<(usize, u64, usize)> {
        let Some(dir) = self.entries() else {
            return Ok((0, 0, 0));
        };
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0, 0)),
            other => other?,
        };
        let suffix = Self::suffix(engine);
        let (mut removed, mut freed, mut kept) = (0, 0, 0);
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let wanted = name
                .strip_suffix(&suffix)
                .is_some_and(|digest| keep.contains(digest));
            if wanted {
                kept += 1;
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_file() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
                freed += meta.len();
            }
        }
        Ok((removed, freed, kept))
    }

    /// The compiled component for `bytes` (whose sha256 is `sha256`).
    pub fn load(&self, engine: &Engine, sha256: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        let name = format!("{sha256}{}", Self::suffix(engine));
        let cached = self
            .entries()
            .zip(self.key())
            .map(|(dir, key)| (dir.join(&name), key));
        if let Some((path, key)) = &cached {
            let started = std::time::Instant::now();
            match read_entry(path, &name, key) {
                Ok(None) => {}
                Ok(Some((entry, timing))) => {
                    let code = &entry[TAG_LEN..];
                    let verified = started.elapsed();
                    // SAFETY: `code` is in memory (not a mapped file), and its tag proves
                    // this user's key wrote it for this name: it is what `store` wrote
                    // from `Engine::precompile_component` output for these bytes.
                    #[allow(unsafe_code)]
                    match unsafe { Component::deserialize(engine, code) } {
                        Ok(c) => {
                            self.hits.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(
                                cache = %path.display(),
                                bytes = code.len(),
                                read_us = timing.read.as_micros() as u64,
                                verify_us = timing.verify.as_micros() as u64,
                                deserialize_us = (started.elapsed() - verified).as_micros() as u64,
                                "compiled component loaded from cache"
                            );
                            return Ok(c);
                        }
                        Err(e) => {
                            tracing::warn!(cache = %path.display(), "recompiling: unusable cache entry: {e}");
                        }
                    }
                }
                Err(e) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(cache = %path.display(), "recompiling: cache entry refused: {e}");
                }
            }
        }
        let started = std::time::Instant::now();
        let compiled = engine.precompile_component(bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(elapsed = ?started.elapsed(), "component compiled");
        if let Some((path, key)) = &cached
            && let Err(e) = store(path, &name, key, &compiled)
        {
            tracing::warn!(cache = %path.display(), "cannot write compile cache: {e}");
        }
        // SAFETY: `compiled` was produced by `precompile_component` on this engine just now.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &compiled) }?;
        Ok(component)
    }
}

fn tag(key: &[u8; KEY_LEN], name: &str) -> Tag {
    let mut mac = <Tag as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(TAG_CONTEXT);
    mac.update(name.as_bytes());
    mac.update(b"\0");
    mac
}

/// A file or directory the cache trusts: ours, and writable only by us.
fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), Untrusted> {
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Untrusted::Owner {
            path: path.display().to_string(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Create the cache's directories and the key's (0700) and the key (0600) if missing,
/// check that all are this user's alone, and read the key.
fn open_key(root: &Path, path: &Path) -> Result<[u8; KEY_LEN], Untrusted> {
    let entries = root.join("compiled");
    let key_dir = path.parent().unwrap_or(Path::new("."));
    let private = |dir: &Path| {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
    };
    private(&entries)?;
    private(key_dir)?;
    for dir in [root, entries.as_path(), key_dir] {
        check_owner(dir, &std::fs::symlink_metadata(dir)?)?;
    }
    let file = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; KEY_LEN];
            getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut tmp = tempfile::NamedTempFile::new_in(key_dir)?; // 0600
            std::io::Write::write_all(&mut tmp, &key)?;
            tmp.as_file().sync_all()?;
            // Another process may have created it meanwhile: theirs wins, read it.
            if let Err(e) = tmp.persist_noclobber(path)
                && e.error.kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(e.error.into());
            }
            open_nofollow(path)?
        }
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    check_owner(path, &meta)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Untrusted::Readable {
            path: path.display().to_string(),
            mode,
        });
    }
    let mut key = [0u8; KEY_LEN];
    let mut read = Vec::with_capacity(KEY_LEN + 1);
    file.take(KEY_LEN as u64 + 1).read_to_end(&mut read)?;
    if read.len() != KEY_LEN {
        return Err(Untrusted::Tag {
            path: path.display().to_string(),
        });
    }
    key.copy_from_slice(&read);
    Ok(key)
}

/// Where reading a trusted entry spent its time (reported in debug logs, for
/// bench/cache.sh).
struct Timing {
    read: std::time::Duration,
    verify: std::time::Duration,
}

/// The entry at `path` (tag, then code), read into memory, if it exists and is trusted.
fn read_entry(
    path: &Path,
    name: &str,
    key: &[u8; KEY_LEN],
) -> Result<Option<(Vec<u8>, Timing)>, Untrusted> {
    let started = std::time::Instant::now();
    let file = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let shown = || path.display().to_string();
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Untrusted::NotAFile { path: shown() });
    }
    check_owner(path, &meta)?;
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(Untrusted::TooLarge {
            path: shown(),
            size: meta.len(),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ENTRY_BYTES).read_to_end(&mut bytes)?;
    if bytes.len() < TAG_LEN {
        return Err(Untrusted::Tag { path: shown() });
    }
    let read = started.elapsed();
    let (expected, code) = bytes.split_at(TAG_LEN);
    let mut mac = tag(key, name);
    mac.update(code);
    mac.verify_slice(expected)
        .map_err(|_| Untrusted::Tag { path: shown() })?;
    let verify = started.elapsed() - read;
    Ok(Some((bytes, Timing { read, verify })))
}

fn store(path: &Path, name: &str, key: &[u8; KEY_LEN], code: &[u8]) -> std::io::Result<()> {
    let mut mac = tag(key, name);
    mac.update(code);
    // 0600, in the 0700 entries directory.
    crate::atomic::write_parts(path, &[&mac.finalize().into_bytes(), code])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).expect("engine")
    }

    /// The smallest component there is.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    /// A cache in `dir` with its key in `dir/key` (tests keep their keys apart).
    fn cache_in(dir: &Path) -> CompileCache {
        CompileCache::with_key_file(Some(dir.join("cache")), Some(dir.join("key")))
    }

    fn entry(root: &Path) -> PathBuf {
        std::fs::read_dir(root.join("compiled"))
            .expect("entries")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .expect("one entry")
    }

    #[test]
    fn entries_are_tagged_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine();
        let cache = cache_in(dir.path());
        cache.load(&engine, "aa", EMPTY).expect("compile");
        cache.load(&engine, "aa", EMPTY).expect("cached");
        assert_eq!(cache.compiled.load(Ordering::Relaxed), 1);
        assert_eq!(cache.hits.load(Ordering::Relaxed), 1);
        let key = std::fs::metadata(dir.path().join("key")).expect("key");
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        assert_eq!(key.len(), KEY_LEN as u64);
    }

    #[test]
    fn a_rewritten_or_foreign_entry_is_recompiled_never_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine();
        let cache = cache_in(dir.path());
        cache.load(&engine, "aa", EMPTY).expect("compile");
        let path = entry(&dir.path().join("cache"));
        let good = std::fs::read(&path).expect("read");

        // One flipped bit in the code.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        std::fs::write(&path, &bad).expect("write");
        // Another user's key: a valid entry for another key.
        let elsewhere = tempfile::tempdir().expect("t");
        let other = cache_in(elsewhere.path());
        other.load(&engine, "aa", EMPTY).expect("compile");
        let foreign = std::fs::read(entry(other.root().expect("root"))).expect("read");

        for (what, bytes) in [("flipped bit", bad), ("foreign key", foreign)] {
            std::fs::write(&path, &bytes).expect("write");
            let fresh = cache_in(dir.path());
            fresh.load(&engine, "aa", EMPTY).expect(what);
            assert_eq!(fresh.refused.load(Ordering::Relaxed), 1, "{what}");
            assert_eq!(fresh.compiled.load(Ordering::Relaxed), 1, "{what}");
            assert_eq!(
                std::fs::read(&path).expect("read"),
                good,
                "{what}: rewritten"
            );
        }

        // An entry under another digest's name is not that digest's code.
        let renamed = path.with_file_name(
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .replacen("aa", "bb", 1),
        );
        std::fs::copy(&path, &renamed).expect("copy");
        let fresh = cache_in(dir.path());
        fresh.load(&engine, "bb", EMPTY).expect("bb");
        assert_eq!(fresh.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn group_writable_entries_and_shared_keys_are_not_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine();
        let cache = cache_in(dir.path());
        cache.load(&engine, "aa", EMPTY).expect("compile");
        let path = entry(&dir.path().join("cache"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        let fresh = cache_in(dir.path());
        fresh.load(&engine, "aa", EMPTY).expect("recompiled");
        assert_eq!(fresh.refused.load(Ordering::Relaxed), 1);

        // A symlink in place of an entry is not followed.
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink("/etc/passwd", &path).expect("symlink");
        let fresh = cache_in(dir.path());
        fresh.load(&engine, "aa", EMPTY).expect("recompiled");
        assert_eq!(fresh.refused.load(Ordering::Relaxed), 1);

        // A key others can read is no secret: the cache is off, loads still work.
        std::fs::set_permissions(
            dir.path().join("key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let fresh = cache_in(dir.path());
        fresh
            .load(&engine, "aa", EMPTY)
            .expect("compiled without cache");
        assert_eq!(fresh.hits.load(Ordering::Relaxed), 0);
        assert_eq!(fresh.compiled.load(Ordering::Relaxed), 1);
    }
}
