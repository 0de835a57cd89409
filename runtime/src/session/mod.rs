//! The loader stage (Spin's loader as a library): a manifest, its providers' sources
//! and pins, the providers loaded in the sandbox, every check (structure, kinds,
//! schemas, the providers' own validation, grants, the graph) → a [`Session`], ready to
//! plan. Every problem is reported at once, before any resource is read. Nothing here
//! prints: warnings travel in [`Session::warnings`].

mod checks;
pub mod install;
pub mod sources;

pub use sources::{Loaded, PinCheck, Sources, load_manifest};

use crate::diag::{Diagnostics, ValidationFailed};
use crate::distribution::source::Provenance;
use crate::engine::{Engine, RunOptions};
use crate::graph::{Graph, GraphInput};
use crate::manifest::{self, Manifest, check, protect};
use crate::plan::ProviderPin;
use crate::provider::{Provider, ProviderInfo};
use crate::wasm::plugin::{CompileCache, PluginError, PluginHost, WasmProvider};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What a session is opened from: the manifest, its variables, how strict the trust
/// policy is, and where the state lives (no grant may reach it).
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Manifest file, or directory whose `*.yaml` files are merged.
    pub path: PathBuf,
    /// `--var NAME=VALUE`, in order (later wins).
    pub vars: Vec<(String, String)>,
    /// `--values FILE`, in order (later wins).
    pub values_files: Vec<PathBuf>,
    /// Run providers that carry no signature (a signature that is present must still
    /// verify).
    pub allow_unsigned: bool,
    /// Where the state lives.
    pub state: crate::state::Location,
    /// Facts to use instead of this host's (`--facts FILE`).
    pub facts: Option<serde_json::Value>,
    /// Where external facts are (`--facts-dir`).
    pub facts_dir: Option<PathBuf>,
    /// `--override-policy RULE --reason TEXT`: soft-mandatory denials let through in
    /// this run (recorded with who and why).
    pub policy_overrides: Vec<(String, String)>,
    /// The desired-state artifact the manifest was unpacked from (the agent's
    /// `--source`), recorded with every run.
    pub artifact: Option<crate::manifest::Artifact>,
}

impl SessionOptions {
    /// The manifest loader's options, reading the files on disk.
    pub fn load_options(&self) -> manifest::LoadOptions {
        manifest::LoadOptions {
            vars: self.vars.clone(),
            values_files: self.values_files.clone(),
            snapshot: None,
            facts: self.facts.clone(),
            facts_dir: self.facts_dir.clone(),
            artifact: self.artifact.clone(),
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The manifest, a provider or the graph has problems: all of them, with places.
    #[error(transparent)]
    Invalid(#[from] ValidationFailed),
    /// The sandbox could not be set up (the wasmtime engine, the deadline ticker).
    #[error(transparent)]
    Host(#[from] PluginError),
    /// A preflight policy denied the manifest: no provider was loaded.
    #[error("denied by policy before any provider was loaded ({} denial(s))", .0.results.iter().filter(|r| r.blocks()).count())]
    Denied(Box<crate::policy::Decision>),
    /// The policy set could not decide (an error or a timeout while evaluating): fail
    /// closed, nothing was loaded.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

/// A loaded, validated manifest with its providers and its dependency graph.
pub struct Session {
    pub manifest: Manifest,
    pub graph: Graph,
    pub providers: BTreeMap<String, Arc<WasmProvider>>,
    /// Why each provider may run (built in, signed by whom, or unsigned and why).
    pub provenance: BTreeMap<String, Provenance>,
    pub warnings: Diagnostics,
    /// The manifest's policy set, when it has one.
    pub policies: Option<crate::policy::Policies>,
    /// Its preflight decision (nothing in it blocks: a blocking one stops the session).
    pub preflight: Option<crate::policy::Decision>,
    // Keeps the engine and deadline ticker alive for the providers.
    _host: PluginHost,
}

impl Session {
    /// Load the manifest and its providers; `Err` carries every problem found.
    pub async fn open(options: &SessionOptions) -> Result<Session, SessionError> {
        Self::open_with_cache(options, CompileCache::new(CompileCache::default_dir())).await
    }

    /// [`Session::open`] with a given compile cache.
    pub async fn open_with_cache(
        options: &SessionOptions,
        cache: CompileCache,
    ) -> Result<Session, SessionError> {
        Self::open_loaded(options, options.load_options(), cache).await
    }

    /// A session on a recorded manifest (rollback): `snapshot` instead of the files.
    pub async fn open_snapshot(
        options: &SessionOptions,
        snapshot: manifest::Snapshot,
    ) -> Result<Session, SessionError> {
        let load = manifest::LoadOptions {
            snapshot: Some(snapshot),
            ..manifest::LoadOptions::default()
        };
        Self::open_loaded(
            options,
            load,
            CompileCache::new(CompileCache::default_dir()),
        )
        .await
    }

    async fn open_loaded(
        options: &SessionOptions,
        load: manifest::LoadOptions,
        cache: CompileCache,
    ) -> Result<Session, SessionError> {
        let (mut manifest, mut diags) = load_manifest(&options.path, &load);
        // Policies first: a policy set that does not load, or denies the manifest and
        // its grants, stops everything before any provider code is compiled or run.
        let before = diags.len();
        let (policies, preflight) =
            match crate::policy::preflight(&manifest, &options.policy_overrides, &mut diags)? {
                Some((p, d)) => (Some(p), d),
                None => (None, None),
            };
        if diags.len() > before {
            diags = diags.into_result()?;
        }
        if let Some(d) = &preflight
            && d.blocked()
        {
            return Err(SessionError::Denied(Box::new(d.clone())));
        }
        let host = PluginHost::new(cache)?;
        let mut providers = BTreeMap::new();
        let mut provenance = BTreeMap::new();
        match Sources::new(&manifest, options, &host) {
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
        diags.extend(checks::provider_checks(&manifest, &providers, &passed).await);

        let graph = match graph_of(&manifest, &providers) {
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
            policies,
            preflight,
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

    /// What each provider's component asks for, and whether it is granted:
    /// `[{capability, reason, granted}]` by provider (policies read it).
    pub fn requested(&self) -> BTreeMap<String, serde_json::Value> {
        self.providers
            .iter()
            .map(|(n, p)| {
                let list: Vec<serde_json::Value> = p
                    .capabilities()
                    .requirements(p.requested())
                    .into_iter()
                    .map(|r| {
                        serde_json::json!({"capability": r.capability, "reason": r.reason, "granted": r.granted})
                    })
                    .collect();
                (n.clone(), serde_json::Value::Array(list))
            })
            .collect()
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
}

/// The dependency graph, from what each resource's kind says it references and manages.
fn graph_of(
    manifest: &Manifest,
    providers: &BTreeMap<String, Arc<WasmProvider>>,
) -> Result<Graph, Diagnostics> {
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
    Graph::build(GraphInput {
        resources: &manifest.resources,
        rejected: &manifest.rejected_ids,
        excluded: &manifest.excluded,
        fields: &fields,
        paths: &paths,
    })
}

#[cfg(test)]
mod tests;
