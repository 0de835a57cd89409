//! `tenet providers`: each provider of the manifest with its source, digest, kinds,
//! what it is granted, what it requested (and which of that is missing), and limits.

use super::ManifestArgs;
use crate::provider::Provider;
use crate::wasm::grants::Capabilities;
use crate::wasm::plugin::{CompileCache, PluginHost};
use clap::Args;
use std::fmt::Write as _;

#[derive(Debug, Args)]
pub struct ProvidersArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
}

pub async fn execute(args: ProvidersArgs) -> anyhow::Result<u8> {
    let options = args.manifest.session_options()?;
    let (m, diags) = crate::session::load_manifest(&options.path, &options.load_options());
    diags.into_result()?;
    let host = PluginHost::new(CompileCache::new(CompileCache::default_dir()))?;
    let sources = crate::session::Sources::new(&m, &options, &host)?;
    let mut out = String::new();
    let mut failed = false;
    for decl in m.providers.values() {
        writeln!(out, "{}", decl.name)?;
        writeln!(out, "  source:  {}", decl.source)?;
        let loaded = sources
            .load(&host, &m, decl, crate::session::PinCheck::Enforce)
            .await;
        let loaded = match loaded {
            Ok(l) => {
                let p = l.provider;
                writeln!(out, "  trust:   {}", l.provenance)?;
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
                Some(p)
            }
            Err(e) => {
                failed = true;
                writeln!(out, "  error:   {e}")?;
                None
            }
        };
        // From the manifest, so the grants show even when the provider failed to load.
        let caps = Capabilities::new(&decl.name, &decl.grants)?;
        writeln!(out, "  granted:")?;
        let granted = caps.grant_lines();
        if granted.is_empty() {
            writeln!(out, "    nothing (it can only compute and log)")?;
        }
        for g in granted {
            writeln!(out, "    {g}")?;
        }
        if let Some(p) = &loaded {
            let reqs = caps.requirements(p.requested());
            writeln!(out, "  requested:")?;
            for import in &p.requested().imports {
                writeln!(
                    out,
                    "    import {import}  (granted: the manifest allows it)"
                )?;
            }
            if reqs.is_empty() && p.requested().imports.is_empty() {
                writeln!(out, "    nothing beyond its grants")?;
            }
            for r in &reqs {
                let mark = if r.granted { "granted" } else { "MISSING" };
                writeln!(out, "    {}  ({mark}: {})", r.capability, r.reason)?;
            }
            let missing = reqs.iter().filter(|r| !r.granted).count();
            writeln!(
                out,
                "  missing: {}",
                if missing == 0 {
                    "nothing".to_owned()
                } else {
                    format!("{missing} (see MISSING above)")
                }
            )?;
            let e = crate::provider::Provider::execution(p.as_ref());
            let mut declared = Vec::new();
            if let Some(n) = e.max_concurrency {
                declared.push(format!("at most {n} call(s) at once"));
            }
            if !e.locks.is_empty() {
                declared.push(format!("holds lock(s) {}", e.locks.join(", ")));
            }
            if !e.batched_kinds.is_empty() {
                let kinds: Vec<&str> = e.batched_kinds.iter().map(String::as_str).collect();
                declared.push(format!("reads {} in batches", kinds.join(", ")));
            }
            declared.extend(
                e.fixed_env
                    .iter()
                    .map(|(n, v)| format!("sets {n}={v} for its programs")),
            );
            if !declared.is_empty() {
                writeln!(out, "  declares:")?;
                for d in declared {
                    writeln!(out, "    {d}")?;
                }
            }
        }
        writeln!(
            out,
            "  limits:  memory {} per instance, {} in all, {} per call, output {}, {} log lines per call",
            bytesize::ByteSize::b(decl.limits.memory_bytes)
                .display()
                .iec(),
            bytesize::ByteSize::b(decl.limits.memory_total_bytes)
                .display()
                .iec(),
            humantime::format_duration(decl.limits.call_timeout),
            bytesize::ByteSize::b(decl.limits.output_bytes)
                .display()
                .iec(),
            decl.limits.log_lines
        )?;
    }
    print!("{out}");
    Ok(if failed { super::EXIT_ERROR } else { 0 })
}
