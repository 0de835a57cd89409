//! Where a manifest's providers come from and what may run: resolving each provider's
//! source under the project's trust policy, checking it against `tenet.lock` before any
//! of its code runs, refusing grants that reach the host's own files, and loading it.
//! `tenet lock`, `init` and `providers` use this without a whole [`super::Session`].

use super::SessionOptions;
use crate::distribution::lockfile::{self, LockFile};
use crate::distribution::source::{self, Provenance, TrustPolicy};
use crate::distribution::store::PluginStore;
use crate::manifest::{self, Manifest, protect};
use crate::provider::Provider;
use crate::wasm::plugin::{PluginHost, WasmProvider};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a manifest's providers come from and what may run: the plugin store, the lock
/// file, `--allow-unsigned`.
pub struct Sources {
    pub store: PluginStore,
    pub lock: Option<LockFile>,
    pub lock_path: PathBuf,
    pub allow_unsigned: bool,
    /// The paths the host owns: a provider whose grants reach one is never loaded.
    pub owned: Vec<protect::Owned>,
}

/// A provider loaded under the project's policy.
pub struct Loaded {
    pub provider: Arc<WasmProvider>,
    pub provenance: Provenance,
}

impl Sources {
    pub fn new(
        manifest: &Manifest,
        options: &SessionOptions,
        host: &PluginHost,
    ) -> Result<Sources, lockfile::LockError> {
        let lock_path = lockfile::path_for(&manifest.path);
        let store = PluginStore::open_default();
        Ok(Sources {
            owned: owned_paths(manifest, options, host, &store),
            store,
            lock: LockFile::read(&lock_path)?,
            lock_path,
            allow_unsigned: options.allow_unsigned,
        })
    }

    /// Resolve `decl`'s source (signature policy included), check it against
    /// `tenet.lock` (`PinCheck::Enforce`) before any of its code runs, load it, and check a
    /// bundle's declared metadata against the component. The error names the provider.
    pub async fn load(
        &self,
        host: &PluginHost,
        manifest: &Manifest,
        decl: &manifest::ProviderDecl,
        pins: PinCheck<'_>,
    ) -> Result<Loaded, String> {
        // Before anything of it runs: `describe` would already see its grants.
        let refused = protect::check_provider(decl, &self.owned);
        if !refused.is_empty() {
            return Err(refused.to_string().trim_end().to_owned());
        }
        let enforce = matches!(pins, PinCheck::Enforce);
        let policy = TrustPolicy {
            trusted: &manifest.trusted_keys,
            allow_unsigned: self.allow_unsigned,
            store: &self.store,
            lock: self
                .lock
                .as_ref()
                .filter(|_| enforce)
                .map(|l| (l, self.lock_path.as_path())),
            oci_digest: match pins {
                PinCheck::Enforce => None,
                PinCheck::Writing { oci_digest, .. } => oci_digest,
            },
        };
        let resolved = source::resolve(decl, &policy).map_err(|e| e.to_string())?;
        // While writing the lock, a pin that stays must still match — checked here,
        // before any of the provider's code runs.
        if let PinCheck::Writing { pin: Some(pin), .. } = pins
            && !pin.builtin
        {
            pin.check(
                &self.lock_path,
                &decl.name,
                &resolved.origin,
                (&resolved.sha256, resolved.provenance.signer()),
            )
            .map_err(|e| e.to_string())?;
        }
        if enforce && let Some(lock) = &self.lock {
            let builtin = matches!(decl.source, manifest::ProviderSource::Builtin(_));
            lock.check(
                &self.lock_path,
                &decl.name,
                (
                    &lockfile::source_of(&decl.source, &manifest.base_dir),
                    &resolved.origin,
                ),
                (&resolved.sha256, resolved.provenance.signer()),
                builtin,
            )
            .map_err(|e| e.to_string())?;
        }
        let provider = host
            .load(decl, &resolved.bytes, &resolved.sha256, &resolved.origin)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(meta) = &resolved.metadata {
            crate::distribution::bundle::check_against_component(
                meta,
                provider.info(),
                provider.requested(),
            )
            .map_err(|e| format!("provider `{}`: {}: {e}", decl.name, resolved.origin))?;
        }
        Ok(Loaded {
            provider,
            provenance: resolved.provenance,
        })
    }
}

/// Every path this run's host owns, which no grant may reach (see [`protect`]).
fn owned_paths(
    manifest: &Manifest,
    options: &SessionOptions,
    host: &PluginHost,
    store: &PluginStore,
) -> Vec<protect::Owned> {
    // The state first: of all a grant may reach, it is what matters most to name.
    let mut owned = options
        .state
        .file_for(&options.path)
        .map(|f| protect::Owned::state(&f))
        .unwrap_or_default();
    owned.extend(protect::Owned::of_manifest(manifest, &options.values_files));
    if let Some(root) = host.cache().root() {
        owned.push(protect::Owned::new(
            root,
            "the compile cache",
            protect::Guard::NoAccess,
        ));
    }
    if let Some(key) = host.cache().key_file() {
        owned.push(protect::Owned::new(
            key,
            "the compile cache's key",
            protect::Guard::NoAccess,
        ));
    }
    owned.push(protect::Owned::new(
        store.root(),
        "the plugin store",
        protect::Guard::NoAccess,
    ));
    owned
}

/// How [`Sources::load`] uses `tenet.lock`.
#[derive(Debug, Clone, Copy)]
pub enum PinCheck<'a> {
    /// Check the provider against its pin before it runs; `oci://` at the pinned digest.
    Enforce,
    /// While writing the lock: `oci://` at `oci_digest` if given, and the bytes and
    /// signer checked against `pin` (a pin that stays) before the provider runs.
    Writing {
        oci_digest: Option<&'a str>,
        pin: Option<&'a lockfile::Pin>,
    },
}

/// The manifest as the operator wrote it, with its providers' sources checked too: an
/// `oci://` reference must name a registry host and a tag or digest (reported at the
/// `source:` value). What every command that loads providers starts with.
pub fn load_manifest(
    path: &std::path::Path,
    options: &manifest::LoadOptions,
) -> (Manifest, crate::diag::Diagnostics) {
    let (manifest, mut diags) = manifest::load(path, options);
    for decl in manifest.providers.values() {
        if let manifest::ProviderSource::Oci(reference) = &decl.source
            && let Err(e) = crate::distribution::oci::OciRef::parse(reference)
        {
            diags.error(
                Some(
                    decl.source_location
                        .clone()
                        .unwrap_or_else(|| decl.location.clone()),
                ),
                format!("source of provider `{}`: {e}", decl.name),
            );
        }
    }
    (manifest, diags)
}
