//! What every command that works on a manifest starts with (`lock`, `init` and
//! `providers` use only its [`Sources`]): load the manifest, load its providers, and validate
//! everything (structure, kinds, schemas, provider checks, grants, graph), reporting every
//! problem at once before any resource is read.

use super::ManifestArgs;
use crate::diag::{Diagnostics, ValidationFailed};
use crate::engine::{Engine, RunOptions};
use crate::graph::{Graph, GraphInput};
use crate::lockfile::{self, LockFile};
use crate::manifest::{self, Manifest, check, protect};
use crate::plan::ProviderPin;
use crate::plugin::{CompileCache, PluginHost, WasmProvider};
use crate::provider::{CallContext, Provider, ProviderInfo};
use crate::source::{self, Provenance, TrustPolicy};
use crate::store::PluginStore;
use std::collections::BTreeMap;
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
        args: &ManifestArgs,
        host: &PluginHost,
    ) -> Result<Sources, lockfile::LockError> {
        let lock_path = lockfile::path_for(&manifest.path);
        let store = PluginStore::open_default();
        Ok(Sources {
            owned: owned_paths(manifest, args, host, &store),
            store,
            lock: LockFile::read(&lock_path)?,
            lock_path,
            allow_unsigned: args.allow_unsigned,
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
            crate::bundle::check_against_component(meta, provider.info(), provider.requested())
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
    args: &ManifestArgs,
    host: &PluginHost,
    store: &PluginStore,
) -> Vec<protect::Owned> {
    // The state first: of all a grant may reach, it is what matters most to name.
    let mut owned = protect::Owned::state(&args.location.path_for(&args.path));
    owned.extend(protect::Owned::of_manifest(manifest, &args.values));
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

pub struct Session {
    pub manifest: Manifest,
    pub graph: Graph,
    pub providers: BTreeMap<String, Arc<WasmProvider>>,
    /// Why each provider may run (built in, signed by whom, or unsigned and why).
    pub provenance: BTreeMap<String, Provenance>,
    pub warnings: Diagnostics,
    // Keeps the engine and deadline ticker alive for the providers.
    _host: PluginHost,
}

impl Session {
    /// Load the manifest and its providers; `Err` carries every problem found.
    pub async fn open(args: &ManifestArgs) -> anyhow::Result<Session> {
        Self::open_with_cache(args, CompileCache::new(CompileCache::default_dir())).await
    }

    /// [`Session::open`] with a given compile cache.
    pub async fn open_with_cache(
        args: &ManifestArgs,
        cache: CompileCache,
    ) -> anyhow::Result<Session> {
        Self::open_loaded(args, args.load_options()?, cache).await
    }

    /// A session on a recorded manifest (rollback): `snapshot` instead of the files.
    pub async fn open_snapshot(
        args: &ManifestArgs,
        snapshot: manifest::Snapshot,
    ) -> anyhow::Result<Session> {
        let options = manifest::LoadOptions {
            snapshot: Some(snapshot),
            ..manifest::LoadOptions::default()
        };
        Self::open_loaded(
            args,
            options,
            CompileCache::new(CompileCache::default_dir()),
        )
        .await
    }

    async fn open_loaded(
        args: &ManifestArgs,
        options: manifest::LoadOptions,
        cache: CompileCache,
    ) -> anyhow::Result<Session> {
        let (mut manifest, mut diags) = manifest::load(&args.path, &options);
        let host = PluginHost::new(cache)?;
        let mut providers = BTreeMap::new();
        let mut provenance = BTreeMap::new();
        match Sources::new(&manifest, args, &host) {
            Ok(sources) => {
                // Reported at each grant's place; those providers are not loaded.
                let (found, refused) = protect::check(&manifest, &sources.owned);
                diags.extend(found);
                for decl in manifest.providers.values() {
                    // Its grants reach Tenet's own files: already reported, never run.
                    if refused.contains(&decl.name) {
                        continue;
                    }
                    match sources
                        .load(&host, &manifest, decl, PinCheck::Enforce)
                        .await
                    {
                        Ok(l) => {
                            providers.insert(decl.name.clone(), l.provider);
                            provenance.insert(decl.name.clone(), l.provenance);
                        }
                        Err(e) => diags.error(Some(decl.location.clone()), e),
                    }
                }
            }
            Err(e) => diags.error(None, e.to_string()),
        }
        let infos: BTreeMap<String, &ProviderInfo> = providers
            .iter()
            .map(|(n, p)| (n.clone(), p.info()))
            .collect();
        let (found, passed) = check::check(&mut manifest, &infos);
        diags.extend(found);

        // The providers' own checks, for resources that passed the host's, in parallel.
        let mut checks = tokio::task::JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(
            crate::engine::DEFAULT_PARALLELISM,
        ));
        for (i, r) in manifest.resources.iter().enumerate() {
            let Some(p) = providers
                .get(&r.provider)
                .filter(|_| passed.contains(&r.id))
            else {
                continue;
            };
            let (p, id, kind, props) = (
                p.clone(),
                r.id.clone(),
                r.kind.clone(),
                r.properties.clone(),
            );
            let slot = slots.clone().acquire_owned().await?;
            checks.spawn(async move {
                let _slot = slot;
                (
                    i,
                    p.validate(CallContext { resource: &id }, &kind, &props)
                        .await,
                )
            });
        }
        let mut found: Vec<_> = checks.join_all().await;
        found.sort_by_key(|(i, _)| *i);
        for (i, result) in found {
            let r = &manifest.resources[i];
            match result {
                Ok(problems) => {
                    // Values built from references are checked once known, not as text.
                    let referencing = crate::graph::refs::Referencing::of(&r.properties);
                    for d in problems
                        .into_iter()
                        .filter(|d| !referencing.covers(&d.path))
                    {
                        let msg = format!(
                            "resource `{}` ({}): {}{}",
                            r.id,
                            r.type_name,
                            if d.path.is_empty() {
                                String::new()
                            } else {
                                format!("property `{}`: ", d.path)
                            },
                            d.message
                        );
                        let loc = Some(r.property_location(&d.path));
                        if d.is_error {
                            diags.error(loc, msg);
                        } else {
                            diags.warning(loc, msg);
                        }
                    }
                }
                Err(e) => diags.error(Some(r.location.clone()), e.to_string()),
            }
        }

        let kinds: Vec<Option<&crate::provider::KindInfo>> = manifest
            .resources
            .iter()
            .map(|r| {
                providers
                    .get(&r.provider)
                    .and_then(|p| p.info().kinds.get(&r.kind))
            })
            .collect();
        let fields: Vec<_> = kinds
            .iter()
            .map(|k| k.map(check::referable_fields))
            .collect();
        let paths: Vec<_> = manifest
            .resources
            .iter()
            .zip(&kinds)
            .map(|(r, k)| k.map(|k| check::managed_paths(r, k)).unwrap_or_default())
            .collect();
        let graph = match Graph::build(GraphInput {
            resources: &manifest.resources,
            rejected: &manifest.rejected_ids,
            fields: &fields,
            paths: &paths,
        }) {
            Ok(g) => Some(g),
            Err(d) => {
                diags.extend(d);
                None
            }
        };
        let warnings = diags.into_result()?;
        let graph = graph.ok_or_else(|| ValidationFailed(Diagnostics::new()))?;
        Ok(Session {
            manifest,
            graph,
            providers,
            provenance,
            warnings,
            _host: host,
        })
    }

    pub fn engine(&self) -> Engine {
        Engine::new(
            self.providers
                .iter()
                .map(|(n, p)| (n.clone(), p.clone() as Arc<dyn Provider>))
                .collect(),
        )
    }

    /// Run options: `parallelism` overall, each provider's `max_concurrency`.
    pub fn run_options(&self, parallelism: usize, fail_fast: bool) -> RunOptions {
        RunOptions {
            parallelism,
            provider_limits: self
                .manifest
                .providers
                .values()
                .filter_map(|p| p.max_concurrency.map(|m| (p.name.clone(), m)))
                .collect(),
            fail_fast,
            unchecked_providers: self
                .manifest
                .providers
                .values()
                .filter(|p| !p.consistency_check)
                .map(|p| p.name.clone())
                .collect(),
            ..RunOptions::default()
        }
    }

    /// Plan the manifest against the system, plus — given the state — the deletion of
    /// what the state remembers and the manifest no longer declares.
    pub async fn plan(
        &self,
        state: Option<&dyn crate::state::StateStore>,
        options: &RunOptions,
    ) -> anyhow::Result<crate::plan::Plan> {
        let (gone, forget) = match state {
            Some(store) => super::history::orphans(store, &self.manifest)?,
            None => (Vec::new(), Vec::new()),
        };
        let mut plan = self
            .engine()
            .plan_with_orphans(&self.manifest, &self.graph, &gone, self.pins(), options)
            .await;
        plan.forget = forget;
        Ok(plan)
    }

    /// The exact providers in use, for the plan.
    pub fn pins(&self) -> BTreeMap<String, ProviderPin> {
        self.providers
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    ProviderPin {
                        source: p.source().to_owned(),
                        version: p.info().version.clone(),
                        component_sha256: p.sha256().to_owned(),
                        provenance: self.provenance.get(n).cloned(),
                        granted: p.capabilities().grant_lines(),
                        missing: p
                            .capabilities()
                            .requirements(p.requested())
                            .into_iter()
                            .filter(|r| !r.granted)
                            .map(|r| format!("{} ({})", r.capability, r.reason))
                            .collect(),
                    },
                )
            })
            .collect()
    }

    pub fn print_warnings(&self) {
        if !self.warnings.is_empty() {
            eprint!("{}", self.warnings.clone().sorted());
        }
    }
}
