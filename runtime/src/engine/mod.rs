//! The engine: walks the resources in dependency order and calls providers through the
//! [`Provider`] trait — `read` + `diff` to plan, `apply` / `delete` to converge. A failed
//! resource does not stop the run: what depends on it is skipped (naming the failed
//! upstream resource) and everything else still converges. Knows nothing of Wasm.

use crate::graph::Graph;
use crate::manifest::Manifest;
use crate::plan::{self, ManifestRef, Plan, PlannedResource, ProviderPin, Summary};
use crate::provider::{Action, CallContext, Provider, ProviderError};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Instrument, info_span};

/// What happened to one resource during apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Updated,
    Replaced,
    Deleted,
    Unchanged,
    Failed { error: String },
    Skipped { upstream: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        !matches!(self, Outcome::Failed { .. } | Outcome::Skipped { .. })
    }
}

/// The result for one resource.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceResult {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(serialize_with = "ser_ms")]
    pub duration: Duration,
    /// The state after the change (none when absent or unknown).
    #[serde(skip)]
    pub state: Option<Value>,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// The result of an apply.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub results: Vec<ResourceResult>,
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub created: usize,
    pub updated: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl ApplyReport {
    pub fn counts(&self) -> OutcomeCounts {
        let mut c = OutcomeCounts::default();
        for r in &self.results {
            match r.outcome {
                Outcome::Created => c.created += 1,
                Outcome::Updated => c.updated += 1,
                Outcome::Replaced => c.replaced += 1,
                Outcome::Deleted => c.deleted += 1,
                Outcome::Unchanged => c.unchanged += 1,
                Outcome::Failed { .. } => c.failed += 1,
                Outcome::Skipped { .. } => c.skipped += 1,
            }
        }
        c
    }

    pub fn succeeded(&self) -> bool {
        self.results.iter().all(|r| r.outcome.is_success())
    }
}

/// Progress reported while applying.
#[derive(Debug)]
pub enum Event<'a> {
    Started(&'a PlannedResource),
    Finished(&'a ResourceResult),
}

/// A resource whose observed state moved since the plan was computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub id: String,
    pub reason: String,
}

/// Runs plans against providers.
pub struct Engine {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl Engine {
    pub fn new(providers: BTreeMap<String, Arc<dyn Provider>>) -> Self {
        Engine { providers }
    }

    fn provider(&self, name: &str) -> Result<&Arc<dyn Provider>, String> {
        self.providers
            .get(name)
            .ok_or_else(|| format!("provider `{name}` is not loaded"))
    }

    /// Read and diff every resource of a validated manifest, in dependency order.
    pub async fn plan(
        &self,
        manifest: &Manifest,
        graph: &Graph,
        pins: BTreeMap<String, ProviderPin>,
    ) -> Plan {
        let mut resources = Vec::with_capacity(manifest.resources.len());
        for &i in graph.order() {
            let r = &manifest.resources[i];
            let span = info_span!("plan", resource = %r.id, r#type = %r.type_name);
            let depends_on = graph
                .dependencies(i)
                .iter()
                .map(|&d| manifest.resources[d].id.clone())
                .collect();
            let mut planned = PlannedResource {
                id: r.id.clone(),
                type_name: r.type_name.clone(),
                provider: r.provider.clone(),
                kind: r.kind.clone(),
                action: Action::None,
                changes: Vec::new(),
                desired: r.properties.clone(),
                current: None,
                current_sha256: None,
                depends_on,
                error: None,
            };
            match self
                .plan_one(&r.id, &r.provider, &r.kind, &r.properties)
                .instrument(span)
                .await
            {
                Ok((current, diff)) => {
                    planned.current_sha256 = current.as_ref().map(plan::digest);
                    planned.current = current;
                    planned.action = diff.action;
                    planned.changes = diff.changes;
                }
                Err(e) => planned.error = Some(e),
            }
            resources.push(planned);
        }
        let summary = Summary::of(&resources);
        Plan {
            format_version: plan::FORMAT_VERSION,
            tenet_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: ManifestRef {
                path: manifest.path.display().to_string(),
                sha256: manifest.sha256.clone(),
            },
            providers: pins,
            resources,
            summary,
        }
    }

    async fn plan_one(
        &self,
        id: &str,
        provider: &str,
        kind: &str,
        desired: &Value,
    ) -> Result<(Option<Value>, crate::provider::Diff), String> {
        let p = self.provider(provider)?;
        let cx = CallContext { resource: id };
        let current = p.read(cx, kind, desired).await.map_err(|e| e.to_string())?;
        let diff = p
            .diff(cx, kind, desired, current.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        Ok((current, diff))
    }

    /// Re-read every resource of a saved plan; report those whose state changed since.
    pub async fn stale(&self, plan: &Plan) -> Vec<Stale> {
        let mut out = Vec::new();
        for r in &plan.resources {
            let cx = CallContext { resource: &r.id };
            let now = match self.provider(&r.provider) {
                Ok(p) => p
                    .read(cx, &r.kind, &r.desired)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match now {
                Ok(now) => {
                    let digest = now.as_ref().map(plan::digest);
                    if digest != r.current_sha256 {
                        let reason = match (&r.current_sha256, &digest) {
                            (None, Some(_)) => "it was absent at plan time and now exists",
                            (Some(_), None) => "it existed at plan time and is now gone",
                            _ => "its observed state changed since the plan was made",
                        };
                        out.push(Stale {
                            id: r.id.clone(),
                            reason: reason.to_owned(),
                        });
                    }
                }
                Err(e) => out.push(Stale {
                    id: r.id.clone(),
                    reason: format!("cannot be read again: {e}"),
                }),
            }
        }
        out
    }

    /// Carry out a plan, in its order. A failure marks the resource failed and skips
    /// everything that depends on it; independent resources still run.
    pub async fn apply(
        &self,
        plan: &Plan,
        on_event: &mut (dyn FnMut(Event<'_>) + Send),
    ) -> ApplyReport {
        let mut report = ApplyReport::default();
        // id → the failed resource that blocks it (itself when it failed).
        let mut blocked: BTreeMap<&str, String> = BTreeMap::new();
        let ids: BTreeSet<&str> = plan.resources.iter().map(|r| r.id.as_str()).collect();
        for r in &plan.resources {
            let upstream = r
                .depends_on
                .iter()
                .filter(|d| ids.contains(d.as_str()))
                .find_map(|d| blocked.get(d.as_str()).cloned());
            let started = Instant::now();
            let (outcome, state) = if let Some(upstream) = upstream {
                blocked.insert(&r.id, upstream.clone());
                (Outcome::Skipped { upstream }, None)
            } else if let Some(e) = &r.error {
                // Could not be planned: it fails, its dependents are skipped, the rest runs.
                blocked.insert(&r.id, r.id.clone());
                (
                    Outcome::Failed {
                        error: format!("could not be planned: {e}"),
                    },
                    None,
                )
            } else if r.action == Action::None {
                (Outcome::Unchanged, r.current.clone())
            } else {
                on_event(Event::Started(r));
                let span = info_span!("apply", resource = %r.id, r#type = %r.type_name, action = %r.action);
                match self.apply_one(r).instrument(span).await {
                    Ok((outcome, state)) => (outcome, state),
                    Err(e) => {
                        blocked.insert(&r.id, r.id.clone());
                        (Outcome::Failed { error: e }, None)
                    }
                }
            };
            let result = ResourceResult {
                id: r.id.clone(),
                type_name: r.type_name.clone(),
                outcome,
                duration: started.elapsed(),
                state,
            };
            on_event(Event::Finished(&result));
            report.results.push(result);
        }
        report
    }

    async fn apply_one(&self, r: &PlannedResource) -> Result<(Outcome, Option<Value>), String> {
        let p = self.provider(&r.provider)?;
        let cx = CallContext { resource: &r.id };
        let err = |e: ProviderError| e.to_string();
        match r.action {
            Action::None => Ok((Outcome::Unchanged, r.current.clone())),
            Action::Create | Action::Update => {
                let state = p
                    .apply(cx, &r.kind, &r.desired, r.current.as_ref())
                    .await
                    .map_err(err)?;
                let outcome = if r.action == Action::Create {
                    Outcome::Created
                } else {
                    Outcome::Updated
                };
                Ok((outcome, Some(state)))
            }
            Action::Replace => {
                if let Some(current) = &r.current {
                    p.delete(cx, &r.kind, current).await.map_err(err)?;
                }
                let state = p.apply(cx, &r.kind, &r.desired, None).await.map_err(err)?;
                Ok((Outcome::Replaced, Some(state)))
            }
            Action::Delete => {
                if let Some(current) = &r.current {
                    p.delete(cx, &r.kind, current).await.map_err(err)?;
                }
                Ok((Outcome::Deleted, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{self, LoadOptions};
    use crate::provider::Operation;
    use crate::provider::mock::MockProvider;

    fn manifest(dir: &tempfile::TempDir, body: &str) -> (Manifest, Graph) {
        let path = dir.path().join("m.yaml");
        std::fs::write(
            &path,
            format!("providers:\n  mock: {{}}\nresources:\n{body}"),
        )
        .expect("write");
        let (m, diags) = manifest::load(&path, &LoadOptions::default());
        assert!(diags.is_empty(), "{diags}");
        let g = Graph::build(&m.resources, &m.rejected_ids).expect("valid graph");
        (m, g)
    }

    fn engine(mock: &Arc<MockProvider>) -> Engine {
        let p: Arc<dyn Provider> = mock.clone();
        Engine::new(BTreeMap::from([("mock".to_owned(), p)]))
    }

    const THREE: &str = r"  - {id: c, type: mock.item, properties: {name: c, value: 3}, depends_on: [b]}
  - {id: a, type: mock.item, properties: {name: a, value: 1}}
  - {id: b, type: mock.item, properties: {name: b, value: 2}, depends_on: [a]}
  - {id: z, type: mock.item, properties: {name: z, value: 9}}
";

    fn outcomes(report: &ApplyReport) -> BTreeMap<&str, Outcome> {
        report
            .results
            .iter()
            .map(|r| (r.id.as_str(), r.outcome.clone()))
            .collect()
    }

    /// Plan THREE against a fresh mock; `fail` lists resources whose apply fails.
    async fn planned(dir: &tempfile::TempDir, fail: &[&str]) -> (Arc<MockProvider>, Engine, Plan) {
        let (m, g) = manifest(dir, THREE);
        let mock = Arc::new(MockProvider::new());
        if let Ok(mut f) = mock.fail_apply.lock() {
            f.extend(fail.iter().map(|s| (*s).to_owned()));
        }
        let e = engine(&mock);
        let plan = e.plan(&m, &g, BTreeMap::new()).await;
        (mock, e, plan)
    }

    #[tokio::test]
    async fn applies_in_dependency_order_and_converges() {
        let dir = tempfile::tempdir().expect("tmp");
        let (m, g) = manifest(&dir, THREE);
        let mock = Arc::new(MockProvider::new());
        let e = engine(&mock);
        let plan = e.plan(&m, &g, BTreeMap::new()).await;
        assert_eq!(plan.summary.create, 4);
        let report = e.apply(&plan, &mut |_| {}).await;
        assert!(report.succeeded());
        let applies: Vec<String> = mock
            .calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|(op, _)| *op == Operation::Apply)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(applies, ["a", "b", "c", "z"]);

        let again = e.plan(&m, &g, BTreeMap::new()).await;
        assert!(
            !again.has_changes(),
            "second plan must be empty: {:?}",
            again.summary
        );
        assert_eq!(again.summary.unchanged, 4);
    }

    #[tokio::test]
    async fn failure_skips_dependents_and_spares_the_rest() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_mock, e, plan) = planned(&dir, &["a"]).await;
        let report = e.apply(&plan, &mut |_| {}).await;
        let by_id = outcomes(&report);
        assert!(matches!(by_id["a"], Outcome::Failed { .. }));
        assert_eq!(
            by_id["b"],
            Outcome::Skipped {
                upstream: "a".into()
            }
        );
        assert_eq!(
            by_id["c"],
            Outcome::Skipped {
                upstream: "a".into()
            }
        );
        assert_eq!(by_id["z"], Outcome::Created);
        assert!(!report.succeeded());
        let c = report.counts();
        assert_eq!((c.failed, c.skipped, c.created), (1, 2, 1));
    }

    #[tokio::test]
    async fn a_resource_that_could_not_be_planned_fails_and_blocks_only_its_dependents() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_mock, e, mut plan) = planned(&dir, &[]).await;
        let b = plan.resources.iter_mut().find(|r| r.id == "b").expect("b");
        b.error = Some("read failed".into());
        b.action = Action::None;
        let report = e.apply(&plan, &mut |_| {}).await;
        let by_id = outcomes(&report);
        assert_eq!(
            by_id["b"],
            Outcome::Failed {
                error: "could not be planned: read failed".into()
            }
        );
        assert_eq!(
            by_id["c"],
            Outcome::Skipped {
                upstream: "b".into()
            }
        );
        assert_eq!(
            (&by_id["a"], &by_id["z"]),
            (&Outcome::Created, &Outcome::Created)
        );
    }

    #[tokio::test]
    async fn saved_plan_goes_stale_when_the_system_moves() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mock, e, plan) = planned(&dir, &[]).await;
        assert!(e.stale(&plan).await.is_empty());
        mock.state
            .lock()
            .expect("state")
            .insert("z".into(), serde_json::json!({"name": "z", "value": 0}));
        let stale = e.stale(&plan).await;
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].id, "z");
    }
}
