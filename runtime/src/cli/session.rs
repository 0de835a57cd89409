//! What every command starts with: load the manifest, load its providers, and validate
//! everything (structure, kinds, schemas, provider checks, grants, graph), reporting every
//! problem at once before any resource is read.

use super::ManifestArgs;
use crate::diag::{Diagnostics, ValidationFailed};
use crate::engine::{Engine, RunOptions};
use crate::graph::{Graph, GraphInput};
use crate::manifest::{self, Manifest, check};
use crate::plan::ProviderPin;
use crate::plugin::{CompileCache, PluginHost, WasmProvider};
use crate::provider::{CallContext, Provider, ProviderInfo};
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct Session {
    pub manifest: Manifest,
    pub graph: Graph,
    pub providers: BTreeMap<String, Arc<WasmProvider>>,
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
        for decl in manifest.providers.values() {
            match host.load(decl).await {
                Ok(p) => {
                    providers.insert(decl.name.clone(), p);
                }
                Err(e) => diags.error(Some(decl.location.clone()), e.to_string()),
            }
        }
        // `tenet.lock`, when present, pins every provider loaded from a path.
        let lock_path = crate::lockfile::path_for(&manifest.path);
        match crate::lockfile::LockFile::read(&lock_path) {
            Ok(Some(lock)) => {
                for decl in manifest.providers.values() {
                    if let Some(p) = providers.get(&decl.name) {
                        let builtin = matches!(decl.source, manifest::ProviderSource::Builtin(_));
                        if let Err(e) =
                            lock.check(&lock_path, &decl.name, p.source(), p.sha256(), builtin)
                        {
                            diags.error(Some(decl.location.clone()), e.to_string());
                        }
                    }
                }
            }
            Ok(None) => {}
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
            warnings,
            _host: host,
        })
    }

    /// The plugin host (engine, compile cache) the providers run on.
    pub fn host(&self) -> &PluginHost {
        &self._host
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
