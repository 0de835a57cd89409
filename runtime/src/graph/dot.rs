//! The dependency graph drawn: Graphviz DOT (for `dot -Tsvg`) and JSON (nodes, edges
//! with their kind, execution order), nodes coloured or marked by planned action when a
//! plan is given (Terraform's `dag/dot.go`).

use super::{EdgeKind, Graph};
use crate::manifest::ResourceDecl;
use crate::provider::Action;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;

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
        EdgeKind::OnFailure => "dashed",
    }
}

/// A DOT string literal.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The graph of `resources` (the manifest's, in graph order) as DOT; `actions` by id.
pub fn dot(
    graph: &Graph,
    resources: &[ResourceDecl],
    actions: &BTreeMap<String, Action>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph tenet {{");
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
    );
    for r in resources {
        let action = actions.get(&r.id).copied();
        let label = match action {
            Some(a) => format!("{}\\n{} ({a})", r.id, r.type_name),
            None => format!("{}\\n{}", r.id, r.type_name),
        };
        let _ = writeln!(
            out,
            "  {} [label=\"{}\", color=\"{c}\", fontcolor=\"{c}\"];",
            quote(&r.id),
            label.replace('"', "\\\""),
            c = colour(action)
        );
    }
    for e in graph.edges() {
        let _ = writeln!(
            out,
            "  {} -> {} [style={}];",
            quote(&resources[e.from].id),
            quote(&resources[e.to].id),
            edge_style(e.kind)
        );
    }
    let _ = writeln!(out, "}}");
    out
}

/// The graph as JSON: `nodes` (id, type, provider, action), `edges` (from, to, kind) and
/// the execution `order`.
pub fn json(
    graph: &Graph,
    resources: &[ResourceDecl],
    actions: &BTreeMap<String, Action>,
) -> Value {
    let nodes: Vec<_> = resources
        .iter()
        .map(|r| {
            let mut node = json!({"id": r.id, "type": r.type_name, "provider": r.provider});
            if let Some(a) = actions.get(&r.id) {
                node["action"] = json!(a);
            }
            node
        })
        .collect();
    let edges: Vec<_> = graph
        .edges()
        .iter()
        .map(|e| json!({"from": resources[e.from].id, "to": resources[e.to].id, "kind": e.kind}))
        .collect();
    let order: Vec<&str> = graph
        .order()
        .iter()
        .map(|&i| resources[i].id.as_str())
        .collect();
    json!({"nodes": nodes, "edges": edges, "order": order})
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_quotes_what_it_names() {
        assert_eq!(super::quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(super::edge_style(super::EdgeKind::Reference), "dashed");
        assert_eq!(super::colour(None), "#000000");
    }
}
