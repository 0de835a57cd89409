//! Loading providers: read the component (embedded or from a path), check it is a
//! component speaking a supported `tenet:provider` ABI and importing only what the host
//! provides, compile it through the on-disk cache, pre-instantiate it once, and ask it to
//! `describe` itself. The result implements the engine's [`Provider`] trait.
//!
//! One [`PluginHost`] per process owns the wasmtime `Engine`, the `Linker`, the epoch
//! ticker that enforces deadlines, and the compile cache.

mod cache;
mod instance;
mod ticker;

pub use cache::CompileCache;
pub use instance::WasmProvider;

use crate::manifest::{Grants, ProviderDecl, ProviderSource};
use crate::provider::{KindInfo, ProviderInfo};
use crate::wasm::bindings;
use crate::wasm::grants::Capabilities;
use crate::wasm::host::HostState;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};

use wasmtime::{Config, Engine};

pub use crate::provider::{ABI_INTERFACE, SUPPORTED_ABI};

/// What a provider may import: (`package/interface` prefix, supported semver range).
/// WASI 0.2 interfaces are constrained by the grants (sockets and DNS always off, env and
/// directories only as granted, outgoing HTTP only to granted origins); imports that need
/// a grant are listed in [`GRANT_NEEDED`].
const PROVIDED_IMPORTS: &[(&str, &str)] = &[
    ("wasi:http/", ">=0.2.0, <0.3.0"),
    ("tenet:host/exec", ">=0.1.1, <0.2.0"),
    ("wasi:cli/", ">=0.2.0, <0.3.0"),
    ("wasi:clocks/", ">=0.2.0, <0.3.0"),
    ("wasi:filesystem/", ">=0.2.0, <0.3.0"),
    ("wasi:io/", ">=0.2.0, <0.3.0"),
    ("wasi:random/", ">=0.2.0, <0.3.0"),
    ("wasi:sockets/", ">=0.2.0, <0.3.0"),
    ("tenet:host/log", ">=0.1.0, <0.2.0"),
    ("tenet:host/fs-ext", ">=0.1.0, <0.2.0"),
    // Type-only interface the world pulls in; it has no functions.
    ("tenet:provider/types", ">=0.1.0, <0.2.0"),
];
/// Imports that are refused unless the manifest grants the matching capability:
/// (interface, grant key in the manifest).
const GRANT_NEEDED: &[(&str, &str)] = &[
    ("tenet:host/exec", "exec"),
    ("wasi:http/outgoing-handler", "net"),
];
/// Most entries of each list a provider's `capabilities.requested` may return.
pub const MAX_REQUESTS: usize = 256;
/// Most resource kinds one provider may describe.
pub const MAX_KINDS: usize = 256;

/// Period of the epoch ticker; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a provider could not be loaded. Every case names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "provider `{plugin}`: {source_desc} is not a Tenet provider: expected a WebAssembly component exporting {ABI_INTERFACE}@0.1.x, found {found}"
    )]
    NotAComponent {
        plugin: String,
        source_desc: String,
        found: String,
    },
    #[error(
        "provider `{plugin}`: unsupported ABI version {found} of {ABI_INTERFACE}; this Tenet supports {SUPPORTED_ABI}"
    )]
    Abi { plugin: String, found: String },
    #[error(
        "provider `{plugin}` imports `{import}`, which this host does not provide (it provides wasi:cli, clocks, filesystem, http, io, random, sockets @0.2, and tenet:host/log, fs-ext @0.1, exec @0.1.1)"
    )]
    UnsupportedImport { plugin: String, import: String },
    #[error(
        "provider `{plugin}` imports `{import}`, which needs the `{grant}` grant, and the manifest grants it none (add `grants: {{{grant}: [...]}}` to provider `{plugin}`)"
    )]
    NotGranted {
        plugin: String,
        import: String,
        grant: &'static str,
    },
    #[error("cannot set up the WebAssembly engine: {message}")]
    Engine { message: String },
    #[error("provider `{plugin}`: cannot compile component: {message}")]
    Compile { plugin: String, message: String },
    #[error("provider `{plugin}`: cannot instantiate: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("provider `{plugin}`: describe failed: {message}")]
    Describe { plugin: String, message: String },
}

/// Owns the wasmtime engine, linker, deadline ticker and compile cache.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    ticker: Arc<ticker::Ticker>,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

impl PluginHost {
    /// A host with the given compile cache.
    pub fn new(cache: CompileCache) -> Result<Self, PluginError> {
        let engine_err = |e: &dyn std::fmt::Display| PluginError::Engine {
            message: e.to_string(),
        };
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| engine_err(&e))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| engine_err(&e))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| engine_err(&e))?;
        bindings::Provider::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| engine_err(&e))?;

        let ticker = ticker::Ticker::start(&engine).map_err(|e| engine_err(&e))?;
        Ok(PluginHost {
            engine,
            linker,
            cache,
            ticker,
        })
    }

    pub fn cache(&self) -> &CompileCache {
        &self.cache
    }

    /// Garbage-collect the compile cache: keep only this engine's artifacts of `keep`.
    pub fn gc_cache(
        &self,
        keep: &std::collections::BTreeSet<String>,
    ) -> std::io::Result<(usize, u64, usize)> {
        self.cache.gc(&self.engine, keep)
    }

    /// Verify, compile and describe the provider `decl` declares, from its component's
    /// `bytes` (whose sha256 is `sha256`, from `origin`) as the distribution side resolved
    /// and signature-checked them: the loader knows bytes, not the supply chain.
    pub async fn load(
        &self,
        decl: &ProviderDecl,
        bytes: &[u8],
        sha256: &str,
        origin: &str,
    ) -> Result<Arc<WasmProvider>, PluginError> {
        self.load_bytes(decl, bytes, Some(sha256), origin, true)
            .await
    }

    /// Load a component to describe it, whatever it imports (nothing is granted: every
    /// host call it made would be refused). For packing and inspecting bundles.
    pub async fn inspect(
        &self,
        name: &str,
        bytes: &[u8],
        source_desc: &str,
    ) -> Result<Arc<WasmProvider>, PluginError> {
        let decl = ProviderDecl {
            name: name.to_owned(),
            source: ProviderSource::Builtin(name.to_owned()),
            grants: Grants::default(),
            limits: crate::manifest::Limits::default(),
            max_concurrency: None,
            consistency_check: true,
            unsigned: false,
            retry: None,
            location: crate::diag::Location::new(source_desc, 1, 1),
            source_location: None,
        };
        self.load_bytes(&decl, bytes, None, source_desc, false)
            .await
    }

    async fn load_bytes(
        &self,
        decl: &ProviderDecl,
        bytes: &[u8],
        sha256: Option<&str>,
        source_desc: &str,
        enforce_grants: bool,
    ) -> Result<Arc<WasmProvider>, PluginError> {
        let plugin = decl.name.clone();
        let source_desc = source_desc.to_owned();
        let bytes = bytes.to_vec();
        check_header(&plugin, &source_desc, &bytes)?;
        // Hashed once, where the bytes were read (sources), or here (inspect).
        let sha256 = sha256.map_or_else(|| crate::digest::sha256_hex(&bytes), str::to_owned);
        let component = self
            .cache
            .load(&self.engine, &sha256, &bytes)
            .map_err(|e| PluginError::Compile {
                plugin: plugin.clone(),
                message: format!("{e:#}"),
            })?;
        let abi = check_abi(&self.engine, &component, &plugin, &source_desc)?;
        let imports = check_imports(
            &self.engine,
            &component,
            &plugin,
            &decl.grants,
            enforce_grants,
        )?;
        let instantiate_err = |e: wasmtime::Error| PluginError::Instantiate {
            plugin: plugin.clone(),
            message: format!("{e:#}"),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(instantiate_err)?;
        let resources = bindings::resources::GuestIndices::new(&pre).map_err(instantiate_err)?;
        // Optional: providers built against tenet:provider 0.1.0 do not export it.
        let caps = bindings::caps::GuestIndices::new(&pre).ok();
        // Optional: only since tenet:provider 0.1.2.
        let batch = bindings::batch::GuestIndices::new(&pre).ok();
        let execution = bindings::execution::GuestIndices::new(&pre).ok();
        let grants =
            Capabilities::new(&plugin, &decl.grants).map_err(|e| PluginError::Instantiate {
                plugin: plugin.clone(),
                message: e.to_string(),
            })?;
        let provider = WasmProvider::new(
            plugin.clone(),
            decl.source.to_string(),
            sha256,
            instance::Exports {
                pre,
                resources,
                caps,
                batch,
                execution,
            },
            Arc::new(grants),
            decl.limits,
            self.ticker.clone(),
        );
        let info = provider
            .describe()
            .await
            .map_err(|e| PluginError::Describe {
                plugin: plugin.clone(),
                message: e.to_string(),
            })?;
        let validators = validate_info(&plugin, &info)?;
        let mut requested =
            provider
                .fetch_requested()
                .await
                .map_err(|e| PluginError::Describe {
                    plugin: plugin.clone(),
                    message: e.to_string(),
                })?;
        requested.imports = imports;
        requested.abi = abi;
        let execution =
            provider
                .fetch_execution(&info.kinds)
                .await
                .map_err(|e| PluginError::Describe {
                    plugin: plugin.clone(),
                    message: e.to_string(),
                })?;
        provider
            .capabilities()
            .set_fixed_env(execution.fixed_env.clone());
        Ok(Arc::new(
            provider.with_info(info, requested, execution, validators),
        ))
    }
}

/// Refuse non-Wasm files and core modules before handing bytes to the compiler.
fn check_header(plugin: &str, source_desc: &str, bytes: &[u8]) -> Result<(), PluginError> {
    let found = match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => return Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            "a core WebAssembly module (build a component: target wasm32-wasip2, or wrap it with `wasm-tools component new`)".to_owned()
        }
        Some([0, b'a', b's', b'm', ..]) => "a WebAssembly binary of an unknown version".to_owned(),
        _ => format!("{} bytes that are not WebAssembly", bytes.len()),
    };
    Err(PluginError::NotAComponent {
        plugin: plugin.to_owned(),
        source_desc: source_desc.to_owned(),
        found,
    })
}

fn check_abi(
    engine: &Engine,
    component: &Component,
    plugin: &str,
    source_desc: &str,
) -> Result<String, PluginError> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let prefix = format!("{ABI_INTERFACE}@");
    let Some(version) = exports.iter().find_map(|e| e.strip_prefix(&prefix)) else {
        return Err(PluginError::NotAComponent {
            plugin: plugin.to_owned(),
            source_desc: source_desc.to_owned(),
            found: if exports.is_empty() {
                "a component with no exports".to_owned()
            } else {
                format!("a component exporting {}", exports.join(", "))
            },
        });
    };
    let supported = semver::VersionReq::parse(SUPPORTED_ABI).map_err(|e| PluginError::Abi {
        plugin: plugin.to_owned(),
        found: e.to_string(),
    })?;
    match semver::Version::parse(version) {
        Ok(v) if supported.matches(&v) => Ok(version.to_owned()),
        _ => Err(PluginError::Abi {
            plugin: plugin.to_owned(),
            found: version.to_owned(),
        }),
    }
}

/// Refuse imports the host does not provide, and imports that need a grant the manifest
/// does not give. Returns the capability-bearing imports (for the operator's report).
fn check_imports(
    engine: &Engine,
    component: &Component,
    plugin: &str,
    grants: &Grants,
    enforce_grants: bool,
) -> Result<Vec<String>, PluginError> {
    let ty = component.component_type();
    let mut bearing = Vec::new();
    for (name, _) in ty.imports(engine) {
        let iface = name.split_once('@').map_or(name, |(i, _)| i);
        if let Some((_, grant)) = GRANT_NEEDED.iter().find(|(i, _)| *i == iface) {
            let granted = match *grant {
                "exec" => !grants.exec.is_empty(),
                _ => !grants.net.is_empty(),
            };
            if !granted && enforce_grants {
                return Err(PluginError::NotGranted {
                    plugin: plugin.to_owned(),
                    import: name.to_owned(),
                    grant,
                });
            }
            bearing.push(name.to_owned());
        }
        let provided = name.split_once('@').is_some_and(|(iface, version)| {
            PROVIDED_IMPORTS.iter().any(|(prefix, range)| {
                let matches_iface = match prefix.strip_suffix('/') {
                    Some(package) => {
                        iface.starts_with(package) && iface[package.len()..].starts_with('/')
                    }
                    None => iface == *prefix,
                };
                matches_iface
                    && semver::VersionReq::parse(range)
                        .ok()
                        .zip(semver::Version::parse(version).ok())
                        .is_some_and(|(req, v)| req.matches(&v))
            })
        });
        if !provided {
            return Err(PluginError::UnsupportedImport {
                plugin: plugin.to_owned(),
                import: name.to_owned(),
            });
        }
    }
    Ok(bearing)
}

/// Check what `describe` returned; the kinds' compiled schemas, by kind, on success.
fn validate_info(
    plugin: &str,
    info: &ProviderInfo,
) -> Result<std::collections::BTreeMap<String, jsonschema::Validator>, PluginError> {
    let bad = |message: String| PluginError::Describe {
        plugin: plugin.to_owned(),
        message,
    };
    if info.kinds.is_empty() {
        return Err(bad("the provider declares no resource kinds".into()));
    }
    if info.kinds.len() > MAX_KINDS {
        return Err(bad(format!(
            "{} resource kinds, over the limit of {MAX_KINDS}",
            info.kinds.len()
        )));
    }
    info.kinds
        .values()
        .map(|KindInfo { name, schema, .. }| {
            crate::provider::compile_schema(schema)
                .map(|v| (name.clone(), v))
                .map_err(|e| bad(format!("kind `{name}` has an invalid JSON Schema: {e}")))
        })
        .collect()
}
