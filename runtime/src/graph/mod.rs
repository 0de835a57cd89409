//! The dependency graph of a manifest's resources: explicit `depends_on` edges, checked
//! for unknown targets, self-references and cycles (all reported at once), and a
//! deterministic order in which every resource comes after what it depends on (ties
//! broken by manifest order). Pure: no I/O, no providers.

pub mod walk;

use crate::diag::Diagnostics;
use crate::manifest::ResourceDecl;
use petgraph::graph::{DiGraph, NodeIndex};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// Resources (by index into the manifest's list) and their dependencies.
#[derive(Debug, Clone)]
pub struct Graph {
    /// `deps[i]`: indices resource `i` depends on, sorted, without duplicates.
    deps: Vec<Vec<usize>>,
    /// Topological order.
    order: Vec<usize>,
}

impl Graph {
    /// Build and validate the graph. References to `rejected` ids (resources left out for
    /// errors already reported) are dropped silently.
    pub fn build(
        resources: &[ResourceDecl],
        rejected: &BTreeSet<String>,
    ) -> Result<Graph, Diagnostics> {
        let mut diags = Diagnostics::new();
        let index: BTreeMap<&str, usize> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        let mut deps = vec![Vec::new(); resources.len()];
        for (i, r) in resources.iter().enumerate() {
            for d in &r.depends_on {
                if d.id == r.id {
                    diags.error(
                        Some(d.location.clone()),
                        format!("resource `{}` depends on itself", r.id),
                    );
                    continue;
                }
                match index.get(d.id.as_str()) {
                    Some(&j) => deps[i].push(j),
                    None if rejected.contains(&d.id) => {}
                    None => diags.error(
                        Some(d.location.clone()),
                        format!(
                            "resource `{}` depends on `{}`, which is not declared",
                            r.id, d.id
                        ),
                    ),
                }
            }
            deps[i].sort_unstable();
            deps[i].dedup();
        }

        let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(resources.len(), 0);
        let nodes: Vec<NodeIndex> = (0..resources.len()).map(|i| g.add_node(i)).collect();
        for (i, ds) in deps.iter().enumerate() {
            for &j in ds {
                g.add_edge(nodes[j], nodes[i], ());
            }
        }
        for scc in petgraph::algo::tarjan_scc(&g) {
            if scc.len() < 2 {
                continue;
            }
            let mut members: Vec<usize> = scc.iter().map(|n| g[*n]).collect();
            members.sort_unstable();
            let cycle = find_cycle(&deps, &members);
            let names: Vec<&str> = cycle.iter().map(|&i| resources[i].id.as_str()).collect();
            diags.error(
                Some(resources[members[0]].location.clone()),
                format!("dependency cycle: {}", names.join(" -> ")),
            );
        }
        if diags.has_errors() {
            return Err(diags);
        }
        let order = topological_order(&deps);
        Ok(Graph { deps, order })
    }

    /// Every resource, after all it depends on.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// What resource `i` depends on directly.
    pub fn dependencies(&self, i: usize) -> &[usize] {
        &self.deps[i]
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
            location: Location::new("m.yaml", line, 3),
            type_location: None,
            spans: Spans::default(),
            base_dir: ".".into(),
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
        let g = Graph::build(&rs, &BTreeSet::new()).expect("valid");
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
        let diags = Graph::build(&rs, &BTreeSet::new())
            .expect_err("invalid")
            .sorted();
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
