//! Installing plugin bundles: fetch one (a file or an `oci://` reference), check it —
//! the signature against trusted keys, the bundle's declared capabilities against what
//! the component really imports and requests (loaded in the sandbox) — and only then put
//! it in the plugin store whole. Used by `tenet plugin install`, `verify`, `tenet lock`
//! and `tenet init`. It lives beside the loader because checking a component means
//! loading it: distribution alone cannot (it imports no wasmtime).

use crate::distribution::bundle::{self, Bundle, BundleError};
use crate::distribution::lockfile::Pin;
use crate::distribution::oci::{self, OciError};
use crate::distribution::store::{PluginStore, StoreError};
use crate::manifest::TrustedKey;
use crate::provider::Provider;
use crate::wasm::plugin::{PluginError, PluginHost};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// Why a bundle was not fetched, checked or installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("cannot resolve {path}")]
    Path {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Refused (unsigned, a pin that does not match, capabilities the bundle hides); the
    /// message names the source and what to do.
    #[error("{0}")]
    Refused(String),
}

/// A bundle and its signature from a path or a registry.
pub struct Fetched {
    pub bundle: Bundle,
    pub signature: Option<String>,
    /// Where the signature was (for messages).
    pub signature_desc: String,
    /// Canonical reference to record in the store.
    pub reference: String,
    pub manifest_digest: Option<String>,
}

/// Fetch `source` — an `oci://` reference or a bundle directory — with its signature.
pub async fn fetch(source: &str, registry: &oci::Options) -> Result<Fetched, InstallError> {
    if source.starts_with("oci://") {
        let r = oci::OciRef::parse(source)?;
        let pulled = oci::pull(&r, registry).await?;
        return Ok(Fetched {
            bundle: pulled.bundle,
            signature: pulled.signature,
            signature_desc: format!("{source} (signature layer)"),
            reference: source.to_owned(),
            manifest_digest: Some(pulled.manifest_digest),
        });
    }
    let path = PathBuf::from(source);
    let b = Bundle::read(&path)?;
    let sig_path = bundle::signature_path(&path);
    let reference = std::fs::canonicalize(&path)
        .map_err(|source| InstallError::Path {
            path: path.display().to_string(),
            source,
        })?
        .display()
        .to_string();
    Ok(Fetched {
        bundle: b,
        signature: bundle::read_signature(&sig_path)?,
        signature_desc: sig_path.display().to_string(),
        reference,
        manifest_digest: None,
    })
}

/// Load the bundle's component (compiling it through the cache) and check that what
/// the bundle declares is what the component really imports and requests: a bundle
/// cannot hide a capability.
pub async fn check_component(
    host: &PluginHost,
    b: &Bundle,
    origin: &str,
) -> Result<(), InstallError> {
    let p = host.inspect(&b.metadata.name, &b.component, origin).await?;
    bundle::check_against_component(&b.metadata, p.info(), p.requested())
        .map_err(|e| InstallError::Refused(format!("{origin}: {e}")))
}

/// The key id a signature names (unverified), for listings: `none`, or `unreadable`.
pub fn signer_of(signature: Option<&str>) -> String {
    match signature.map(minisign::SignatureBox::from_string) {
        None => "none".into(),
        Some(Ok(s)) => bundle::key_id(s.keynum()),
        Some(Err(_)) => "unreadable".into(),
    }
}

/// Digests whose compiled code is worth keeping: built-in and installed providers.
pub fn keep_set(store: &PluginStore) -> Result<BTreeSet<String>, StoreError> {
    let mut keep: BTreeSet<String> = crate::distribution::builtins::BUILTINS
        .iter()
        .map(|(_, b)| bundle::digest(b))
        .collect();
    keep.extend(store.digests()?);
    Ok(keep)
}

/// What [`install`] put in the store.
pub struct Installed {
    pub installed: crate::distribution::store::Installed,
    /// `signed by trusted key ID (NAME)`, or why it runs unsigned.
    pub signer: String,
    /// How long checking the component took (compiling it for this machine).
    pub compiled: Duration,
}

/// Fetch, check and install a bundle: components and declared capabilities agree, the
/// signature verifies with a trusted key (or `allow_unsigned`), then the store gets it
/// whole and the compile cache gets its native code. Nothing is written before every
/// check passed.
pub async fn install(
    host: &PluginHost,
    store: &PluginStore,
    source: &str,
    keys: &[TrustedKey],
    allow_unsigned: bool,
    registry: &oci::Options,
) -> Result<Installed, InstallError> {
    let f = fetch(source, registry).await?;
    let signer = match &f.signature {
        Some(text) => {
            let k = bundle::verify(&f.bundle.component, text, &f.signature_desc, keys)?;
            format!("signed by trusted key {} ({})", k.id, k.name)
        }
        None if allow_unsigned => "UNSIGNED (--allow-unsigned)".to_owned(),
        None => {
            return Err(InstallError::Refused(format!(
                "{source}: not signed; install signed bundles (`tenet plugin sign`), or pass --allow-unsigned"
            )));
        }
    };
    let started = std::time::Instant::now();
    check_component(host, &f.bundle, source).await?;
    let compiled = started.elapsed();
    let installed = store.install(&f.bundle, f.signature.as_deref(), Some(&f.reference))?;
    Ok(Installed {
        installed,
        signer,
        compiled,
    })
}

/// Make sure the store holds what an `oci://` provider needs: the pinned bytes (pulled
/// by manifest digest when the lock records one), or — unpinned or upgrading — what the
/// reference points to now, signed by one of `trusted` (unless `allow_unsigned`), verified
/// and checked before anything is stored. Returns the component digest and, when
/// something was pulled, the manifest digest.
pub async fn ensure_installed(
    store: &PluginStore,
    trusted: &[TrustedKey],
    (name, reference): (&str, &str),
    pinned: Option<&Pin>,
    allow_unsigned: bool,
    registry: &oci::Options,
    host: &PluginHost,
) -> Result<(String, Option<String>), InstallError> {
    // The pinned bytes with the pinned signer's signature are already here. (The store
    // keeps one signature per digest: if another install replaced it, fetch again.)
    if let Some(pin) = pinned
        && let Some(i) = store.get(&pin.component_sha256)?
        && i.signature.as_deref().map(|t| signer_of(Some(t))) == pin.signer
    {
        return Ok((pin.component_sha256.clone(), None));
    }
    let r = oci::OciRef::parse(reference)?;
    let target = match pinned.and_then(|p| p.oci_manifest.as_deref()) {
        Some(d) => r.at_digest(d),
        None => r,
    };
    let f = fetch(&target.text, registry).await?;
    if let Some(pin) = pinned
        && pin.component_sha256 != f.bundle.metadata.component_sha256
    {
        return Err(InstallError::Refused(format!(
            "provider `{name}`: {} serves sha256 {}, but tenet.lock pins sha256 {}; run `tenet lock --upgrade {name}` to move the pin",
            target.text, f.bundle.metadata.component_sha256, pin.component_sha256
        )));
    }
    match &f.signature {
        Some(text) => {
            bundle::verify(&f.bundle.component, text, &f.signature_desc, trusted)
                .map_err(|e| InstallError::Refused(format!("provider `{name}`: {e}")))?;
        }
        None if allow_unsigned => {}
        None => {
            return Err(InstallError::Refused(format!(
                "provider `{name}`: {} is not signed; ask its publisher for a signed bundle, or pass --allow-unsigned",
                target.text
            )));
        }
    }
    check_component(host, &f.bundle, &target.text).await?;
    let i = store.install(&f.bundle, f.signature.as_deref(), None)?;
    Ok((i.digest, f.manifest_digest))
}
