//! The on-disk cache of compiled components. Compiling a component with Cranelift takes
//! from a third of a second (Rust) to many seconds (Python); loading a cached artifact
//! takes about a millisecond. Entries are keyed by the component's sha256 and the
//! engine's compatibility hash (wasmtime version, target, settings), written atomically
//! (temporary file + rename), and only ever read back from files this host wrote.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The compile cache; counts compilations and hits so callers and tests can tell.
#[derive(Debug)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    pub compiled: AtomicUsize,
    pub hits: AtomicUsize,
}

impl CompileCache {
    /// `dir: None` disables the cache (every load compiles).
    pub fn new(dir: Option<PathBuf>) -> Self {
        CompileCache {
            dir,
            compiled: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
        }
    }

    /// The default location: `$TENET_CACHE_DIR`, else the user's cache directory.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("TENET_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("tenet")))
            .map(|d| d.join("compiled"))
    }

    fn suffix(engine: &Engine) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        format!("-{:016x}.cwasm", h.finish())
    }

    fn entry(&self, engine: &Engine, sha256: &str) -> Option<PathBuf> {
        let key = format!("{sha256}{}", Self::suffix(engine));
        self.dir.as_ref().map(|d| d.join(key))
    }

    /// Remove every entry that is not for this engine or not for one of the `keep`
    /// digests, and stray temporary files; returns (entries removed, bytes freed, kept).
    pub fn gc(
        &self,
        engine: &Engine,
        keep: &std::collections::BTreeSet<String>,
    ) -> std::io::Result<(usize, u64, usize)> {
        let Some(dir) = &self.dir else {
            return Ok((0, 0, 0));
        };
        let entries = match std::fs::read_dir(dir) {
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
        let entry = self.entry(engine, sha256);
        if let Some(path) = &entry
            && path.is_file()
        {
            // SAFETY: the file is in our own cache directory, named after the sha256 of
            // the component and the engine's compatibility hash, and was written by
            // `store` below from `Engine::precompile_component` output.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(engine, path) };
            match loaded {
                Ok(c) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(cache = %path.display(), "compiled component loaded from cache");
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(cache = %path.display(), "ignoring unusable cache entry: {e}");
                }
            }
        }
        let started = std::time::Instant::now();
        let compiled = engine.precompile_component(bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(elapsed = ?started.elapsed(), "component compiled");
        if let Some(path) = &entry
            && let Err(e) = store(path, &compiled)
        {
            tracing::warn!(cache = %path.display(), "cannot write compile cache: {e}");
        }
        // SAFETY: `compiled` was produced by `precompile_component` on this engine just now.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &compiled) }?;
        Ok(component)
    }
}

fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // Private to the user: the cache holds native code that is mapped and run.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
