//! `tenet graph`: the dependency graph as Graphviz DOT (for `dot -Tsvg`) or JSON
//! ([`crate::graph::dot`]). Given a saved plan (`--plan FILE`), nodes are coloured by
//! planned action.

use super::ManifestArgs;
use crate::provider::Action;
use crate::session::Session;
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Dot,
    Json,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "dot")]
    format: Format,
    /// Colour nodes by the actions of this saved plan (`tenet plan --out FILE`).
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
}

pub async fn execute(args: GraphArgs) -> anyhow::Result<u8> {
    let session = Session::open(&args.manifest.session_options()?).await?;
    let actions: BTreeMap<String, Action> = match &args.plan {
        Some(path) => crate::plan::file::read(path)?
            .with_context(|| format!("{} is not a saved plan", path.display()))?
            .resources
            .into_iter()
            .map(|r| (r.id, r.action))
            .collect(),
        None => BTreeMap::new(),
    };
    let rs = &session.manifest.resources;
    let out = match args.format {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&crate::graph::dot::json(&session.graph, rs, &actions))?
        ),
        Format::Dot => crate::graph::dot::dot(&session.graph, rs, &actions),
    };
    print!("{out}");
    Ok(0)
}
