//! `tenet providers`: each provider of the manifest with its source, digest, kinds,
//! grants and limits.

use super::ManifestArgs;
use crate::manifest;
use crate::plugin::{CompileCache, PluginHost};
use crate::provider::Provider;
use clap::Args;
use std::fmt::Write as _;

#[derive(Debug, Args)]
pub struct ProvidersArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
}

pub async fn execute(args: ProvidersArgs) -> anyhow::Result<u8> {
    let (m, diags) = manifest::load(&args.manifest.path, &args.manifest.load_options()?);
    diags.into_result()?;
    let host = PluginHost::new(CompileCache::new(CompileCache::default_dir()))?;
    let mut out = String::new();
    let mut failed = false;
    for decl in m.providers.values() {
        writeln!(out, "{}", decl.name)?;
        writeln!(out, "  source:  {}", decl.source)?;
        match host.load(decl).await {
            Ok(p) => {
                let info = p.info();
                writeln!(out, "  version: {} ({})", info.version, info.description)?;
                writeln!(out, "  sha256:  {}", p.sha256())?;
                writeln!(out, "  kinds:")?;
                for k in info.kinds.values() {
                    let mut extra = format!("identity: {}", k.identity);
                    if !k.force_new.is_empty() {
                        write!(extra, "; replaced when changed: {}", k.force_new.join(", "))?;
                    }
                    writeln!(
                        out,
                        "    {}.{}  {}  ({extra})",
                        decl.name, k.name, k.description
                    )?;
                }
            }
            Err(e) => {
                failed = true;
                writeln!(out, "  error:   {e}")?;
            }
        }
        writeln!(out, "  grants:")?;
        if decl.grants.fs.is_empty() {
            writeln!(out, "    (none: the provider can touch nothing)")?;
        }
        for g in &decl.grants.fs {
            writeln!(out, "    fs {} {}", g.access, g.path.display())?;
        }
        writeln!(
            out,
            "  limits:  memory {}, {} per call",
            bytesize::ByteSize::b(decl.limits.memory_bytes)
                .display()
                .iec(),
            humantime::format_duration(decl.limits.call_timeout)
        )?;
    }
    print!("{out}");
    Ok(if failed { super::EXIT_ERROR } else { 0 })
}
