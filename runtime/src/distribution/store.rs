//! The local plugin store: installed bundles, content-addressed by the sha256 of their
//! component, and the references (`oci://…`, bundle files) they were installed from.
//!
//! ```text
//! STORE/sha256/<digest>/metadata.json, component.wasm[, signature.minisig]
//! STORE/refs/<sha256 of the reference>.json   {"reference": "...", "digest": "..."}
//! ```
//!
//! An install writes a complete bundle directory under a temporary name and renames it
//! into place, so a bundle is either wholly installed or absent; each reference is its
//! own file, replaced atomically. Only bundle bytes live here: compiled native code is in
//! the compile cache, produced on this machine (never downloaded).

use crate::distribution::bundle::{
    self, Bundle, BundleError, COMPONENT, DIR_SIGNATURE, METADATA, Metadata,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("plugin store {path}: {message}")]
    Io { path: String, message: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// One installed bundle.
#[derive(Debug, Clone)]
pub struct Installed {
    pub digest: String,
    pub metadata: Metadata,
    /// The detached minisign signature, if the bundle was installed signed.
    pub signature: Option<String>,
    /// References that resolve to it.
    pub references: Vec<String>,
    pub dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct RefFile {
    reference: String,
    digest: String,
}

#[derive(Debug, Clone)]
pub struct PluginStore {
    root: PathBuf,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A directory's entries; `None` when it does not exist (nothing installed yet).
fn read_dir(dir: &Path) -> Result<Option<std::fs::ReadDir>, StoreError> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(dir, e)),
        Ok(e) => Ok(Some(e)),
    }
}

fn valid_digest(d: &str) -> bool {
    d.len() == 64
        && d.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl PluginStore {
    /// `$TENET_STORE_DIR`, else the user's data directory (`~/.local/share/tenet/plugins`).
    pub fn default_dir() -> PathBuf {
        std::env::var_os("TENET_STORE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::data_dir().map(|d| d.join("tenet").join("plugins")))
            .unwrap_or_else(|| PathBuf::from(".tenet-plugins"))
    }

    pub fn new(root: PathBuf) -> PluginStore {
        PluginStore { root }
    }

    pub fn open_default() -> PluginStore {
        PluginStore::new(Self::default_dir())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self, digest: &str) -> PathBuf {
        self.root.join("sha256").join(digest)
    }

    fn ref_file(&self, reference: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{}.json", bundle::digest(reference.as_bytes())))
    }

    fn private_dir(path: &Path) -> Result<(), StoreError> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(path)
            .map_err(|e| io_err(path, e))
    }

    /// Install a verified bundle (and its signature) under its digest, and point
    /// `reference` at it. Installing the same bytes again only updates the reference.
    pub fn install(
        &self,
        bundle: &Bundle,
        signature: Option<&str>,
        reference: Option<&str>,
    ) -> Result<Installed, StoreError> {
        let digest = bundle.metadata.component_sha256.clone();
        let dir = self.blob_dir(&digest);
        let parent = self.root.join("sha256");
        Self::private_dir(&parent)?;
        if dir.is_dir() {
            // The same bytes again: only the signature may be new (another key, or an
            // unsigned install now signed); replace that one file atomically.
            if let Some(sig) = signature {
                let path = dir.join(DIR_SIGNATURE);
                crate::atomic::write(&path, sig.as_bytes()).map_err(|e| io_err(&path, e))?;
            }
        } else {
            let meta = serde_json::to_vec_pretty(&bundle.metadata).map_err(|e| io_err(&dir, e))?;
            let mut files = vec![(METADATA, meta.as_slice()), (COMPONENT, &bundle.component)];
            if let Some(sig) = signature {
                files.push((DIR_SIGNATURE, sig.as_bytes()));
            }
            let staged = crate::atomic::stage_dir(&parent, ".install-", &files)
                .map_err(|e| io_err(&parent, e))?
                .keep();
            if let Err(e) = std::fs::rename(&staged, &dir) {
                let _ = std::fs::remove_dir_all(&staged);
                // Another process installed the same digest meanwhile: theirs is as good.
                if !dir.is_dir() {
                    return Err(io_err(&dir, e));
                }
            }
            crate::atomic::sync_dir(&parent);
        }
        if let Some(reference) = reference {
            self.set_ref(reference, &digest)?;
        }
        self.get(&digest)?
            .ok_or_else(|| io_err(&dir, "vanished right after installing"))
    }

    /// Point `reference` at `digest` (atomically replacing what it pointed at).
    pub fn set_ref(&self, reference: &str, digest: &str) -> Result<(), StoreError> {
        let path = self.ref_file(reference);
        let dir = self.root.join("refs");
        Self::private_dir(&dir)?;
        let text = serde_json::to_vec(&RefFile {
            reference: reference.to_owned(),
            digest: digest.to_owned(),
        })
        .map_err(|e| io_err(&path, e))?;
        crate::atomic::write(&path, &text).map_err(|e| io_err(&path, e))
    }

    /// The digest `reference` was last installed as.
    pub fn resolve(&self, reference: &str) -> Result<Option<String>, StoreError> {
        let path = self.ref_file(reference);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
            Ok(bytes) => {
                let r: RefFile = serde_json::from_slice(&bytes).map_err(|e| io_err(&path, e))?;
                Ok((r.reference == reference && valid_digest(&r.digest)).then_some(r.digest))
            }
        }
    }

    fn refs(&self) -> Result<Vec<RefFile>, StoreError> {
        let dir = self.root.join("refs");
        let Some(entries) = read_dir(&dir)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| io_err(&dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Ok(bytes) = std::fs::read(&path)
                && let Ok(r) = serde_json::from_slice::<RefFile>(&bytes)
            {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// The installed bundle with this digest, re-checked (entries, sizes, digest).
    pub fn get(&self, digest: &str) -> Result<Option<Installed>, StoreError> {
        Ok(self.read(digest, &self.refs()?)?.map(|(i, _)| i))
    }

    /// [`PluginStore::get`] and the component's bytes, read (and checked) once.
    pub fn get_with_component(
        &self,
        digest: &str,
    ) -> Result<Option<(Installed, Vec<u8>)>, StoreError> {
        self.read(digest, &self.refs()?)
    }

    fn read(
        &self,
        digest: &str,
        refs: &[RefFile],
    ) -> Result<Option<(Installed, Vec<u8>)>, StoreError> {
        if !valid_digest(digest) {
            return Ok(None);
        }
        let dir = self.blob_dir(digest);
        if !dir.is_dir() {
            return Ok(None);
        }
        let b = Bundle::read(&dir)?;
        if b.metadata.component_sha256 != digest {
            return Err(io_err(
                &dir,
                format!(
                    "holds a component with sha256 {}, not {digest}: remove it with `tenet plugin remove {digest}`",
                    b.metadata.component_sha256
                ),
            ));
        }
        let signature = bundle::read_signature(&dir.join(DIR_SIGNATURE))?;
        let references = refs
            .iter()
            .filter(|r| r.digest == digest)
            .map(|r| r.reference.clone())
            .collect();
        let installed = Installed {
            digest: digest.to_owned(),
            metadata: b.metadata,
            signature,
            references,
            dir,
        };
        Ok(Some((installed, b.component)))
    }

    /// Every installed bundle, by name then version. An entry that fails its checks is
    /// left out with a warning naming it (loading it still fails with the reason).
    pub fn list(&self) -> Result<Vec<Installed>, StoreError> {
        let dir = self.root.join("sha256");
        let Some(entries) = read_dir(&dir)? else {
            return Ok(Vec::new());
        };
        let refs = self.refs()?;
        let mut out = Vec::new();
        for entry in entries {
            let name = entry.map_err(|e| io_err(&dir, e))?.file_name();
            let Some(digest) = name.to_str().filter(|d| valid_digest(d)) else {
                continue;
            };
            match self.read(digest, &refs) {
                Ok(Some((i, _))) => out.push(i),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "skipping a damaged installed bundle: {e}; `tenet plugin remove {digest}` removes it"
                ),
            }
        }
        out.sort_by(|a, b| {
            (&a.metadata.name, &a.metadata.version, &a.digest).cmp(&(
                &b.metadata.name,
                &b.metadata.version,
                &b.digest,
            ))
        });
        Ok(out)
    }

    /// Remove the bundles `what` names (a digest, `NAME` or `NAME@VERSION`) and the
    /// references to them; returns the digests removed.
    pub fn remove(&self, what: &str) -> Result<Vec<String>, StoreError> {
        let (name, version) = match what.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (what, None),
        };
        let mut doomed: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|i| i.metadata.name == name && version.is_none_or(|v| v == i.metadata.version))
            .map(|i| i.digest)
            .collect();
        // By digest even when the entry is damaged (and so not listed).
        if valid_digest(what) && self.blob_dir(what).is_dir() && !doomed.iter().any(|d| d == what) {
            doomed.push(what.to_owned());
        }
        let refs = self.refs()?;
        for digest in &doomed {
            for r in refs.iter().filter(|r| r.digest == *digest) {
                let path = self.ref_file(&r.reference);
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
            // Rename first so a concurrent reader never sees half a directory.
            let dir = self.blob_dir(digest);
            let trash = self.root.join("sha256").join(format!(".remove-{digest}"));
            std::fs::rename(&dir, &trash).map_err(|e| io_err(&dir, e))?;
            std::fs::remove_dir_all(&trash).map_err(|e| io_err(&trash, e))?;
        }
        Ok(doomed)
    }

    /// Digests of every installed bundle (for the compile cache's garbage collection).
    pub fn digests(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.list()?.into_iter().map(|i| i.digest).collect())
    }
}
