//! `tenet key generate` and `tenet plugin pack|sign|verify|inspect`: make a bundle from a
//! component (its metadata read from the component itself), sign it with a minisign key,
//! and check a bundle — digest, declared capabilities against the component's real
//! imports, and the signature against trusted keys.

use crate::bundle::{self, Bundle, FORMAT_VERSION, Metadata};
use crate::plugin::{CompileCache, PluginHost};
use crate::provider::Provider;
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

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Make a bundle from a provider component.
    Pack {
        component: PathBuf,
        /// Bundle file to write.
        #[arg(long, short = 'o')]
        out: PathBuf,
        #[arg(long, default_value = "")]
        license: String,
        #[arg(long, default_value = "")]
        source_url: String,
    },
    /// Sign a bundle: writes BUNDLE.minisig (or --out).
    Sign {
        bundle: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
    },
    /// Check a bundle: digest, declared capabilities against the component, signature.
    Verify {
        bundle: PathBuf,
        /// Trusted public key file (repeatable).
        #[arg(long = "trust", required = true)]
        trust: Vec<PathBuf>,
        /// Detached signature (default BUNDLE.minisig).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// Show a bundle's metadata.
    Inspect { bundle: PathBuf },
}

fn signature_path(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

async fn host() -> anyhow::Result<PluginHost> {
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
            let host = host().await?;
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
            b.write(&out)?;
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
            let b = Bundle::read(&bundle)?;
            let sig = bundle::sign(&b, &key)?;
            let out = out.unwrap_or_else(|| signature_path(&bundle));
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
        } => {
            let b = Bundle::read(&bundle)?;
            // What the bundle declares must be what the component really imports and
            // requests: a bundle cannot hide a capability.
            let host = host().await?;
            let p = host
                .inspect("bundle", &b.component, &bundle.display().to_string())
                .await?;
            if *p.requested() != b.metadata.capabilities {
                bail!(
                    "{}: the declared capabilities differ from the component's: declared {}, component {}",
                    bundle.display(),
                    serde_json::to_string(&b.metadata.capabilities)?,
                    serde_json::to_string(p.requested())?
                );
            }
            let sig = signature.unwrap_or_else(|| signature_path(&bundle));
            let signer = bundle::verify(&b, &sig, &trust)?;
            println!(
                "Verified {} {} (sha256 {}): signed by trusted key {signer}; capabilities match the component.",
                b.metadata.name, b.metadata.version, b.metadata.component_sha256
            );
            Ok(0)
        }
        PluginCommand::Inspect { bundle } => {
            let b = Bundle::read(&bundle)?;
            println!("{}", serde_json::to_string_pretty(&b.metadata)?);
            Ok(0)
        }
    }
}

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    manifest: super::ManifestArgs,
}

/// `tenet lock`: pin every provider of the manifest in `tenet.lock` (deterministic).
pub async fn lock(args: LockArgs) -> anyhow::Result<u8> {
    let (m, diags) = crate::manifest::load(&args.manifest.path, &args.manifest.load_options()?);
    diags.into_result()?;
    let host = host().await?;
    let mut lock = crate::lockfile::LockFile {
        format_version: crate::lockfile::FORMAT_VERSION,
        providers: std::collections::BTreeMap::new(),
    };
    for decl in m.providers.values() {
        let p = host.load(decl).await?;
        lock.providers.insert(
            decl.name.clone(),
            crate::lockfile::Pin {
                source: p.source().to_owned(),
                version: p.info().version.clone(),
                component_sha256: p.sha256().to_owned(),
                builtin: matches!(decl.source, crate::manifest::ProviderSource::Builtin(_)),
            },
        );
    }
    let path = crate::lockfile::path_for(&m.path);
    super::plan::write_atomically(&path, lock.to_text().as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "Pinned {} providers in {}.",
        lock.providers.len(),
        path.display()
    );
    Ok(0)
}
