//! `tenet facts`: the facts `${ facts.… }` sees on this host, core and external.

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct FactsArgs {
    /// Print them as one JSON document instead of sorted `path = value` lines.
    #[arg(long)]
    json: bool,
    /// Directory of external facts (*.json, *.yaml) merged over the core facts.
    #[arg(long = "facts-dir", value_name = "DIR", env = "TENET_FACTS_DIR")]
    facts_dir: Option<PathBuf>,
}

pub fn execute(args: FactsArgs) -> anyhow::Result<u8> {
    let (facts, problems) = crate::facts::gather(args.facts_dir.as_deref());
    for p in &problems {
        eprintln!("error: external facts: {p}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&facts)?);
    } else {
        for line in crate::facts::lines(&facts) {
            println!("{line}");
        }
    }
    Ok(if problems.is_empty() { 0 } else { 1 })
}
