//! Plugin bundles: one provider component plus its metadata, identified by the sha256 of
//! the component, and detached minisign signatures over the component's bytes (so the
//! `minisign` tool verifies them too). The format is in docs/bundles.md.
//!
//! A bundle file is a tar archive with exactly two regular files, `metadata.json` and
//! `component.wasm`; anything else (more entries, directories, links, oversized entries)
//! is refused before any byte is trusted.

use crate::manifest::TrustedKey;
pub use crate::manifest::trust::{key_id, parse_public_key};
use crate::provider::Requested;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// Largest component accepted, before any parsing: a provider is a few MB (a Python one
/// about 20 MB), and reading an arbitrary file into memory must be bounded.
pub const MAX_COMPONENT_BYTES: u64 = 256 * 1024 * 1024;

/// Entry names in a bundle file or directory.
pub const METADATA: &str = "metadata.json";
pub const COMPONENT: &str = "component.wasm";
/// The signature inside a bundle directory (a bundle file's is `FILE.minisig` beside it).
pub const DIR_SIGNATURE: &str = "signature.minisig";
/// Largest signature file accepted.
pub const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;

/// Where the detached signature of a bundle file, bundle directory or `.wasm` component
/// at `path` lives.
pub fn signature_path(path: &Path) -> std::path::PathBuf {
    if path.is_dir() {
        return path.join(DIR_SIGNATURE);
    }
    let mut s = path.as_os_str().to_owned();
    s.push(".minisig");
    std::path::PathBuf::from(s)
}

/// Read a signature file if there is one (bounded).
pub fn read_signature(path: &Path) -> Result<Option<String>, BundleError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
        Ok(m) if m.len() > MAX_SIGNATURE_BYTES => Err(invalid(
            path,
            format!(
                "{} bytes is not a signature (limit {MAX_SIGNATURE_BYTES})",
                m.len()
            ),
        )),
        Ok(_) => std::fs::read_to_string(path)
            .map(Some)
            .map_err(|e| io(path, e)),
    }
}

/// Largest `metadata.json` accepted.
pub const MAX_METADATA_BYTES: u64 = 1024 * 1024;
/// Version of the bundle metadata format.
pub const FORMAT_VERSION: u32 = 1;

/// Why a bundle, key or signature was refused. Every case names the file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: cannot read: {message}")]
    Io { path: String, message: String },
    #[error("{path}: the signature is not valid for this component with key {key_id} ({message})")]
    BadSignature {
        path: String,
        key_id: String,
        message: String,
    },
    #[error("{path}: signed by key {key_id}, which is not trusted (trusted: {trusted})")]
    Untrusted {
        path: String,
        key_id: String,
        trusted: String,
    },
}

/// What a bundle says about its component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub format_version: u32,
    pub name: String,
    pub version: String,
    pub description: String,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub source_url: String,
    /// `tenet:provider` version it exports.
    pub abi: String,
    pub kinds: Vec<String>,
    /// Imports that need a grant, and what it declares it needs.
    pub capabilities: Requested,
    /// sha256 of `component.wasm`: the bundle's identity.
    pub component_sha256: String,
}

/// A bundle read into memory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub metadata: Metadata,
    pub component: Vec<u8>,
}

fn invalid(path: &Path, message: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> BundleError {
    BundleError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// sha256 of bytes, hex.
pub fn digest(bytes: &[u8]) -> String {
    crate::digest::sha256_hex(bytes)
}

impl Bundle {
    /// Write the bundle as a directory at `path` (which must not exist yet): built under a
    /// temporary name beside it and renamed into place.
    pub fn write_dir(&self, path: &Path) -> Result<(), BundleError> {
        if path.exists() {
            return Err(invalid(path, "exists; not overwriting"));
        }
        let parent = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let meta = serde_json::to_vec_pretty(&self.metadata).map_err(|e| io(path, e))?;
        let staged = crate::atomic::stage_dir(
            parent,
            ".bundle-",
            &[(METADATA, meta.as_slice()), (COMPONENT, &self.component)],
        )
        .map_err(|e| io(path, e))?;
        std::fs::rename(staged.keep(), path).map_err(|e| io(path, e))?;
        crate::atomic::sync_dir(parent);
        Ok(())
    }

    /// Write the bundle as a tar file at `path` (atomically).
    pub fn write(&self, path: &Path) -> Result<(), BundleError> {
        let meta = serde_json::to_vec_pretty(&self.metadata).map_err(|e| io(path, e))?;
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("metadata.json", meta.as_slice()),
            ("component.wasm", self.component.as_slice()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            builder
                .append_data(&mut header, name, data)
                .map_err(|e| io(path, e))?;
        }
        let bytes = builder.into_inner().map_err(|e| io(path, e))?;
        crate::atomic::write(path, &bytes).map_err(|e| io(path, e))
    }

    /// Read and check a bundle file or directory: exactly the two expected entries,
    /// sizes within limits, metadata that parses, and a component whose sha256 is the one
    /// declared.
    pub fn read(path: &Path) -> Result<Bundle, BundleError> {
        if path.is_dir() {
            return Self::read_dir(path);
        }
        let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
        let mut archive = tar::Archive::new(file);
        let mut metadata: Option<Vec<u8>> = None;
        let mut component: Option<Vec<u8>> = None;
        let entries = archive
            .entries()
            .map_err(|e| invalid(path, format!("not a bundle (tar) file: {e}")))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| invalid(path, format!("truncated or corrupt bundle: {e}")))?;
            let name = entry
                .path()
                .map_err(|e| invalid(path, format!("bad entry name: {e}")))?
                .to_string_lossy()
                .into_owned();
            if !entry.header().entry_type().is_file() {
                return Err(invalid(
                    path,
                    format!("entry `{name}` is not a regular file"),
                ));
            }
            let (slot, limit) = match name.as_str() {
                "metadata.json" => (&mut metadata, MAX_METADATA_BYTES),
                "component.wasm" => (&mut component, MAX_COMPONENT_BYTES),
                other => {
                    return Err(invalid(
                        path,
                        format!(
                            "unexpected entry `{other}` (a bundle holds metadata.json and component.wasm)"
                        ),
                    ));
                }
            };
            if slot.is_some() {
                return Err(invalid(path, format!("entry `{name}` appears twice")));
            }
            let size = entry.header().size().unwrap_or(u64::MAX);
            if size > limit {
                return Err(invalid(
                    path,
                    format!("entry `{name}` is {size} bytes, over the {limit}-byte limit"),
                ));
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry
                .take(limit)
                .read_to_end(&mut data)
                .map_err(|e| invalid(path, format!("truncated or corrupt bundle: {e}")))?;
            if data.len() as u64 != size {
                return Err(invalid(path, format!("entry `{name}` is truncated")));
            }
            *slot = Some(data);
        }
        let metadata = metadata.ok_or_else(|| invalid(path, "no metadata.json in the bundle"))?;
        let component =
            component.ok_or_else(|| invalid(path, "no component.wasm in the bundle"))?;
        Self::from_parts(path, &metadata, component)
    }

    /// A bundle directory: `metadata.json`, `component.wasm` and, when signed,
    /// `signature.minisig`; nothing else.
    fn read_dir(path: &Path) -> Result<Bundle, BundleError> {
        let entries = std::fs::read_dir(path).map_err(|e| io(path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ![METADATA, COMPONENT, DIR_SIGNATURE].contains(&name.as_str()) {
                return Err(invalid(
                    path,
                    format!(
                        "unexpected entry `{name}` (a bundle directory holds {METADATA}, {COMPONENT} and {DIR_SIGNATURE})"
                    ),
                ));
            }
        }
        let read = |name: &str, limit: u64| -> Result<Vec<u8>, BundleError> {
            let file = path.join(name);
            let meta = std::fs::symlink_metadata(&file).map_err(|e| io(&file, e))?;
            if !meta.is_file() {
                return Err(invalid(&file, "not a regular file"));
            }
            if meta.len() > limit {
                return Err(invalid(
                    &file,
                    format!("{} bytes, over the {limit}-byte limit", meta.len()),
                ));
            }
            std::fs::read(&file).map_err(|e| io(&file, e))
        };
        let metadata = read(METADATA, MAX_METADATA_BYTES)?;
        let component = read(COMPONENT, MAX_COMPONENT_BYTES)?;
        Self::from_parts(path, &metadata, component)
    }

    /// Check metadata text against a component: format, and the declared digest.
    pub fn from_parts(
        path: &Path,
        metadata: &[u8],
        component: Vec<u8>,
    ) -> Result<Bundle, BundleError> {
        let metadata: Metadata = serde_json::from_slice(metadata)
            .map_err(|e| invalid(path, format!("metadata.json is not valid: {e}")))?;
        if metadata.format_version != FORMAT_VERSION {
            return Err(invalid(
                path,
                format!(
                    "bundle format {} (this Tenet reads format {FORMAT_VERSION})",
                    metadata.format_version
                ),
            ));
        }
        let actual = digest(&component);
        if actual != metadata.component_sha256 {
            return Err(invalid(
                path,
                format!(
                    "component.wasm has sha256 {actual}, but the metadata declares {}",
                    metadata.component_sha256
                ),
            ));
        }
        Ok(Bundle {
            metadata,
            component,
        })
    }
}

/// Check what a bundle's metadata says against what its component says of itself (name,
/// version, ABI, kinds, capabilities): a bundle can neither hide a capability nor pose
/// as another provider. The error lists every difference.
pub fn check_against_component(
    meta: &Metadata,
    info: &crate::provider::ProviderInfo,
    requested: &Requested,
) -> Result<(), String> {
    let mut diffs = Vec::new();
    if meta.capabilities != *requested {
        diffs.push(format!(
            "the declared capabilities differ from the component's: the bundle declares [{}], the component requests [{}]",
            meta.capabilities.summary().join(", "),
            requested.summary().join(", ")
        ));
    }
    let kinds: Vec<String> = info.kinds.keys().cloned().collect();
    for (field, declared, actual) in [
        ("name", meta.name.clone(), info.name.clone()),
        ("version", meta.version.clone(), info.version.clone()),
        ("ABI", meta.abi.clone(), requested.abi.clone()),
        ("kinds", meta.kinds.join(", "), kinds.join(", ")),
    ] {
        if declared != actual {
            diffs.push(format!(
                "the bundle's {field} is `{declared}`, the component's is `{actual}`"
            ));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}

/// Generate an unencrypted minisign key pair: (public key file text, secret key file
/// text, key id).
pub fn generate_key(comment: &str) -> Result<(String, String, String), String> {
    let minisign::KeyPair { pk, sk } =
        minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| e.to_string())?;
    let id = key_id(pk.keynum());
    let pk_text = pk.to_box().map_err(|e| e.to_string())?.to_string();
    let sk_text = sk
        .to_box(Some(comment))
        .map_err(|e| e.to_string())?
        .to_string();
    Ok((pk_text, sk_text, id))
}

/// Sign a bundle's component with the secret key file at `key`: the detached signature
/// text (minisign format). The trusted comment names the bundle and its digest.
pub fn sign(bundle: &Bundle, key: &Path) -> Result<String, BundleError> {
    let comment = format!(
        "tenet bundle {} {} sha256:{}",
        bundle.metadata.name, bundle.metadata.version, bundle.metadata.component_sha256
    );
    sign_bytes(&bundle.component, &comment, key)
}

/// The public half of the secret key file at `key`, as a trusted key (to check what was
/// signed with it).
pub fn public_of(key: &Path) -> Result<TrustedKey, BundleError> {
    let text = std::fs::read_to_string(key).map_err(|e| io(key, e))?;
    let sk = minisign::SecretKeyBox::from_string(&text)
        .and_then(minisign::SecretKeyBox::into_unencrypted_secret_key)
        .map_err(|e| invalid(key, format!("not a usable minisign secret key: {e}")))?;
    let pk = minisign::PublicKey::from_secret_key(&sk)
        .map_err(|e| invalid(key, format!("not a usable minisign secret key: {e}")))?;
    Ok(TrustedKey {
        id: key_id(pk.keynum()),
        public_key: pk.to_base64(),
        name: key.display().to_string(),
        location: crate::diag::Location::file(key),
        file: None,
    })
}

/// A detached minisign signature (text) over `bytes` with the secret key file at `key`,
/// `comment` as its trusted comment: what bundles and desired-state artifacts are
/// signed with.
pub fn sign_bytes(bytes: &[u8], comment: &str, key: &Path) -> Result<String, BundleError> {
    let text = std::fs::read_to_string(key).map_err(|e| io(key, e))?;
    let sk = minisign::SecretKeyBox::from_string(&text)
        .and_then(minisign::SecretKeyBox::into_unencrypted_secret_key)
        .map_err(|e| invalid(key, format!("not a usable minisign secret key: {e}")))?;
    let sig = minisign::sign(None, &sk, std::io::Cursor::new(bytes), Some(comment), None)
        .map_err(|e| invalid(key, format!("cannot sign: {e}")))?;
    Ok(sig.to_string())
}

/// Verify a detached signature (text, read from `signature`) over `component` against
/// the trusted keys; returns the key that signed it.
pub fn verify<'k>(
    component: &[u8],
    signature_text: &str,
    signature: &str,
    trusted: &'k [TrustedKey],
) -> Result<&'k TrustedKey, BundleError> {
    let sig =
        minisign::SignatureBox::from_string(signature_text).map_err(|e| BundleError::Invalid {
            path: signature.to_owned(),
            message: format!("not a minisign signature: {e}"),
        })?;
    let signer = key_id(sig.keynum());
    let Some(key) = trusted.iter().find(|k| k.id == signer) else {
        return Err(BundleError::Untrusted {
            path: signature.to_owned(),
            key_id: signer,
            trusted: if trusted.is_empty() {
                "none: add public keys under `trust:` in the manifest".into()
            } else {
                trusted
                    .iter()
                    .map(|k| format!("{} ({})", k.id, k.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    };
    let pk =
        minisign::PublicKey::from_base64(&key.public_key).map_err(|e| BundleError::Invalid {
            path: key.location.to_string(),
            message: format!("not a minisign public key: {e}"),
        })?;
    minisign::verify(
        &pk,
        &sig,
        std::io::Cursor::new(component),
        true,
        false,
        false,
    )
    .map_err(|e| BundleError::BadSignature {
        path: signature.to_owned(),
        key_id: signer.clone(),
        message: e.to_string(),
    })?;
    Ok(key)
}

/// Trusted keys from public key files (`--trust FILE`).
pub fn keys_from_files(files: &[std::path::PathBuf]) -> Result<Vec<TrustedKey>, BundleError> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| io(f, e))?;
            let (id, public_key) = parse_public_key(&text).map_err(|e| invalid(f, e))?;
            Ok(TrustedKey {
                id,
                public_key,
                name: f.display().to_string(),
                location: crate::diag::Location::file(f),
                file: Some(f.clone()),
            })
        })
        .collect()
}
