//! The dependency graph of a manifest's resources, built in named steps, each traced at
//! debug level:
//! 1. **explicit** edges from `depends_on`;
//! 2. **reference** edges from `${resources.<id>.<field>}` in properties;
//! 3. **cycles** among those, each reported naming every resource on it;
//! 4. **auto** edges (Puppet's autorequire): a resource whose path lies under another
//!    managed path depends on the nearest such resource, unless an explicit or reference
//!    edge already relates the two; an auto edge that would close a cycle is dropped,
//!    since explicit ordering wins. Two resources managing one path are an error;
//! 5. the **order**: every resource after all it depends on, ties in manifest order.
//!
//! Problems (unknown targets or fields, self-references, cycles, duplicate paths) are
//! collected and reported together with file:line:col. Every step is O((V + E) log V):
//! 10,000 resources build in milliseconds. Pure: no I/O, no providers.

pub mod dot;
pub mod walk;

use crate::diag::{Diagnostics, Location};
use crate::manifest::{ResourceDecl, refs};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::path::PathBuf;

/// Why one resource depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    Explicit,
    /// `notify`: the notified resource runs after the notifier.
    Notify,
    Reference,
    Auto,
    /// `on_failure`: the handler runs after the resource it watches, only if it failed.
    #[serde(rename = "on_failure")]
    OnFailure,
}

/// `to` depends on `from` (indices into the manifest's resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub kind: EdgeKind,
}

/// What the graph is built from.
#[derive(Debug, Clone, Copy)]
pub struct GraphInput<'a> {
    pub resources: &'a [ResourceDecl],
    /// Ids of resources left out for errors already reported: references to them are
    /// not reported again.
    pub rejected: &'a BTreeSet<String>,
    /// Resources a false `when:` left out, with where the condition is: a reference to
    /// one is an error naming both.
    pub excluded: &'a BTreeMap<String, Location>,
    /// Per resource, the fields others may reference (its kind's schema properties);
    /// `None` when unknown (its provider did not load), which skips the field check.
    pub fields: &'a [Option<BTreeSet<String>>],
    /// Per resource, the file-system paths it manages (its path properties).
    pub paths: &'a [Vec<PathBuf>],
}

/// Resources (by index into the manifest's list) and their dependencies.
#[derive(Debug, Clone)]
pub struct Graph {
    /// `deps[i]`: indices resource `i` depends on, sorted, without duplicates.
    deps: Vec<Vec<usize>>,
    /// Every edge with its kind, sorted.
    edges: Vec<Edge>,
    /// Topological order.
    order: Vec<usize>,
}

struct Builder<'a> {
    input: GraphInput<'a>,
    index: BTreeMap<&'a str, usize>,
    edges: BTreeSet<Edge>,
    diags: Diagnostics,
}

impl Graph {
    /// Build and validate the graph.
    pub fn build(input: GraphInput<'_>) -> Result<Graph, Diagnostics> {
        let index = input
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        let mut b = Builder {
            input,
            index,
            edges: BTreeSet::new(),
            diags: Diagnostics::new(),
        };
        b.explicit_edges();
        b.reference_edges();
        b.report_cycles();
        // Also reports resources that manage the same path, so run it even after errors.
        b.auto_edges();
        if b.diags.has_errors() {
            return Err(b.diags);
        }
        let n = input.resources.len();
        let mut deps = vec![Vec::new(); n];
        for e in &b.edges {
            deps[e.to].push(e.from);
        }
        for d in &mut deps {
            d.sort_unstable();
            d.dedup();
        }
        let order = topological_order(&deps);
        tracing::debug!(step = "order", resources = n, "graph ordered");
        Ok(Graph {
            deps,
            edges: b.edges.into_iter().collect(),
            order,
        })
    }

    /// A graph from `depends_on` and references alone: no field checks (no provider
    /// descriptions), no auto edges (no paths).
    pub fn of(resources: &[ResourceDecl]) -> Result<Graph, Diagnostics> {
        let fields = vec![None; resources.len()];
        let paths = vec![Vec::new(); resources.len()];
        Graph::build(GraphInput {
            resources,
            rejected: &BTreeSet::new(),
            excluded: &BTreeMap::new(),
            fields: &fields,
            paths: &paths,
        })
    }

    /// Every resource, after all it depends on.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// What resource `i` depends on directly.
    pub fn dependencies(&self, i: usize) -> &[usize] {
        &self.deps[i]
    }

    /// Every edge, with why it exists.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }
}

impl Builder<'_> {
    fn resource(&self, i: usize) -> &ResourceDecl {
        &self.input.resources[i]
    }

    /// Step 1: `depends_on` and `notify`.
    fn explicit_edges(&mut self) {
        let before = self.edges.len();
        for (i, r) in self.input.resources.iter().enumerate() {
            for d in &r.depends_on {
                if d.id == r.id {
                    self.diags.error(
                        Some(d.location.clone()),
                        format!("resource `{}` depends on itself", r.id),
                    );
                    continue;
                }
                match self.index.get(d.id.as_str()) {
                    Some(&j) => {
                        self.edges.insert(Edge {
                            from: j,
                            to: i,
                            kind: EdgeKind::Explicit,
                        });
                    }
                    None => self.missing(&r.id, "depends on", &d.id, Some(d.location.clone())),
                }
            }
            for n in &r.notify {
                match self.index.get(n.id.as_str()) {
                    Some(&j) if j == i => self.diags.error(
                        Some(n.location.clone()),
                        format!("resource `{}` notifies itself", r.id),
                    ),
                    Some(&j) => {
                        self.edges.insert(Edge {
                            from: i,
                            to: j,
                            kind: EdgeKind::Notify,
                        });
                    }
                    None => self.missing(&r.id, "notifies", &n.id, Some(n.location.clone())),
                }
            }
            for w in &r.on_failure {
                match self.index.get(w.id.as_str()) {
                    Some(&j) if j == i => self.diags.error(
                        Some(w.location.clone()),
                        format!("resource `{}` handles its own failure", r.id),
                    ),
                    Some(&j) => {
                        self.edges.insert(Edge {
                            from: j,
                            to: i,
                            kind: EdgeKind::OnFailure,
                        });
                    }
                    None => self.missing(
                        &r.id,
                        "handles the failure of",
                        &w.id,
                        Some(w.location.clone()),
                    ),
                }
            }
        }
        tracing::debug!(
            step = "explicit",
            edges = self.edges.len() - before,
            "explicit edges added"
        );
    }

    /// `from` names `target`, which is not in the graph: an error, unless `target` was
    /// already reported; one naming the condition when a false `when:` left it out.
    fn missing(&mut self, from: &str, verb: &str, target: &str, at: Option<Location>) {
        if self.input.rejected.contains(target) {
            return;
        }
        let message = match self.input.excluded.get(target) {
            Some(when) => format!(
                "resource `{from}` {verb} `{target}`, which its `when:` condition leaves out (at {when}); give `{from}` the same condition, or drop the reference"
            ),
            None => format!("resource `{from}` {verb} `{target}`, which is not declared"),
        };
        self.diags.error(at, message);
    }

    /// Step 2: `${resources.<id>.<field>}`.
    fn reference_edges(&mut self) {
        let before = self.edges.len();
        for (i, r) in self.input.resources.iter().enumerate() {
            for reference in refs::find(&r.properties) {
                let at = Some(r.property_location(&reference.pointer));
                if reference.field.is_empty() {
                    self.diags.error(
                        at,
                        format!(
                            "resource `{}`: `${{resources.{}}}` names no field; write `${{resources.<id>.<field>}}`",
                            r.id, reference.target
                        ),
                    );
                    continue;
                }
                if reference.target == r.id {
                    self.diags.error(
                        at,
                        format!(
                            "resource `{}` references itself (`{}`)",
                            r.id, reference.field
                        ),
                    );
                    continue;
                }
                let Some(&j) = self.index.get(reference.target.as_str()) else {
                    self.missing(&r.id, "references", &reference.target, at);
                    continue;
                };
                if let Some(fields) = &self.input.fields[j]
                    && !fields.contains(&reference.field)
                {
                    let t = self.resource(j);
                    let known: Vec<&str> = fields.iter().map(String::as_str).collect();
                    self.diags.error(
                        at,
                        format!(
                            "resource `{}` references field `{}` of `{}`, but {} has no such field (it has: {})",
                            r.id,
                            reference.field,
                            t.id,
                            t.type_name,
                            known.join(", ")
                        ),
                    );
                    continue;
                }
                self.edges.insert(Edge {
                    from: j,
                    to: i,
                    kind: EdgeKind::Reference,
                });
            }
        }
        tracing::debug!(
            step = "reference",
            edges = self.edges.len() - before,
            "reference edges added"
        );
    }

    fn petgraph(&self) -> (DiGraph<usize, ()>, Vec<NodeIndex>) {
        let n = self.input.resources.len();
        let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(n, self.edges.len());
        let nodes: Vec<NodeIndex> = (0..n).map(|i| g.add_node(i)).collect();
        for e in &self.edges {
            g.add_edge(nodes[e.from], nodes[e.to], ());
        }
        (g, nodes)
    }

    fn deps_of(&self) -> Vec<Vec<usize>> {
        let mut deps = vec![Vec::new(); self.input.resources.len()];
        for e in &self.edges {
            deps[e.to].push(e.from);
        }
        for d in &mut deps {
            d.sort_unstable();
            d.dedup();
        }
        deps
    }

    /// Step 3: cycles among explicit and reference edges.
    fn report_cycles(&mut self) {
        let (g, _) = self.petgraph();
        let deps = self.deps_of();
        let mut cycles = 0;
        for scc in petgraph::algo::tarjan_scc(&g) {
            if scc.len() < 2 {
                continue;
            }
            cycles += 1;
            let mut members: Vec<usize> = scc.iter().map(|n| g[*n]).collect();
            members.sort_unstable();
            let cycle = find_cycle(&deps, &members);
            let names: Vec<&str> = cycle
                .iter()
                .map(|&i| self.resource(i).id.as_str())
                .collect();
            let mut message = format!("dependency cycle: {}", names.join(" -> "));
            if members.len() + 1 > cycle.len() {
                let on_cycle: BTreeSet<usize> = cycle.iter().copied().collect();
                let others: Vec<&str> = members
                    .iter()
                    .filter(|m| !on_cycle.contains(m))
                    .map(|&i| self.resource(i).id.as_str())
                    .collect();
                if !others.is_empty() {
                    message.push_str(&format!(" (also in the same cycle: {})", others.join(", ")));
                }
            }
            self.diags
                .error(Some(self.resource(members[0]).location.clone()), message);
        }
        tracing::debug!(step = "cycles", cycles, "cycles checked");
    }

    /// Step 4: autorequire by path.
    fn auto_edges(&mut self) {
        let mut by_path: BTreeMap<&PathBuf, usize> = BTreeMap::new();
        for (i, paths) in self.input.paths.iter().enumerate() {
            for p in paths {
                if let Some(&j) = by_path.get(p) {
                    if j != i {
                        let r = self.resource(i);
                        self.diags.error(
                            Some(r.location.clone()),
                            format!(
                                "resources `{}` and `{}` both manage {}",
                                self.resource(j).id,
                                r.id,
                                p.display()
                            ),
                        );
                    }
                    continue;
                }
                by_path.insert(p, i);
            }
        }
        let related: HashSet<(usize, usize)> = self
            .edges
            .iter()
            .flat_map(|e| [(e.from, e.to), (e.to, e.from)])
            .collect();
        let mut auto = Vec::new();
        for (i, paths) in self.input.paths.iter().enumerate() {
            for p in paths {
                let nearest = p
                    .ancestors()
                    .skip(1)
                    .find_map(|a| by_path.get(&a.to_path_buf()));
                if let Some(&j) = nearest
                    && j != i
                    && !related.contains(&(j, i))
                {
                    // Removing a directory: what lies under it goes first (Puppet does the
                    // same), or the directory would not be empty.
                    let absent = self.resource(j).properties.get("ensure")
                        == Some(&serde_json::Value::String("absent".into()));
                    let (from, to) = if absent { (i, j) } else { (j, i) };
                    auto.push(Edge {
                        from,
                        to,
                        kind: EdgeKind::Auto,
                    });
                }
            }
        }
        let added = auto.len();
        self.edges.extend(auto);
        // Explicit ordering wins: drop auto edges that close a cycle.
        let (g, _) = self.petgraph();
        let mut in_cycle = vec![usize::MAX; self.input.resources.len()];
        for (c, scc) in petgraph::algo::tarjan_scc(&g).iter().enumerate() {
            if scc.len() > 1 {
                for n in scc {
                    in_cycle[g[*n]] = c;
                }
            }
        }
        let mut dropped = 0;
        self.edges.retain(|e| {
            let cyclic = e.kind == EdgeKind::Auto
                && in_cycle[e.from] != usize::MAX
                && in_cycle[e.from] == in_cycle[e.to];
            dropped += usize::from(cyclic);
            !cyclic
        });
        tracing::debug!(
            step = "auto",
            edges = added - dropped,
            dropped,
            "auto edges added"
        );
    }
}

/// A cycle through the strongly connected `members`, starting and ending at the first.
fn find_cycle(deps: &[Vec<usize>], members: &[usize]) -> Vec<usize> {
    let start = members[0];
    let mut path = vec![start];
    let mut seen = std::collections::BTreeSet::from([start]);
    let mut at = start;
    loop {
        // Follow a dependency inside the component; prefer closing the cycle.
        let inside: Vec<usize> = deps[at]
            .iter()
            .copied()
            .filter(|d| members.binary_search(d).is_ok())
            .collect();
        if inside.contains(&start) && path.len() > 1 {
            path.push(start);
            return path;
        }
        match inside.iter().find(|d| !seen.contains(*d)) {
            Some(&next) => {
                seen.insert(next);
                path.push(next);
                at = next;
            }
            None => {
                // Closes on an earlier member: cut the path to that loop.
                if let Some(&back) = inside.first()
                    && let Some(pos) = path.iter().position(|p| *p == back)
                {
                    let mut cycle = path.split_off(pos);
                    cycle.push(back);
                    return cycle;
                }
                path.push(start);
                return path;
            }
        }
    }
}

/// Kahn's algorithm with a min-heap: dependencies first, otherwise manifest order.
fn topological_order(deps: &[Vec<usize>]) -> Vec<usize> {
    let mut dependents = vec![Vec::new(); deps.len()];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = waiting
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(deps.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Location;
    use crate::manifest::{Dependency, yaml::Spans};
    use serde_json::json;

    fn res(id: &str, deps: &[&str], line: usize) -> ResourceDecl {
        ResourceDecl {
            id: id.into(),
            type_name: "mock.item".into(),
            provider: "mock".into(),
            kind: "item".into(),
            properties: json!({}),
            depends_on: deps
                .iter()
                .map(|d| Dependency {
                    id: (*d).into(),
                    location: Location::new("m.yaml", line, 20),
                })
                .collect(),
            notify: Vec::new(),
            prevent_destroy: false,
            forget_on_remove: false,
            sensitive_from_vars: Vec::new(),
            locks: Vec::new(),
            sensitive: Vec::new(),
            location: Location::new("m.yaml", line, 3),
            type_location: None,
            spans: Spans::default(),
            base_dir: ".".into(),
            declared_in: ".".into(),
            labels: Default::default(),
            retry: None,
            timeout: None,
            on_failure: Vec::new(),
            rolling: None,
        }
    }

    #[test]
    fn orders_dependencies_first_then_manifest_order() {
        let rs = [
            res("c", &["b"], 1),
            res("a", &[], 2),
            res("b", &["a"], 3),
            res("d", &[], 4),
        ];
        let g = Graph::of(&rs).expect("valid");
        let ids: Vec<_> = g.order().iter().map(|&i| rs[i].id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
    }

    #[test]
    fn reports_cycles_unknown_targets_and_self_references_together() {
        let rs = [
            res("a", &["b"], 1),
            res("b", &["c"], 2),
            res("c", &["a"], 3),
            res("d", &["d", "nope"], 4),
        ];
        let diags = Graph::of(&rs).expect_err("invalid").sorted();
        let text = diags.to_string();
        assert!(
            text.contains("m.yaml:1:3: error: dependency cycle: a -> b -> c -> a"),
            "{text}"
        );
        assert!(
            text.contains("m.yaml:4:20: error: resource `d` depends on itself"),
            "{text}"
        );
        assert!(
            text.contains("depends on `nope`, which is not declared"),
            "{text}"
        );
        assert_eq!(diags.len(), 3);
    }
}
