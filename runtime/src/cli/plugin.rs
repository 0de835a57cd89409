//! Distribution commands: `tenet key generate`; `tenet plugin pack|sign|verify|inspect|
//! install|list|remove|push|pull`; `tenet init` / `tenet lock [--upgrade]`; `tenet cache
//! gc`. A bundle's metadata is read from the component itself; everything fetched is
//! checked (digest, declared capabilities against the component's real imports, the
//! signature against trusted keys) before anything is stored.

use crate::distribution::bundle::{self, Bundle, FORMAT_VERSION, Metadata};
use crate::distribution::lockfile::{LockFile, Pin};
use crate::distribution::oci;
use crate::distribution::store::PluginStore;
use crate::manifest::{ProviderSource, TrustedKey};
use crate::provider::Provider;
use crate::session::install::{
    check_component, ensure_installed, fetch, install, keep_set, signer_of,
};
use crate::wasm::plugin::{CompileCache, PluginHost};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a minisign key pair: NAME.pub (share it) and NAME.key (keep it secret;
    /// stored unencrypted, mode 0600).
    Generate {
        #[arg(long, default_value = "tenet")]
        name: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

pub fn key(args: KeyArgs) -> anyhow::Result<u8> {
    let KeyCommand::Generate { name, out } = args.command;
    let (pk, sk, id) = bundle::generate_key(&format!("tenet signing key {name}"))
        .map_err(|e| anyhow::anyhow!("cannot generate a key: {e}"))?;
    let pub_path = out.join(format!("{name}.pub"));
    let key_path = out.join(format!("{name}.key"));
    for p in [&pub_path, &key_path] {
        if p.exists() {
            bail!("{} exists; not overwriting a key", p.display());
        }
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(&pub_path, pk)
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        f.write_all(sk.as_bytes())?;
    }
    println!(
        "Key {id}: public key {}, secret key {}.",
        pub_path.display(),
        key_path.display()
    );
    Ok(0)
}

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

/// How to reach registries.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Allow plain HTTP to a registry that is not on loopback (loopback registries may
    /// always use it).
    #[arg(long)]
    insecure_http: bool,
}

impl RegistryArgs {
    pub(super) fn options(&self) -> oci::Options {
        oci::Options {
            insecure_http: self.insecure_http,
        }
    }
}

/// The keys to trust: `--trust` files plus a manifest's `trust:` list.
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// Trusted public key file (repeatable).
    #[arg(long = "trust", value_name = "KEY.pub")]
    pub(super) trust: Vec<PathBuf>,
    /// Also trust the keys listed under `trust:` in this manifest.
    #[arg(long, value_name = "PATH")]
    manifest: Option<PathBuf>,
}

impl TrustArgs {
    pub(super) fn keys(&self) -> anyhow::Result<Vec<TrustedKey>> {
        let mut keys = bundle::keys_from_files(&self.trust)?;
        if let Some(m) = &self.manifest {
            let (m, diags) = crate::manifest::load(m, &crate::manifest::LoadOptions::default());
            diags.into_result()?;
            keys.extend(m.trusted_keys);
        }
        Ok(keys)
    }
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Make a bundle from a provider component.
    Pack {
        component: PathBuf,
        /// Bundle file to write (a path ending in `/` writes a bundle directory).
        #[arg(long, short = 'o')]
        out: PathBuf,
        #[arg(long, default_value = "")]
        license: String,
        #[arg(long, default_value = "")]
        source_url: String,
    },
    /// Sign a bundle (file or directory) or a .wasm component: writes its signature
    /// (BUNDLE.minisig, DIR/signature.minisig) or --out.
    Sign {
        bundle: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
    },
    /// Check a bundle: entries, digest, declared capabilities against the component, and
    /// that a trusted key signed it.
    Verify {
        /// A bundle file or directory, or oci://host/repo:tag.
        bundle: String,
        #[command(flatten)]
        trust: TrustArgs,
        /// Detached signature (default: the bundle's own).
        #[arg(long)]
        signature: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show a bundle's metadata, capabilities, digest and signature status.
    Inspect {
        /// A bundle file or directory, oci://host/repo:tag, or an installed NAME[@VERSION]
        /// or digest.
        bundle: String,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Verify a bundle and install it into the local plugin store (content-addressed),
    /// compiling it for this machine so the first plan is fast.
    Install {
        /// A bundle file or directory, or oci://host[:port]/repo:tag|@sha256:…
        source: String,
        #[command(flatten)]
        trust: TrustArgs,
        /// Install a bundle that carries no signature.
        #[arg(long)]
        allow_unsigned: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List installed bundles.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove installed bundles (NAME, NAME@VERSION or digest) and their compiled code.
    Remove { what: String },
    /// Push a bundle (and its signature, if signed) to an OCI registry.
    Push {
        bundle: PathBuf,
        /// oci://host[:port]/repository:tag
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull a bundle from an OCI registry into a bundle file (+ .minisig), unverified.
    Pull {
        reference: String,
        #[arg(long, short = 'o')]
        out: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

fn host() -> anyhow::Result<PluginHost> {
    Ok(PluginHost::new(CompileCache::new(
        CompileCache::default_dir(),
    ))?)
}

pub async fn plugin(args: PluginArgs) -> anyhow::Result<u8> {
    match args.command {
        PluginCommand::Pack {
            component,
            out,
            license,
            source_url,
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("cannot read {}", component.display()))?;
            let host = host()?;
            let p = host
                .inspect("bundle", &bytes, &component.display().to_string())
                .await?;
            let info = p.info();
            let b = Bundle {
                metadata: Metadata {
                    format_version: FORMAT_VERSION,
                    name: info.name.clone(),
                    version: info.version.clone(),
                    description: info.description.clone(),
                    license,
                    source_url,
                    abi: p.requested().abi.clone(),
                    kinds: info.kinds.keys().cloned().collect(),
                    capabilities: p.requested().clone(),
                    component_sha256: bundle::digest(&bytes),
                },
                component: bytes,
            };
            if out.as_os_str().to_string_lossy().ends_with('/') {
                b.write_dir(&out)?;
            } else {
                b.write(&out)?;
            }
            println!(
                "Packed {} {} (sha256 {}) into {}.",
                b.metadata.name,
                b.metadata.version,
                b.metadata.component_sha256,
                out.display()
            );
            Ok(0)
        }
        PluginCommand::Sign { bundle, key, out } => {
            let b = if bundle.is_file() && crate::distribution::source::is_wasm(&bundle) {
                let bytes = std::fs::read(&bundle)
                    .with_context(|| format!("cannot read {}", bundle.display()))?;
                let p = host()?
                    .inspect("component", &bytes, &bundle.display().to_string())
                    .await?;
                Bundle {
                    metadata: Metadata {
                        format_version: FORMAT_VERSION,
                        name: p.info().name.clone(),
                        version: p.info().version.clone(),
                        description: String::new(),
                        license: String::new(),
                        source_url: String::new(),
                        abi: p.requested().abi.clone(),
                        kinds: Vec::new(),
                        capabilities: p.requested().clone(),
                        component_sha256: bundle::digest(&bytes),
                    },
                    component: bytes,
                }
            } else {
                Bundle::read(&bundle)?
            };
            let sig = bundle::sign(&b, &key)?;
            let out = out.unwrap_or_else(|| bundle::signature_path(&bundle));
            std::fs::write(&out, sig).with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "Signed {} {} (sha256 {}): {}.",
                b.metadata.name,
                b.metadata.version,
                b.metadata.component_sha256,
                out.display()
            );
            Ok(0)
        }
        PluginCommand::Verify {
            bundle,
            trust,
            signature,
            registry,
        } => {
            let keys = trust.keys()?;
            if keys.is_empty() {
                bail!(
                    "no trusted keys: pass --trust KEY.pub or --manifest PATH with a `trust:` list"
                );
            }
            let mut f = fetch(&bundle, &registry.options()).await?;
            if let Some(sig) = signature {
                f.signature = bundle::read_signature(&sig)?;
                f.signature_desc = sig.display().to_string();
            }
            let Some(text) = &f.signature else {
                bail!("{bundle}: not signed (no {})", f.signature_desc);
            };
            let key = bundle::verify(&f.bundle.component, text, &f.signature_desc, &keys)?;
            check_component(&host()?, &f.bundle, &bundle).await?;
            println!(
                "Verified {} {} (sha256 {}): signed by trusted key {} ({}); capabilities match the component.",
                f.bundle.metadata.name,
                f.bundle.metadata.version,
                f.bundle.metadata.component_sha256,
                key.id,
                key.name
            );
            Ok(0)
        }
        PluginCommand::Inspect {
            bundle,
            trust,
            registry,
        } => {
            let store = PluginStore::open_default();
            let installed = if bundle.starts_with("oci://") || Path::new(&bundle).exists() {
                None
            } else {
                let mut found: Vec<_> = store
                    .list()?
                    .into_iter()
                    .filter(|i| {
                        i.digest == bundle
                            || i.metadata.name == bundle
                            || format!("{}@{}", i.metadata.name, i.metadata.version) == bundle
                    })
                    .collect();
                match found.len() {
                    0 => bail!(
                        "`{bundle}` is neither a bundle file, a directory, an oci:// reference nor an installed bundle (see `tenet plugin list`)"
                    ),
                    1 => found.pop(),
                    n => bail!(
                        "`{bundle}` matches {n} installed bundles; name one as NAME@VERSION or by digest"
                    ),
                }
            };
            // The bytes shown are the bytes verified: one read of the bundle.
            let (b, signature, signature_desc, extra) = match installed {
                Some(found) => {
                    let (i, component) =
                        store.get_with_component(&found.digest)?.with_context(|| {
                            format!("{} was removed meanwhile", found.dir.display())
                        })?;
                    let desc = i.dir.join(bundle::DIR_SIGNATURE).display().to_string();
                    let extra = format!(
                        "installed:    {} (from {})",
                        i.dir.display(),
                        i.references.join(", ")
                    );
                    let b = Bundle {
                        metadata: i.metadata,
                        component,
                    };
                    (b, i.signature, desc, extra)
                }
                None => {
                    let f = fetch(&bundle, &registry.options()).await?;
                    let extra = f
                        .manifest_digest
                        .map(|d| format!("OCI manifest: {d}"))
                        .unwrap_or_default();
                    (f.bundle, f.signature, f.signature_desc, extra)
                }
            };
            let keys = trust.keys()?;
            let metadata = &b.metadata;
            println!("name:         {}", metadata.name);
            println!("version:      {}", metadata.version);
            println!("description:  {}", metadata.description);
            println!("license:      {}", metadata.license);
            println!("source URL:   {}", metadata.source_url);
            println!("ABI:          tenet:provider@{}", metadata.abi);
            println!("kinds:        {}", metadata.kinds.join(", "));
            println!("sha256:       {}", metadata.component_sha256);
            let caps = metadata.capabilities.summary();
            println!(
                "capabilities: {}",
                if caps.is_empty() {
                    "none".to_owned()
                } else {
                    caps.join("\n              ")
                }
            );
            let status = match &signature {
                None => "unsigned".to_owned(),
                Some(_) if keys.is_empty() => format!(
                    "signed by key {} (not checked: no --trust given)",
                    signer_of(signature.as_deref())
                ),
                Some(text) => match bundle::verify(&b.component, text, &signature_desc, &keys) {
                    Ok(k) => format!("signed by trusted key {} ({}), verified", k.id, k.name),
                    Err(e) => format!("NOT VERIFIED: {e}"),
                },
            };
            println!("signature:    {status}");
            if !extra.is_empty() {
                println!("{extra}");
            }
            Ok(0)
        }
        PluginCommand::Install {
            source,
            trust,
            allow_unsigned,
            registry,
        } => {
            let keys = trust.keys()?;
            let host = host()?;
            let store = PluginStore::open_default();
            let i = install(
                &host,
                &store,
                &source,
                &keys,
                allow_unsigned,
                &registry.options(),
            )
            .await?;
            println!(
                "Installed {} {} (sha256 {}), {}, into {}; compiled for this machine in {} ms.",
                i.installed.metadata.name,
                i.installed.metadata.version,
                i.installed.digest,
                i.signer,
                i.installed.dir.display(),
                i.compiled.as_millis()
            );
            Ok(0)
        }
        PluginCommand::List { json } => {
            let store = PluginStore::open_default();
            let list = store.list()?;
            if json {
                let items: Vec<_> = list
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "name": i.metadata.name,
                            "version": i.metadata.version,
                            "sha256": i.digest,
                            "signer": i.signature.as_deref().map(|t| signer_of(Some(t))),
                            "capabilities": i.metadata.capabilities.summary(),
                            "references": i.references,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(0);
            }
            if list.is_empty() {
                println!("No plugins installed in {}.", store.root().display());
            }
            for i in &list {
                let signer = match i.signature.as_deref() {
                    None => "UNSIGNED".to_owned(),
                    t => format!("signed by {}", signer_of(t)),
                };
                println!(
                    "{} {}  sha256:{}  {signer}\n  from: {}",
                    i.metadata.name,
                    i.metadata.version,
                    i.digest,
                    if i.references.is_empty() {
                        "-".to_owned()
                    } else {
                        i.references.join(", ")
                    }
                );
            }
            Ok(0)
        }
        PluginCommand::Remove { what } => {
            let store = PluginStore::open_default();
            let removed = store.remove(&what)?;
            if removed.is_empty() {
                bail!("no installed bundle matches `{what}` (see `tenet plugin list`)");
            }
            // Their compiled code goes too: keep only what is still installed or built in.
            let (compiled, _, _) = host()?.gc_cache(&keep_set(&store)?)?;
            for digest in &removed {
                println!("Removed sha256 {digest}.");
            }
            if compiled > 0 {
                println!("Removed {compiled} compiled artifacts.");
            }
            Ok(0)
        }
        PluginCommand::Push {
            bundle,
            reference,
            registry,
        } => {
            let b = Bundle::read(&bundle)?;
            let sig = bundle::read_signature(&bundle::signature_path(&bundle))?;
            let r = oci::OciRef::parse(&reference)?;
            let digest = oci::push(&r, &b, sig.as_deref(), &registry.options()).await?;
            println!(
                "Pushed {} {} (component sha256 {}{}) to {reference}: manifest {digest}.",
                b.metadata.name,
                b.metadata.version,
                b.metadata.component_sha256,
                if sig.is_some() {
                    ", signed"
                } else {
                    ", UNSIGNED"
                }
            );
            Ok(0)
        }
        PluginCommand::Pull {
            reference,
            out,
            registry,
        } => {
            let r = oci::OciRef::parse(&reference)?;
            let pulled = oci::pull(&r, &registry.options()).await?;
            pulled.bundle.write(&out)?;
            let sig_path = bundle::signature_path(&out);
            match &pulled.signature {
                Some(sig) => std::fs::write(&sig_path, sig)
                    .with_context(|| format!("cannot write {}", sig_path.display()))?,
                None => {
                    let _ = std::fs::remove_file(&sig_path);
                }
            }
            println!(
                "Pulled {} {} (sha256 {}, manifest {}) into {}{}.",
                pulled.bundle.metadata.name,
                pulled.bundle.metadata.version,
                pulled.bundle.metadata.component_sha256,
                pulled.manifest_digest,
                out.display(),
                if pulled.signature.is_some() {
                    format!(" and {}", sig_path.display())
                } else {
                    " (unsigned)".into()
                }
            );
            Ok(0)
        }
    }
}

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    manifest: super::ManifestArgs,
    /// Move the pin of this provider to what its source holds now, and show how its
    /// capabilities change (repeatable).
    #[arg(long, value_name = "NAME")]
    upgrade: Vec<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    manifest: super::ManifestArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `tenet init`: install what the manifest's providers need (at the pinned digests when
/// `tenet.lock` exists) and pin what is not pinned yet.
pub async fn init(args: InitArgs) -> anyhow::Result<u8> {
    lock(LockArgs {
        manifest: args.manifest,
        upgrade: Vec::new(),
        registry: args.registry,
    })
    .await
}

/// `tenet lock [--upgrade NAME]`: pin every provider of the manifest in `tenet.lock`
/// (deterministic). Existing pins stay unless upgraded; a provider whose bytes or signer
/// moved without `--upgrade` is an error. `oci://` providers are installed first (signed,
/// verified, checked); the store's references move only once the lock is written.
pub async fn lock(args: LockArgs) -> anyhow::Result<u8> {
    let options = args.manifest.session_options()?;
    let (m, diags) = crate::session::load_manifest(&options.path, &options.load_options());
    diags.into_result()?;
    for name in &args.upgrade {
        if !m.providers.contains_key(name) {
            bail!("--upgrade {name}: the manifest declares no provider `{name}`");
        }
    }
    let host = host()?;
    let sources = crate::session::Sources::new(&m, &options, &host).map_err(|e| {
        anyhow::anyhow!(
            "{e}; to pin everything again from what the sources hold now, delete {} and run `tenet lock`",
            crate::distribution::lockfile::path_for(&m.path).display()
        )
    })?;
    let old = sources.lock.clone().unwrap_or(LockFile {
        format_version: crate::distribution::lockfile::FORMAT_VERSION,
        providers: std::collections::BTreeMap::new(),
    });
    let mut lock = LockFile {
        format_version: crate::distribution::lockfile::FORMAT_VERSION,
        providers: std::collections::BTreeMap::new(),
    };
    let mut changes = Vec::new();
    let mut references = Vec::new();
    for decl in m.providers.values() {
        let source = crate::distribution::lockfile::source_of(&decl.source, &m.base_dir);
        let upgrading = args.upgrade.contains(&decl.name);
        let pinned = old.providers.get(&decl.name).filter(|_| !upgrading);
        if let Some(pin) = pinned
            && pin.source != source
        {
            return Err(crate::distribution::lockfile::LockError::SourceChanged {
                path: sources.lock_path.display().to_string(),
                provider: decl.name.clone(),
                pinned: pin.source.clone(),
                source_desc: source,
            }
            .into());
        }
        let mut fetched = None;
        if let ProviderSource::Oci(reference) = &decl.source {
            let f = ensure_installed(
                &sources.store,
                &m.trusted_keys,
                (&decl.name, reference),
                pinned,
                args.manifest.allow_unsigned,
                &args.registry.options(),
                &host,
            )
            .await?;
            references.push((reference.clone(), f.0.clone()));
            fetched = Some(f);
        }
        let loaded = sources
            .load(
                &host,
                &m,
                decl,
                crate::session::PinCheck::Writing {
                    oci_digest: fetched.as_ref().map(|f| f.0.as_str()),
                    pin: pinned,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let p = &loaded.provider;
        let signer = loaded.provenance.signer().map(str::to_owned);
        let new = Pin {
            source,
            version: p.info().version.clone(),
            component_sha256: p.sha256().to_owned(),
            signer,
            oci_manifest: fetched
                .and_then(|f| f.1)
                .or_else(|| pinned.and_then(|p| p.oci_manifest.clone())),
            capabilities: p.requested().summary(),
            builtin: matches!(decl.source, ProviderSource::Builtin(_)),
        };
        if let Some(before) = old.providers.get(&decl.name)
            && (before.component_sha256 != new.component_sha256 || before.signer != new.signer)
        {
            changes.push(describe_move(&decl.name, before, &new));
        }
        lock.providers.insert(decl.name.clone(), new);
    }
    let path = sources.lock_path.clone();
    crate::atomic::write(&path, lock.to_text().as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    for (reference, digest) in &references {
        sources.store.set_ref(reference, digest)?;
    }
    for c in &changes {
        println!("{c}");
    }
    println!(
        "Pinned {} providers in {}.",
        lock.providers.len(),
        path.display()
    );
    Ok(0)
}

/// "bad: 0.1.0 (sha256 …) -> 0.2.0 (sha256 …)" and the capability and signer changes.
fn describe_move(name: &str, before: &Pin, new: &Pin) -> String {
    let short = |d: &str| d.get(..12).unwrap_or(d).to_owned();
    let (added, removed) = LockFile::capability_changes(&before.capabilities, &new.capabilities);
    let mut text = format!(
        "{name}: {} (sha256 {}) -> {} (sha256 {})",
        before.version,
        short(&before.component_sha256),
        new.version,
        short(&new.component_sha256)
    );
    for a in &added {
        text.push_str(&format!("\n  {name} {} now requests {a}", new.version));
    }
    for r in &removed {
        text.push_str(&format!(
            "\n  {name} {} no longer requests {r}",
            new.version
        ));
    }
    if added.is_empty() && removed.is_empty() {
        text.push_str("\n  capabilities unchanged");
    }
    if before.signer != new.signer {
        text.push_str(&format!(
            "\n  signer: {} -> {}",
            before.signer.as_deref().unwrap_or("none"),
            new.signer.as_deref().unwrap_or("none")
        ));
    }
    text
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Delete compiled code that no installed or built-in provider needs, and code
    /// compiled by other Tenet versions. Providers loaded from paths are compiled again
    /// on their next use.
    Gc,
}

pub fn cache(args: CacheArgs) -> anyhow::Result<u8> {
    let CacheCommand::Gc = args.command;
    let store = PluginStore::open_default();
    let (removed, freed, kept) = host()?.gc_cache(&keep_set(&store)?)?;
    println!(
        "Removed {removed} compiled artifacts ({}); kept {kept}.",
        bytesize::ByteSize::b(freed)
    );
    Ok(0)
}
