//! What the agent exports at `/metrics` (OpenMetrics text, which Prometheus scrapes and
//! `promtool check metrics` lints): names per the Prometheus conventions — one `tenet_`
//! prefix, base units (`_seconds`, ratios 0–1), `_total` on counters, timestamps as
//! `…_timestamp_seconds` — and label values from small fixed sets only (mode, trigger,
//! outcome, state, kind, result, reason): never a resource id, a path or a run number.
//!
//! Compliance, drift events and time to repair follow `tenet report`'s definitions
//! (state::report): the ratio is the report's, computed over the same history.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, String)>;

/// Every series the agent keeps.
pub struct Metrics {
    registry: Registry,
    pub runs: Family<Labels, Counter>,
    pub run_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub last_run: Gauge<f64, AtomicU64>,
    pub last_success: Gauge<f64, AtomicU64>,
    pub next_run: Gauge<f64, AtomicU64>,
    pub run_in_progress: Gauge,
    pub consecutive_failures: Gauge,
    pub resources: Family<Labels, Gauge>,
    pub compliance: Gauge<f64, AtomicU64>,
    pub drift_events: Counter,
    pub changes: Family<Labels, Counter>,
    pub repair: Histogram,
    pub policy_denials: Counter,
    pub triggers: Family<Labels, Counter>,
    pub coalesced: Counter,
    pub watch_paths: Gauge,
    pub watch_errors: Family<Labels, Counter>,
    pub skipped: Family<Labels, Counter>,
    pub reloads: Family<Labels, Counter>,
    pub pruned: Counter,
    /// `--source`: the artifact in force (one series, value 1).
    pub artifact: Family<Labels, Gauge>,
    pub source_failures: Family<Labels, Counter>,
    /// `--report`: runs recorded but not yet acknowledged by the fleet service.
    pub report_pending: Gauge,
    pub reports_sent: Counter,
    pub report_failures: Counter,
}

fn duration_histogram() -> Histogram {
    // 10 ms … 10 min.
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ])
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tenet_agent");
        let m = Metrics {
            runs: Family::default(),
            run_duration: Family::new_with_constructor(duration_histogram),
            last_run: Gauge::default(),
            last_success: Gauge::default(),
            next_run: Gauge::default(),
            run_in_progress: Gauge::default(),
            consecutive_failures: Gauge::default(),
            resources: Family::default(),
            compliance: Gauge::default(),
            drift_events: Counter::default(),
            changes: Family::default(),
            // 1 s … 1 week.
            repair: Histogram::new([
                1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0, 604800.0,
            ]),
            policy_denials: Counter::default(),
            triggers: Family::default(),
            coalesced: Counter::default(),
            watch_paths: Gauge::default(),
            watch_errors: Family::default(),
            skipped: Family::default(),
            reloads: Family::default(),
            pruned: Counter::default(),
            artifact: Family::default(),
            source_failures: Family::default(),
            report_pending: Gauge::default(),
            reports_sent: Counter::default(),
            report_failures: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "runs",
            "Runs by mode, what woke the agent and how they ended",
            m.runs.clone(),
        );
        registry.register(
            "history_pruned_runs",
            "Runs removed from the history by --keep-runs/--keep-days",
            m.pruned.clone(),
        );
        registry.register_with_unit(
            "run_duration",
            "How long runs took",
            Unit::Seconds,
            m.run_duration.clone(),
        );
        registry.register_with_unit(
            "last_run_timestamp",
            "When the last run finished (Unix time)",
            Unit::Seconds,
            m.last_run.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "When the last successful run finished (Unix time): alert on time() minus this",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register_with_unit(
            "next_run_timestamp",
            "When the next scheduled run is due (Unix time)",
            Unit::Seconds,
            m.next_run.clone(),
        );
        registry.register(
            "run_in_progress",
            "1 while a run is in flight (never more: runs are single-flight)",
            m.run_in_progress.clone(),
        );
        registry.register(
            "consecutive_failures",
            "Failed runs in a row (the backoff's exponent)",
            m.consecutive_failures.clone(),
        );
        registry.register(
            "resources",
            "Managed resources by state at the last run (in_sync, drifted, failed)",
            m.resources.clone(),
        );
        registry.register(
            "compliance_ratio",
            "Share of resources in the desired state at the last check (as tenet report)",
            m.compliance.clone(),
        );
        registry.register(
            "drift_events",
            "Resources found drifted that were not known to be (as tenet report)",
            m.drift_events.clone(),
        );
        registry.register(
            "changes",
            "Changes made, by kind (corrective, intentional) and result (ok, failed)",
            m.changes.clone(),
        );
        registry.register_with_unit(
            "time_to_repair",
            "From a drift event to the run that put the resource back (as tenet report)",
            Unit::Seconds,
            m.repair.clone(),
        );
        registry.register(
            "policy_denials",
            "Runs refused by policy",
            m.policy_denials.clone(),
        );
        registry.register(
            "triggers",
            "What woke the agent (schedule, event, manifest, signal, http, retry, startup)",
            m.triggers.clone(),
        );
        registry.register(
            "triggers_coalesced",
            "Triggers folded into a run already due (single-flight)",
            m.coalesced.clone(),
        );
        registry.register(
            "watch_paths",
            "Directories watched for changes",
            m.watch_paths.clone(),
        );
        registry.register(
            "watch_errors",
            "Problems of the file watch by reason (limit, overflow, io)",
            m.watch_errors.clone(),
        );
        registry.register(
            "skipped_runs",
            "Runs not started, by reason (locked)",
            m.skipped.clone(),
        );
        registry.register(
            "manifest_reloads",
            "Manifest reloads by result (ok, invalid)",
            m.reloads.clone(),
        );
        registry.register(
            "artifact_info",
            "The desired-state artifact in force, by digest (--source; always 1)",
            m.artifact.clone(),
        );
        registry.register(
            "source_failures",
            "Artifacts not taken from --source, by reason (unreachable, not_found, unsigned, untrusted, signature, digest, invalid, io)",
            m.source_failures.clone(),
        );
        registry.register(
            "report_pending",
            "Runs recorded but not yet acknowledged by the fleet's ingest service (--report)",
            m.report_pending.clone(),
        );
        registry.register(
            "reports_sent",
            "Run reports the fleet's ingest service acknowledged",
            m.reports_sent.clone(),
        );
        registry.register(
            "report_failures",
            "Deliveries of reports that failed (retried with backoff)",
            m.report_failures.clone(),
        );
        // A gauge of 1 rather than OpenMetrics' `info` type, which the Prometheus text
        // parser (promtool 2.42, say) does not know.
        let build: Family<Labels, Gauge> = Family::default();
        build
            .get_or_create(&labels([("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        registry.register("build_info", "The agent's version (always 1)", build);
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The same in the Prometheus text format (0.0.4), for scrapers and tools that do
    /// not ask for OpenMetrics (promtool among them).
    pub fn encode_prometheus(&self) -> String {
        prometheus_text(&self.encode())
    }
}

/// OpenMetrics text as the Prometheus text format: a counter's family is named with
/// its `_total` (OpenMetrics names the family without it), and the `# UNIT` and
/// `# EOF` lines, which that format does not have, are left out.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A label set.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_text_names_counter_families_with_their_total() {
        let m = Metrics::new();
        m.runs
            .get_or_create(&labels([
                ("mode", "enforce"),
                ("trigger", "startup"),
                ("outcome", "converged"),
            ]))
            .inc();
        let open = m.encode();
        assert!(open.contains("# TYPE tenet_agent_runs counter"), "{open}");
        assert!(open.ends_with("# EOF\n"));
        let text = m.encode_prometheus();
        assert!(
            text.contains("# TYPE tenet_agent_runs_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP tenet_agent_runs_total Runs by mode"),
            "{text}"
        );
        assert!(text.contains(
            "tenet_agent_runs_total{mode=\"enforce\",trigger=\"startup\",outcome=\"converged\"} 1"
        ));
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tenet_agent_time_to_repair_seconds histogram"),
            "{text}"
        );
    }
}
