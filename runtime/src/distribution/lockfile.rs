//! `tenet.lock`: the exact provider components a project runs, pinned by the sha256 of
//! the component (one digest for every platform), with the key that signed each and what
//! each can ask for. Written by `tenet lock` / `tenet init`, deterministic (sorted, no
//! timestamps), meant to be committed: a pull request that moves a pin shows the new
//! capabilities in its diff. When it exists beside the manifest, every load checks each
//! provider against it and refuses a mismatch, printing the expected and actual digests
//! and where the bytes came from. Built-in providers are listed for reference but not
//! enforced: they are part of the binary.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The lock file's name, beside the manifest.
pub const FILE: &str = crate::manifest::LOCK_FILE;
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    pub format_version: u32,
    pub providers: BTreeMap<String, Pin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub source: String,
    pub version: String,
    pub component_sha256: String,
    /// minisign key id of the signer; none for built-in and unsigned providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// For `oci://` sources: the digest of the image manifest pinned, so a fresh
    /// checkout pulls exactly these bytes even if the tag moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_manifest: Option<String>,
    /// What the component can ask for ([`crate::provider::Requested::summary`]).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Built into `tenet`: listed, not enforced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(
        "provider `{provider}` does not match {path}: it pins sha256 {expected}, the component at {source_desc} has sha256 {actual}; if the change is intended, run `tenet lock --upgrade {provider}` to move the pin"
    )]
    Mismatch {
        path: String,
        provider: String,
        expected: String,
        actual: String,
        source_desc: String,
    },
    #[error(
        "provider `{provider}` now comes from {source_desc}, but {path} pins it from {pinned}; run `tenet lock --upgrade {provider}` to move the pin"
    )]
    SourceChanged {
        path: String,
        provider: String,
        pinned: String,
        source_desc: String,
    },
    #[error(
        "provider `{provider}`: {path} pins signer {pinned}, but these bytes are signed by {actual}; if the change is intended, run `tenet lock --upgrade {provider}` to move the pin"
    )]
    Signer {
        path: String,
        provider: String,
        pinned: String,
        actual: String,
    },
    #[error("provider `{provider}` is not in {path}: run `tenet lock` to pin it")]
    Missing { path: String, provider: String },
}

/// A provider source as the lock file records it: paths relative to the manifest's
/// directory (so the file is the same on every checkout), others as written.
pub fn source_of(source: &crate::manifest::ProviderSource, dir: &Path) -> String {
    match source {
        crate::manifest::ProviderSource::Path(p) => match p.strip_prefix(dir) {
            Ok(rel) => format!("./{}", rel.display()),
            Err(_) => p.display().to_string(),
        },
        other => other.to_string(),
    }
}

/// Where the lock file of a manifest (file or directory) lives.
pub fn path_for(manifest: &Path) -> PathBuf {
    crate::manifest::lock_path(manifest)
}

impl LockFile {
    /// The text written to disk: pretty JSON with sorted keys and a final newline, the
    /// same bytes for the same providers.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Read the lock file at `path`, if there is one.
    pub fn read(path: &Path) -> Result<Option<LockFile>, LockError> {
        let invalid = |message: String| LockError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(invalid(format!("cannot read: {e}"))),
        };
        let lock: LockFile = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("not a valid lock file: {e}")))?;
        if lock.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "lock file format {} (this Tenet reads format {FORMAT_VERSION})",
                lock.format_version
            )));
        }
        Ok(Some(lock))
    }

    /// The capability lines `new` has and `old` had not, and those it no longer has.
    pub fn capability_changes(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
        let added = new.iter().filter(|c| !old.contains(c)).cloned().collect();
        let removed = old.iter().filter(|c| !new.contains(c)).cloned().collect();
        (added, removed)
    }

    /// Check a provider against its pin before it runs: `source` as the manifest writes
    /// it, `origin` where its bytes came from, `actual` their sha256, `signer` the key
    /// that signed them.
    pub fn check(
        &self,
        path: &Path,
        provider: &str,
        (source, origin): (&str, &str),
        (actual, signer): (&str, Option<&str>),
        builtin: bool,
    ) -> Result<(), LockError> {
        if builtin {
            return Ok(());
        }
        let Some(pin) = self.providers.get(provider) else {
            return Err(LockError::Missing {
                path: path.display().to_string(),
                provider: provider.to_owned(),
            });
        };
        if pin.source != source {
            return Err(LockError::SourceChanged {
                path: path.display().to_string(),
                provider: provider.to_owned(),
                pinned: pin.source.clone(),
                source_desc: source.to_owned(),
            });
        }
        pin.check(path, provider, origin, (actual, signer))
    }
}

impl Pin {
    /// Check bytes (`actual` sha256, read from `origin`, signed by `signer`) against
    /// this pin: the same digest and the same signer, or the error saying which moved.
    pub fn check(
        &self,
        path: &Path,
        provider: &str,
        origin: &str,
        (actual, signer): (&str, Option<&str>),
    ) -> Result<(), LockError> {
        let pin = self;
        if pin.component_sha256 != actual {
            return Err(LockError::Mismatch {
                path: path.display().to_string(),
                provider: provider.to_owned(),
                expected: pin.component_sha256.clone(),
                actual: actual.to_owned(),
                source_desc: origin.to_owned(),
            });
        }
        if pin.signer.as_deref() != signer {
            return Err(LockError::Signer {
                path: path.display().to_string(),
                provider: provider.to_owned(),
                pinned: pin
                    .signer
                    .clone()
                    .unwrap_or_else(|| "nobody (unsigned)".into()),
                actual: signer.unwrap_or("nobody (unsigned)").to_owned(),
            });
        }
        Ok(())
    }
}
