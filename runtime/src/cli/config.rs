//! `tenet config push|pull|verify|tag`: desired state as signed OCI artifacts (see
//! [`crate::distribution::artifact`]). `push` packs and signs a manifest directory;
//! `pull` and `verify` check one against trusted keys; `tag` points a channel at an
//! artifact (what a roll-out moves).

use super::plugin::{RegistryArgs, TrustArgs};
use crate::distribution::artifact;
use crate::distribution::oci::{self, OciRef};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Pack a manifest directory (every file but hidden ones), sign it and push it.
    Push {
        /// The manifest directory.
        dir: PathBuf,
        /// Where to: oci://host[:port]/repository:tag.
        reference: String,
        /// minisign secret key to sign with (the same keys as provider bundles).
        #[arg(long, value_name = "KEY", required_unless_present = "unsigned")]
        key: Option<PathBuf>,
        /// Push without a signature (agents refuse it: for tests of that refusal).
        #[arg(long, conflicts_with = "key")]
        unsigned: bool,
        /// The source revision it is built from (e.g. `git rev-parse HEAD`), recorded
        /// in the artifact.
        #[arg(long, value_name = "REV")]
        revision: Option<String>,
        /// Push even if the packed directory does not load as a manifest on its own.
        #[arg(long)]
        no_check: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull an artifact, verify it against trusted keys and unpack it into a new
    /// directory.
    Pull {
        reference: String,
        /// The directory to create.
        #[arg(long, short = 'o', value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Check an artifact against trusted keys without unpacking it.
    Verify {
        reference: String,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Point a tag at an artifact (e.g. a channel at a digest); prints the digest.
    Tag {
        /// The artifact: oci://host/repo@sha256:… or oci://host/repo:tag.
        from: String,
        /// The tag to set, in the same registry: oci://host/repo:channel.
        to: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

pub async fn execute(args: ConfigArgs) -> anyhow::Result<u8> {
    match args.command {
        ConfigCommand::Push {
            dir,
            reference,
            key,
            unsigned,
            revision,
            no_check,
            registry,
        } => {
            let r = OciRef::parse(&reference)?;
            if !dir.is_dir() {
                anyhow::bail!("{}: not a directory", dir.display());
            }
            let packed = artifact::pack(&dir)?;
            if !no_check {
                check_self_contained(&dir, &packed)?;
            }
            let key = if unsigned { None } else { key };
            let pushed =
                artifact::push(packed, &r, key.as_deref(), revision, &registry.options()).await?;
            if pushed.unchanged {
                println!(
                    "{reference} already holds {} ({} files, content sha256:{}), signed with this key: nothing pushed",
                    dir.display(),
                    pushed.packed.files.len(),
                    pushed.packed.sha256
                );
                println!("digest: {}", pushed.digest);
                return Ok(0);
            }
            println!(
                "Pushed {} ({} files, content sha256:{}{}) to {reference}",
                dir.display(),
                pushed.packed.files.len(),
                pushed.packed.sha256,
                if pushed.signed {
                    ", signed"
                } else {
                    ", UNSIGNED: agents will refuse it"
                }
            );
            println!("digest: {}", pushed.digest);
            Ok(0)
        }
        ConfigCommand::Pull {
            reference,
            out,
            trust,
            registry,
        } => {
            let keys = trusted(&trust)?;
            let r = OciRef::parse(&reference)?;
            if out.exists() {
                anyhow::bail!("{}: exists; not overwriting", out.display());
            }
            let fetched = artifact::pull(&r, &registry.options()).await?;
            let key = fetched.verify(&keys)?;
            let files = artifact::unpack(&fetched.tar, &out, &fetched.reference.text)?;
            println!(
                "Pulled {} ({} files) into {}: signed by trusted key {} ({})",
                fetched.reference.text,
                files.len(),
                out.display(),
                key.id,
                key.name
            );
            Ok(0)
        }
        ConfigCommand::Verify {
            reference,
            trust,
            registry,
        } => {
            let keys = trusted(&trust)?;
            let r = OciRef::parse(&reference)?;
            let fetched = artifact::pull(&r, &registry.options()).await?;
            let key = fetched.verify(&keys)?;
            println!(
                "Verified {}: {} files{}, signed by trusted key {} ({})",
                fetched.reference.text,
                fetched.statement.files,
                fetched
                    .statement
                    .revision
                    .as_deref()
                    .map(|r| format!(" from revision {r}"))
                    .unwrap_or_default(),
                key.id,
                key.name
            );
            Ok(0)
        }
        ConfigCommand::Tag { from, to, registry } => {
            let from = OciRef::parse(&from)?;
            let to = OciRef::parse(&to)?;
            if to.digest().is_some() {
                anyhow::bail!("{}: a tag to set must name a tag, not a digest", to.text);
            }
            let digest = oci::tag(&from, &to, &registry.options()).await?;
            println!("{} now names {digest}", to.text);
            Ok(0)
        }
    }
}

fn trusted(trust: &TrustArgs) -> anyhow::Result<Vec<crate::manifest::TrustedKey>> {
    let keys = trust.keys()?;
    if keys.is_empty() {
        anyhow::bail!(
            "no trusted keys: pass --trust KEY.pub (or --manifest PATH with a `trust:` list)"
        );
    }
    Ok(keys)
}

/// The packed directory must load as a manifest from its own files: unpacked into a
/// scratch directory and loaded there, so a reference to a file outside it (which nodes
/// would not have) fails here, not on every node.
fn check_self_contained(dir: &std::path::Path, packed: &artifact::Packed) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let copy = scratch.path().join("artifact");
    artifact::unpack(&packed.tar, &copy, &dir.display().to_string())?;
    let (m, diags) = crate::manifest::load(&copy, &crate::manifest::LoadOptions::default());
    let mut problems = match diags.into_result() {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    // Modules, templates and data layers cannot leave the directory; policies can.
    let root = copy.canonicalize()?;
    if let Some(policy) = &m.policy {
        for (p, shown) in policy.paths.iter().zip(&policy.shown) {
            let inside = p.canonicalize().is_ok_and(|p| p.starts_with(&root));
            if policy.explicit && !inside {
                problems.push_str(&format!(
                    "policy path `{shown}` is not inside the directory: it would not travel with the artifact\n"
                ));
            }
        }
    }
    if !problems.is_empty() {
        let shown = problems.replace(&copy.display().to_string(), &dir.display().to_string());
        anyhow::bail!(
            "{}: does not load as a manifest from its own files (nodes get only what is packed; --no-check pushes anyway):\n{shown}",
            dir.display()
        );
    }
    Ok(())
}
