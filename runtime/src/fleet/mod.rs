//! Fleets: each node's agent keeps its own state and history (it works offline; a
//! database outage never stops configuration) and **reports** every run to a fleet
//! database in PostgreSQL — PuppetDB's role — through a small ingest service.
//!
//! - [`Report`]: what a node says about one run (counts, artifact digest, facts summary,
//!   the resources that were not unchanged, policy results, the run's chain hash), built
//!   from the run as the node's history stores it.
//! - [`deliver`]: the node side. The history *is* the outbox: a cursor file beside the
//!   state names the last run the ingest service acknowledged; every run after it is
//!   sent (in order, in batches) until acknowledged, retried with backoff, never in the
//!   way of a run. A node offline for a day sends the day's runs when it is back.
//! - [`serve`]: `tenet fleet serve`, the ingest endpoint: nodes authenticate with a
//!   per-node bearer token (only its hash is stored) and can only report for themselves;
//!   only the service holds database credentials.
//! - [`db`]: the schema (nodes, latest status per node, daily-partitioned runs and
//!   resource events), idempotent ingest on `(node, run)`, retention by dropping whole
//!   partitions, and the queries behind `tenet fleet status|nodes|drift|failures|runs`.

pub mod db;
pub mod deliver;
pub mod rollout;
pub mod serve;
pub mod simulate;

use crate::state::{ChainedRun, ResourceOutcome};
use serde::{Deserialize, Serialize};

/// Version of the report format.
pub const REPORT_VERSION: u32 = 1;
/// Most resource events one report may carry (a run's non-unchanged resources).
pub const MAX_EVENTS: usize = 100_000;
/// Longest text field accepted in a report (ids, messages, digests).
pub const MAX_TEXT: usize = 4096;
/// Most reports one request may carry.
pub const MAX_BATCH: usize = 200;
/// Largest request body the ingest endpoint reads.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How a run ended, as the fleet counts it.
pub const OUTCOMES: &[&str] = &["converged", "changed", "drifted", "failed", "denied"];

/// One run as a node reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    /// The node's name (must be the authenticated node's).
    pub node: String,
    /// The run's sequence number in the node's history: with `node`, the idempotency key.
    pub seq: u64,
    /// The run's hash in the node's hash chain.
    pub hash: String,
    /// `apply`, `drift`, `plan`, `rollback`.
    pub command: String,
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: String,
    /// converged, changed, drifted, failed, denied.
    pub outcome: String,
    pub counts: Counts,
    /// The desired-state artifact applied (`--source`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<crate::manifest::Artifact>,
    /// A few facts (os family, name and release, hostname, architecture).
    #[serde(default)]
    pub facts: serde_json::Value,
    /// Every resource that was not unchanged (a converged fleet sends none).
    #[serde(default)]
    pub events: Vec<Event>,
    /// Policy results: denials (rule names), warnings.
    #[serde(default)]
    pub policy: PolicySummary,
    pub agent_version: String,
}

/// A run's resources by what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub resources: u32,
    /// In the desired state when the run ended: unchanged, or changed successfully.
    pub in_sync: u32,
    pub changed: u32,
    pub corrective: u32,
    pub drifted: u32,
    pub failed: u32,
}

/// A resource that was not unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub outcome: String,
    #[serde(default)]
    pub corrective: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub denied: Vec<String>,
    pub warnings: u32,
}

fn drifted(outcome: &str) -> bool {
    matches!(outcome, "drifted" | "missing")
}

fn failed(outcome: &str) -> bool {
    matches!(outcome, "failed" | "error" | "interrupted")
}

fn changed(outcome: &str) -> bool {
    matches!(
        outcome,
        "created" | "updated" | "replaced" | "deleted" | "refreshed"
    )
}

/// The facts a report carries: enough to group and filter nodes, nothing more.
fn facts_summary(facts: &serde_json::Value) -> serde_json::Value {
    let pick = |p: &str| facts.pointer(p).cloned().unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "os_family": pick("/os/family"),
        "os_name": pick("/os/name"),
        "os_release": pick("/os/release/full"),
        "hostname": pick("/hostname"),
        "architecture": pick("/architecture"),
    })
}

impl Report {
    /// The report of `run` (as the node's history stores it) from node `node`.
    pub fn of(node: &str, run: &ChainedRun) -> Report {
        let rec = &run.record;
        let mut counts = Counts::default();
        let mut events = Vec::new();
        let steady = rec.steady.as_ref().map_or(0, |s| s.count);
        counts.in_sync = u32::try_from(steady).unwrap_or(u32::MAX);
        counts.resources = u32::try_from(steady + rec.resources.len()).unwrap_or(u32::MAX);
        for r in &rec.resources {
            let o = r.outcome.as_str();
            let corrective = r.change.as_deref() == Some("corrective");
            match o {
                "unchanged" | "in_sync" => counts.in_sync += 1,
                _ if drifted(o) => counts.drifted += 1,
                _ if failed(o) => counts.failed += 1,
                _ if changed(o) => {
                    // Changed and now as desired.
                    counts.in_sync += 1;
                    counts.changed += 1;
                    counts.corrective += u32::from(corrective);
                }
                _ => {}
            }
            if !matches!(o, "unchanged" | "in_sync") {
                events.push(event(r, corrective));
            }
        }
        let denied: Vec<String> = rec
            .policy
            .iter()
            .flat_map(|d| d.results.iter())
            .filter(|r| r.blocks())
            .map(|r| r.rule.clone())
            .collect();
        let warnings = rec
            .policy
            .iter()
            .flat_map(|d| d.results.iter())
            .filter(|r| r.outcome == crate::plan::policy::Outcome::Warning)
            .count() as u32;
        let outcome = if rec.policy.iter().any(|d| d.blocked()) {
            "denied"
        } else if !rec.succeeded || counts.failed > 0 {
            "failed"
        } else if counts.drifted > 0 {
            "drifted"
        } else if counts.changed > 0 {
            "changed"
        } else {
            "converged"
        };
        Report {
            version: REPORT_VERSION,
            node: node.to_owned(),
            seq: run.seq,
            hash: run.hash.clone(),
            command: rec.command.clone(),
            started_at: rec.started_at.clone(),
            finished_at: rec.finished_at.clone(),
            outcome: outcome.to_owned(),
            counts,
            artifact: rec.artifact.clone(),
            facts: rec
                .manifest_snapshot
                .get("facts")
                .map(facts_summary)
                .unwrap_or_default(),
            events,
            policy: PolicySummary { denied, warnings },
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Every problem with a report from a peer, at once (sizes, formats, outcome names).
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.version != REPORT_VERSION {
            problems.push(format!(
                "report version {} (this service reads {REPORT_VERSION})",
                self.version
            ));
        }
        if !OUTCOMES.contains(&self.outcome.as_str()) {
            problems.push(format!(
                "outcome `{}` is not one of {OUTCOMES:?}",
                self.outcome
            ));
        }
        if self.events.len() > MAX_EVENTS {
            problems.push(format!("{} events (limit {MAX_EVENTS})", self.events.len()));
        }
        for (what, s) in [
            ("node", &self.node),
            ("hash", &self.hash),
            ("command", &self.command),
            ("agent_version", &self.agent_version),
        ] {
            if s.is_empty() || s.len() > MAX_TEXT {
                problems.push(format!("`{what}` is empty or longer than {MAX_TEXT} bytes"));
            }
        }
        for (what, t) in [
            ("started_at", &self.started_at),
            ("finished_at", &self.finished_at),
        ] {
            if humantime::parse_rfc3339_weak(t).is_err() {
                problems.push(format!("`{what}` `{t}` is not an RFC 3339 time"));
            }
        }
        if self.seq == 0 || self.seq > i64::MAX as u64 {
            problems.push(format!("`seq` {} is out of range", self.seq));
        }
        let long = self.events.iter().any(|e| {
            e.id.len() > MAX_TEXT
                || e.type_name.len() > MAX_TEXT
                || e.outcome.len() > MAX_TEXT
                || e.error.as_ref().is_some_and(|m| m.len() > MAX_TEXT)
                || e.fields.len() > 1000
                || e.fields.iter().any(|f| f.len() > MAX_TEXT)
        }) || self.policy.denied.iter().any(|r| r.len() > MAX_TEXT)
            || self.policy.denied.len() > 1000;
        if long {
            problems.push(format!("a field is longer than {MAX_TEXT} bytes"));
        }
        if serde_json::to_vec(&self.facts).map_or(true, |v| v.len() > 16 * 1024) {
            problems.push("`facts` is larger than 16 KiB".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn event(r: &ResourceOutcome, corrective: bool) -> Event {
    Event {
        id: r.id.clone(),
        type_name: r.type_name.clone(),
        outcome: r.outcome.clone(),
        corrective,
        fields: r.changed_fields.clone(),
        error: r.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::conformance::record;

    fn outcome(id: &str, o: &str, change: Option<&str>) -> ResourceOutcome {
        ResourceOutcome {
            id: id.into(),
            type_name: "file.file".into(),
            outcome: o.into(),
            changed_fields: Vec::new(),
            error: (o == "failed").then(|| "boom".into()),
            duration_ms: 0.0,
            change: change.map(Into::into),
            attempts: None,
            retried: Vec::new(),
        }
    }

    fn report(command: &str, resources: Vec<ResourceOutcome>, steady: usize) -> Report {
        let mut rec = record(command, "unchanged");
        rec.succeeded = !resources.iter().any(|r| r.outcome == "failed");
        rec.resources = resources;
        if steady > 0 {
            rec.steady = Some(crate::state::compact::Steady {
                outcome: "unchanged".into(),
                count: steady,
                sha256: "x".into(),
                ids: Default::default(),
            });
        }
        rec.manifest_snapshot = serde_json::json!({"facts": {
            "os": {"family": "Debian", "name": "Debian", "release": {"full": "12.11"}},
            "hostname": "web-1", "architecture": "x86_64", "memory": {"total_bytes": 1}}});
        let run = ChainedRun {
            seq: 7,
            prev_hash: "p".into(),
            hash: "h".into(),
            record: rec,
        };
        Report::of("web-1", &run)
    }

    #[test]
    fn a_report_counts_what_the_run_found_and_carries_only_what_was_not_unchanged() {
        let r = report(
            "apply",
            vec![
                outcome("a", "updated", Some("corrective")),
                outcome("b", "created", Some("intentional")),
                outcome("c", "failed", None),
                outcome("d", "unchanged", None),
            ],
            10,
        );
        assert_eq!(
            r.counts,
            Counts {
                resources: 14,
                in_sync: 13,
                changed: 2,
                corrective: 1,
                drifted: 0,
                failed: 1,
            }
        );
        assert_eq!(r.outcome, "failed");
        let ids: Vec<&str> = r.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(r.events[0].corrective && !r.events[1].corrective);
        assert_eq!(r.facts["os_family"], "Debian");
        assert!(r.facts.get("memory").is_none(), "a summary, not every fact");
        assert!(r.check().is_ok());

        let drift = report("drift", vec![outcome("a", "drifted", None)], 3);
        assert_eq!(drift.outcome, "drifted");
        assert_eq!((drift.counts.drifted, drift.counts.in_sync), (1, 3));
        let calm = report("apply", Vec::new(), 5);
        assert_eq!((calm.outcome.as_str(), calm.events.len()), ("converged", 0));
        let changed = report("apply", vec![outcome("a", "created", None)], 0);
        assert_eq!(changed.outcome, "changed");
    }

    #[test]
    fn a_hostile_report_is_refused_with_every_problem() {
        let mut r = report("apply", Vec::new(), 1);
        r.outcome = "great".into();
        r.started_at = "noon".into();
        r.node = "x".repeat(MAX_TEXT + 1);
        r.seq = 0;
        r.events = vec![
            Event {
                id: "i".into(),
                type_name: "t".into(),
                outcome: "o".into(),
                corrective: false,
                fields: Vec::new(),
                error: None,
            };
            MAX_EVENTS + 1
        ];
        let e = r.check().expect_err("refused");
        for p in [
            "outcome `great`",
            "`started_at` `noon`",
            "`node` is empty or longer",
            "`seq` 0",
            "events (limit",
        ] {
            assert!(e.contains(p), "{p}: {e}");
        }
    }
}
