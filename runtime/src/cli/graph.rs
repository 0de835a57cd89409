//! `tenet graph`: the dependency graph as Graphviz DOT (for `dot -Tsvg`) or JSON. Given a
//! saved plan (`--plan FILE`), nodes are coloured by planned action.

use super::ManifestArgs;
use super::session::Session;
use crate::graph::EdgeKind;
use crate::provider::Action;
use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
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

fn colour(action: Option<Action>) -> &'static str {
    match action {
        Some(Action::Create) => "#2e7d32",
        Some(Action::Update) => "#ef6c00",
        Some(Action::Replace) => "#6a1b9a",
        Some(Action::Delete) => "#c62828",
        Some(Action::None) => "#9e9e9e",
        None => "#000000",
    }
}

fn edge_style(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Explicit => "solid",
        EdgeKind::Notify => "bold",
        EdgeKind::Reference => "dashed",
        EdgeKind::Auto => "dotted",
    }
}

/// A DOT string literal.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub async fn execute(args: GraphArgs) -> anyhow::Result<u8> {
    let session = Session::open(&args.manifest).await?;
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
    let edges = session.graph.edges();
    let mut out = String::new();
    match args.format {
        Format::Json => {
            let nodes: Vec<_> = rs
                .iter()
                .map(|r| {
                    let mut node = json!({"id": r.id, "type": r.type_name, "provider": r.provider});
                    if let Some(a) = actions.get(&r.id) {
                        node["action"] = json!(a);
                    }
                    node
                })
                .collect();
            let edges: Vec<_> = edges
                .iter()
                .map(|e| json!({"from": rs[e.from].id, "to": rs[e.to].id, "kind": e.kind}))
                .collect();
            let order: Vec<&str> = session
                .graph
                .order()
                .iter()
                .map(|&i| rs[i].id.as_str())
                .collect();
            let doc = json!({"nodes": nodes, "edges": edges, "order": order});
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Dot => {
            writeln!(out, "digraph tenet {{")?;
            writeln!(out, "  rankdir=LR;")?;
            writeln!(
                out,
                "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
            )?;
            for r in rs {
                let action = actions.get(&r.id).copied();
                let label = match action {
                    Some(a) => format!("{}\\n{} ({a})", r.id, r.type_name),
                    None => format!("{}\\n{}", r.id, r.type_name),
                };
                writeln!(
                    out,
                    "  {} [label=\"{}\", color=\"{c}\", fontcolor=\"{c}\"];",
                    quote(&r.id),
                    label.replace('"', "\\\""),
                    c = colour(action)
                )?;
            }
            for e in edges {
                writeln!(
                    out,
                    "  {} -> {} [style={}];",
                    quote(&rs[e.from].id),
                    quote(&rs[e.to].id),
                    edge_style(e.kind)
                )?;
            }
            writeln!(out, "}}")?;
        }
    }
    print!("{out}");
    Ok(0)
}
