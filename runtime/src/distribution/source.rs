//! From a provider's `source` to component bytes Tenet is willing to run.
//!
//! Signatures are required by default. A provider runs when it is
//! - built into `tenet` (`builtin:NAME`), or
//! - signed by a key in the manifest's `trust:` list — a `.wasm` with `FILE.minisig`
//!   beside it, a bundle file with `BUNDLE.minisig`, a bundle directory with its
//!   `signature.minisig`, or an installed bundle (`oci://…`) with its stored signature, or
//! - loaded from a local path marked `unsigned: true`, or run with `--allow-unsigned`.
//!
//! A signature that is present but does not verify is refused even then: it means the
//! bytes were changed. `oci://` sources run from the local plugin store, at the digest
//! `tenet.lock` pins when it pins one.

use crate::distribution::builtins::BUILTINS;
use crate::distribution::bundle::{self, Bundle, BundleError, MAX_COMPONENT_BYTES, Metadata};
use crate::distribution::lockfile::LockFile;
use crate::distribution::store::{PluginStore, StoreError};
use crate::manifest::{ProviderDecl, ProviderSource, TrustedKey};
use std::path::Path;

pub use crate::plan::Provenance;

/// What may run: the project's trusted keys, and the opt-out.
#[derive(Debug, Clone, Copy)]
pub struct TrustPolicy<'a> {
    pub trusted: &'a [TrustedKey],
    /// `--allow-unsigned`.
    pub allow_unsigned: bool,
    pub store: &'a PluginStore,
    /// `tenet.lock` and where it is, when there is one.
    pub lock: Option<(&'a LockFile, &'a Path)>,
    /// Run `oci://` sources at this component digest (wins over the lock and the store's
    /// reference): what `tenet lock` is about to pin.
    pub oci_digest: Option<&'a str>,
}

/// A provider's component, ready to load.
#[derive(Debug)]
pub struct Resolved {
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`, hex (computed once, where the bytes were read).
    pub sha256: String,
    /// Where the bytes came from, for messages.
    pub origin: String,
    pub provenance: Provenance,
    /// The bundle's metadata, when the source is a bundle.
    pub metadata: Option<Metadata>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("provider `{plugin}`: no built-in provider `{name}` (built-in: {available})")]
    UnknownBuiltin {
        plugin: String,
        name: String,
        available: String,
    },
    #[error("provider `{plugin}`: cannot read {path}: {message}")]
    Read {
        plugin: String,
        path: String,
        message: String,
    },
    #[error(
        "provider `{plugin}`: {origin} is not signed (no {signature}); sign it (`tenet plugin sign`) with a key listed under `trust:`, or — for local development — mark the provider `unsigned: true` or pass --allow-unsigned"
    )]
    Unsigned {
        plugin: String,
        origin: String,
        signature: String,
    },
    #[error(
        "provider `{plugin}`: {origin} was installed without a signature; install a signed bundle, or pass --allow-unsigned"
    )]
    UnsignedInstalled { plugin: String, origin: String },
    #[error("provider `{plugin}`: {source}")]
    Signature {
        plugin: String,
        #[source]
        source: BundleError,
    },
    #[error("provider `{plugin}`: {reference} is not installed{hint}")]
    NotInstalled {
        plugin: String,
        reference: String,
        hint: String,
    },
    #[error("provider `{plugin}`: {source}")]
    Store {
        plugin: String,
        #[source]
        source: StoreError,
    },
}

/// The bytes and provenance of `decl`'s component under `policy`.
pub fn resolve(decl: &ProviderDecl, policy: &TrustPolicy<'_>) -> Result<Resolved, SourceError> {
    let plugin = decl.name.clone();
    match &decl.source {
        ProviderSource::Builtin(name) => BUILTINS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| Resolved {
                sha256: bundle::digest(b),
                bytes: b.to_vec(),
                origin: format!("builtin:{name}"),
                provenance: Provenance::Builtin,
                metadata: None,
            })
            .ok_or_else(|| SourceError::UnknownBuiltin {
                plugin,
                name: name.clone(),
                available: BUILTINS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        ProviderSource::Path(path) => resolve_path(decl, path, policy),
        ProviderSource::Oci(reference) => {
            let store_err = |source| SourceError::Store {
                plugin: plugin.clone(),
                source,
            };
            let pinned = policy
                .lock
                .and_then(|(lock, _)| lock.providers.get(&decl.name))
                .filter(|pin| pin.source == *reference)
                .map(|pin| pin.component_sha256.clone());
            let digest = match (policy.oci_digest, &pinned) {
                (Some(d), _) => Some(d.to_owned()),
                (None, Some(d)) => Some(d.clone()),
                (None, None) => policy.store.resolve(reference).map_err(store_err)?,
            };
            let installed = match &digest {
                Some(d) => policy.store.get_with_component(d).map_err(store_err)?,
                None => None,
            };
            let Some((installed, bytes)) = installed else {
                return Err(SourceError::NotInstalled {
                    plugin,
                    reference: reference.clone(),
                    hint: match pinned {
                        Some(d) => format!(
                            " at the digest tenet.lock pins (sha256 {d}); run `tenet init` to fetch exactly that"
                        ),
                        None => {
                            format!("; run `tenet init` (or `tenet plugin install {reference}`)")
                        }
                    },
                });
            };
            let sig_path = installed.dir.join(bundle::DIR_SIGNATURE);
            signed(
                decl,
                Unverified {
                    origin: format!("{reference} (installed as {})", installed.dir.display()),
                    sha256: installed.digest,
                    bytes,
                    metadata: Some(installed.metadata),
                },
                installed.signature.as_deref(),
                &sig_path,
                policy,
            )
        }
    }
}

/// A component read from its source, its signature not yet checked.
struct Unverified {
    bytes: Vec<u8>,
    sha256: String,
    origin: String,
    metadata: Option<Metadata>,
}

/// Check `signature` (read from `sig_path`) under `policy`: the resolved component, or
/// why it may not run.
fn signed(
    decl: &ProviderDecl,
    c: Unverified,
    signature: Option<&str>,
    sig_path: &Path,
    policy: &TrustPolicy<'_>,
) -> Result<Resolved, SourceError> {
    let provenance = check_signature(
        decl,
        &c.bytes,
        signature,
        &sig_path.display().to_string(),
        &c.origin,
        policy,
    )?;
    Ok(Resolved {
        bytes: c.bytes,
        sha256: c.sha256,
        origin: c.origin,
        provenance,
        metadata: c.metadata,
    })
}

fn resolve_path(
    decl: &ProviderDecl,
    path: &Path,
    policy: &TrustPolicy<'_>,
) -> Result<Resolved, SourceError> {
    let read_err = |message: String| SourceError::Read {
        plugin: decl.name.clone(),
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
    let (bytes, metadata) = if meta.is_dir() || !is_wasm(path) {
        let b = Bundle::read(path).map_err(|e| SourceError::Signature {
            plugin: decl.name.clone(),
            source: e,
        })?;
        (b.component, Some(b.metadata))
    } else {
        if meta.len() > MAX_COMPONENT_BYTES {
            return Err(read_err(format!(
                "{} bytes is larger than the {MAX_COMPONENT_BYTES}-byte limit",
                meta.len()
            )));
        }
        (
            std::fs::read(path).map_err(|e| read_err(e.to_string()))?,
            None,
        )
    };
    let sig_path = bundle::signature_path(path);
    let signature = bundle::read_signature(&sig_path).map_err(|e| SourceError::Signature {
        plugin: decl.name.clone(),
        source: e,
    })?;
    let sha256 = match &metadata {
        // Checked against the component by `Bundle::read`.
        Some(m) => m.component_sha256.clone(),
        None => bundle::digest(&bytes),
    };
    signed(
        decl,
        Unverified {
            bytes,
            sha256,
            origin: path.display().to_string(),
            metadata,
        },
        signature.as_deref(),
        &sig_path,
        policy,
    )
}

/// Is the file a component (named `.wasm` or starting like WebAssembly) rather than a
/// bundle file?
pub fn is_wasm(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "wasm") {
        return true;
    }
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| &head == b"\0asm")
}

fn check_signature(
    decl: &ProviderDecl,
    bytes: &[u8],
    signature: Option<&str>,
    signature_desc: &str,
    origin: &str,
    policy: &TrustPolicy<'_>,
) -> Result<Provenance, SourceError> {
    match signature {
        Some(text) => {
            let key = bundle::verify(bytes, text, signature_desc, policy.trusted).map_err(|e| {
                SourceError::Signature {
                    plugin: decl.name.clone(),
                    source: e,
                }
            })?;
            Ok(Provenance::Signed {
                key_id: key.id.clone(),
                key_name: key.name.clone(),
            })
        }
        None if decl.unsigned => Ok(Provenance::Unsigned {
            reason: "unsigned: true in the manifest".into(),
        }),
        None if policy.allow_unsigned => Ok(Provenance::Unsigned {
            reason: "--allow-unsigned".into(),
        }),
        None if matches!(decl.source, ProviderSource::Oci(_)) => {
            Err(SourceError::UnsignedInstalled {
                plugin: decl.name.clone(),
                origin: origin.to_owned(),
            })
        }
        None => Err(SourceError::Unsigned {
            plugin: decl.name.clone(),
            origin: origin.to_owned(),
            signature: signature_desc.to_owned(),
        }),
    }
}
