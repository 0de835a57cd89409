//! Metrics from the history — the figures configuration-management practice tracks:
//! compliance rate, drift frequency, mean time to repair, change failure rate and
//! provisioning time. Pure: computed from run records, tested with synthetic histories.
//!
//! Definitions (also in the README):
//! - **compliance rate**: in the newest run that checked resources (a drift check, or an
//!   apply), the share found as desired (`in_sync`, or `unchanged` at apply);
//! - **drift event**: a resource found drifted or missing by a drift check, or corrected
//!   by an apply (`corrective` change), when it was not already known to be drifted;
//! - **drift frequency**: drift events per managed resource per day of the window;
//! - **time to repair**: from a drift event to the run that put the resource back (a
//!   corrective change, or a check finding it in sync again); MTTR is the mean;
//! - **change failure rate**: failed changes over attempted changes, in applies;
//! - **provisioning time**: median duration of successful create/update/replace, per
//!   resource type.

use super::RunRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    pub runs: usize,
    /// Share (0–1) of resources in the desired state at the last check; none without runs.
    pub compliance_rate: Option<f64>,
    pub checked_at: Option<String>,
    pub drift_events: usize,
    /// Drift events per managed resource per day.
    pub drift_frequency: f64,
    /// Mean time to repair in seconds; none when nothing was repaired.
    pub mttr_seconds: Option<f64>,
    pub repairs: usize,
    /// Failed changes over attempted changes; none without changes.
    pub change_failure_rate: Option<f64>,
    pub changes: usize,
    pub failed_changes: usize,
    /// Median successful create/update/replace duration per resource type, in ms.
    pub provisioning_ms: BTreeMap<String, f64>,
}

fn parse(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(t).ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The report over `runs` (oldest first: runs that started in the same instant are taken
/// in that order) started in `[since, until]`, for `managed` resources.
pub fn compute(runs: &[RunRecord], managed: usize, since: SystemTime, until: SystemTime) -> Report {
    let mut runs: Vec<(SystemTime, &RunRecord)> = runs
        .iter()
        .filter_map(|r| Some((parse(&r.started_at)?, r)))
        .filter(|(t, _)| *t >= since && *t <= until)
        .collect();
    runs.sort_by_key(|(t, _)| *t);
    let mut tally = Tally::default();
    for (_, run) in &runs {
        tally.add(run);
    }
    tally.report(runs.len(), managed, since, until)
}

/// The figures of a history taken one run at a time, oldest first: what [`compute`]
/// does over a window, and what the agent keeps as it runs (so its metrics and
/// `tenet report` cannot define anything differently).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Resources known to be drifted, since when.
    drifted_since: BTreeMap<String, SystemTime>,
    pub drift_events: usize,
    /// Every time to repair, in seconds, in the order repaired.
    pub repairs: Vec<f64>,
    pub changes: usize,
    pub failed_changes: usize,
    durations: BTreeMap<String, Vec<f64>>,
    /// The newest run that checked resources: when, how many, how many as desired.
    pub last_check: Option<(SystemTime, usize, usize)>,
}

impl Tally {
    /// Take `run` into account (runs whose start time cannot be read are left out).
    pub fn add(&mut self, run: &RunRecord) {
        let Some(t) = parse(&run.started_at) else {
            return;
        };
        // A plan compares with the manifest, which may have changed on purpose: it is
        // neither a compliance check nor a change.
        if run.command == "plan" {
            return;
        }
        let end = parse(&run.finished_at).unwrap_or(t);
        let (mut checked, mut in_sync) = (0, 0);
        for o in &run.resources {
            let id = o.id.as_str();
            let drifted_now = match run.command.as_str() {
                "drift" => match o.outcome.as_str() {
                    "drifted" | "missing" => Some(true),
                    "in_sync" => Some(false),
                    _ => None,
                },
                _ => match (o.outcome.as_str(), o.change.as_deref()) {
                    // Found drifted at the check this apply made (and put back).
                    (_, Some("corrective")) => {
                        if !self.drifted_since.contains_key(id) {
                            self.drift_events += 1;
                            self.drifted_since.insert(id.to_owned(), t);
                        }
                        checked += 1;
                        None
                    }
                    ("unchanged", _) => Some(false),
                    // Not in the desired state at this check, and not put there.
                    ("failed" | "interrupted", _) => {
                        checked += 1;
                        None
                    }
                    _ => None,
                },
            };
            if let Some(d) = drifted_now {
                checked += 1;
                if !d {
                    in_sync += 1;
                }
            }
            match drifted_now {
                Some(true) if !self.drifted_since.contains_key(id) => {
                    self.drift_events += 1;
                    self.drifted_since.insert(id.to_owned(), t);
                }
                Some(false) => {
                    if let Some(from) = self.drifted_since.remove(id) {
                        self.repairs
                            .push(end.duration_since(from).unwrap_or_default().as_secs_f64());
                    }
                }
                _ => {}
            }
            if o.change.as_deref() == Some("corrective")
                && o.outcome != "failed"
                && let Some(from) = self.drifted_since.remove(id)
            {
                self.repairs
                    .push(end.duration_since(from).unwrap_or_default().as_secs_f64());
            }
            if run.command != "drift" {
                let planned_error = o
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("could not be planned"));
                match o.outcome.as_str() {
                    "created" | "updated" | "replaced" | "deleted" | "refreshed" => {
                        self.changes += 1
                    }
                    // A resource that could not be planned was never attempted.
                    "failed" if planned_error => {}
                    "failed" | "interrupted" => {
                        self.changes += 1;
                        self.failed_changes += 1;
                    }
                    _ => {}
                }
                if matches!(o.outcome.as_str(), "created" | "updated" | "replaced") {
                    self.durations
                        .entry(o.type_name.clone())
                        .or_default()
                        .push(o.duration_ms);
                }
            }
        }
        // The resources found as desired, stored as a count: in sync at this check, and
        // repaired if they were known to be drifted.
        let as_desired = if run.command == "drift" {
            "in_sync"
        } else {
            "unchanged"
        };
        if let Some(s) = run.steady.as_ref().filter(|s| s.outcome == as_desired) {
            checked += s.count;
            in_sync += s.count;
            if !self.drifted_since.is_empty() {
                for id in s.ids.keys() {
                    if let Some(from) = self.drifted_since.remove(id) {
                        self.repairs
                            .push(end.duration_since(from).unwrap_or_default().as_secs_f64());
                    }
                }
            }
        }
        if checked > 0 {
            self.last_check = Some((t, checked, in_sync));
        }
    }

    /// The share of resources in the desired state at the last check.
    pub fn compliance_rate(&self) -> Option<f64> {
        self.last_check.map(|(_, c, s)| s as f64 / c as f64)
    }

    /// The report of what was added, as over `runs` runs in `[since, until]` for
    /// `managed` resources.
    pub fn report(
        self,
        runs: usize,
        managed: usize,
        since: SystemTime,
        until: SystemTime,
    ) -> Report {
        let days = until
            .duration_since(since)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            / 86_400.0;
        let repairs = &self.repairs;
        Report {
            since: humantime::format_rfc3339_seconds(since).to_string(),
            until: humantime::format_rfc3339_seconds(until).to_string(),
            runs,
            compliance_rate: self.compliance_rate(),
            checked_at: self
                .last_check
                .map(|(t, _, _)| humantime::format_rfc3339_seconds(t).to_string()),
            drift_events: self.drift_events,
            drift_frequency: if managed == 0 || days <= 0.0 {
                0.0
            } else {
                self.drift_events as f64 / managed as f64 / days
            },
            mttr_seconds: (!repairs.is_empty())
                .then(|| repairs.iter().sum::<f64>() / repairs.len() as f64),
            repairs: repairs.len(),
            change_failure_rate: (self.changes > 0)
                .then(|| self.failed_changes as f64 / self.changes as f64),
            changes: self.changes,
            failed_changes: self.failed_changes,
            provisioning_ms: self
                .durations
                .into_iter()
                .map(|(k, v)| (k, median(v)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ResourceOutcome;
    use serde_json::json;

    fn at(minutes: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + minutes * 60)
    }

    fn run(command: &str, minute: u64, outcomes: &[(&str, &str, Option<&str>, f64)]) -> RunRecord {
        RunRecord {
            command: command.into(),
            rollback_of: None,
            manifest_path: "/m".into(),
            manifest_sha256: String::new(),
            manifest_snapshot: json!({}),
            snapshot_sha256: None,
            steady: None,
            git: None,
            user: "u".into(),
            host: "h".into(),
            started_at: humantime::format_rfc3339_seconds(at(minute)).to_string(),
            finished_at: humantime::format_rfc3339_seconds(at(minute)).to_string(),
            succeeded: true,
            policy: Vec::new(),
            artifact: None,
            resources: outcomes
                .iter()
                .map(|(id, outcome, change, ms)| ResourceOutcome {
                    id: (*id).into(),
                    type_name: if id.starts_with('d') {
                        "file.directory"
                    } else {
                        "file.file"
                    }
                    .into(),
                    outcome: (*outcome).into(),
                    changed_fields: vec![],
                    error: None,
                    duration_ms: *ms,
                    change: change.map(str::to_owned),
                    attempts: None,
                    retried: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn metrics_follow_their_definitions() {
        let history = vec![
            // t0: create two files and a directory; one file fails.
            run(
                "apply",
                0,
                &[
                    ("a", "created", Some("intentional"), 2.0),
                    ("b", "failed", None, 1.0),
                    ("d", "created", Some("intentional"), 5.0),
                ],
            ),
            // t10: b created now.
            run(
                "apply",
                10,
                &[
                    ("a", "unchanged", None, 0.0),
                    ("b", "created", Some("intentional"), 4.0),
                    ("d", "unchanged", None, 0.0),
                ],
            ),
            // t20: a drift check finds a drifted.
            run(
                "drift",
                20,
                &[
                    ("a", "drifted", None, 0.1),
                    ("b", "in_sync", None, 0.1),
                    ("d", "in_sync", None, 0.1),
                ],
            ),
            // t50: apply corrects a (30 minutes after detection).
            run(
                "apply",
                50,
                &[
                    ("a", "updated", Some("corrective"), 3.0),
                    ("b", "unchanged", None, 0.0),
                    ("d", "unchanged", None, 0.0),
                ],
            ),
            // t60: b was changed by hand and corrected by the apply directly (repair 0).
            run(
                "apply",
                60,
                &[
                    ("a", "unchanged", None, 0.0),
                    ("b", "updated", Some("corrective"), 6.0),
                    ("d", "unchanged", None, 0.0),
                ],
            ),
            // t70: a drift check: d is gone, the rest in sync.
            run(
                "drift",
                70,
                &[
                    ("a", "in_sync", None, 0.1),
                    ("b", "in_sync", None, 0.1),
                    ("d", "missing", None, 0.1),
                ],
            ),
        ];
        let r = compute(&history, 3, at(0), at(24 * 60));
        // As stored (the steady resources counted, not listed), the same figures.
        let stored: Vec<RunRecord> = history
            .iter()
            .map(|r| crate::state::compact::compact(r).0)
            .collect();
        assert!(
            stored.iter().filter(|r| r.steady.is_some()).count() == 5,
            "compacted"
        );
        assert_eq!(compute(&stored, 3, at(0), at(24 * 60)), r);
        assert_eq!(r.runs, 6);
        assert_eq!(r.compliance_rate, Some(2.0 / 3.0));
        assert_eq!(r.drift_events, 3, "a at t20, b at t60, d at t70");
        assert!(
            (r.drift_frequency - 1.0).abs() < 1e-9,
            "3 events / 3 resources / 1 day"
        );
        assert_eq!(r.repairs, 2);
        assert_eq!(r.mttr_seconds, Some(15.0 * 60.0), "(30 min + 0) / 2");
        assert_eq!((r.changes, r.failed_changes), (6, 1));
        assert_eq!(r.change_failure_rate, Some(1.0 / 6.0));
        assert_eq!(r.provisioning_ms["file.file"], 3.5, "median of 2, 4, 3, 6");
        assert_eq!(r.provisioning_ms["file.directory"], 5.0);

        // A resource fixed by hand after a drift check is found unchanged by the next
        // apply: repaired then, stored as a count or not.
        let fixed = vec![
            run(
                "drift",
                0,
                &[("a", "drifted", None, 0.1), ("b", "in_sync", None, 0.1)],
            ),
            run(
                "apply",
                5,
                &[("a", "unchanged", None, 0.0), ("b", "unchanged", None, 0.0)],
            ),
        ];
        let stored: Vec<RunRecord> = fixed
            .iter()
            .map(|r| crate::state::compact::compact(r).0)
            .collect();
        for h in [&fixed, &stored] {
            let r = compute(h, 2, at(0), at(60));
            assert_eq!((r.drift_events, r.repairs), (1, 1));
            assert_eq!(r.mttr_seconds, Some(300.0));
            assert_eq!(r.compliance_rate, Some(1.0));
        }

        // A window that starts after everything sees nothing.
        let empty = compute(&history, 3, at(100), at(200));
        assert_eq!(
            (empty.runs, empty.compliance_rate, empty.mttr_seconds),
            (0, None, None)
        );
    }
}
