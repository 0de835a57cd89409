//! `tenet fleet simulate`: a fleet in one process, to measure the fleet's side — the
//! ingest service, PostgreSQL, the queries and a roll-out — at a size one machine
//! cannot run as real agents. Simulated agents do not run providers (what a run costs is
//! `bench/apply.sh`'s subject); each is enrolled with its own token and, on its own
//! deterministic slot every interval, builds a report shaped like a real agent's
//! (resources, a share drifted and repaired, a share failed) and sends it through the real
//! ingest service over HTTP, as `tenet agent --report` does. With a roll-out, each agent
//! also follows the channel through the registry (a HEAD per slot, the selector read once
//! per digest) and reports the artifact its position selects.
//!
//! Before the live phase, the history can be seeded with generated runs (spread over the
//! last 30 days, in SQL), so the queries are timed over a realistic table.

use super::db::FleetDb;
use super::rollout::{self, Controller, Ended, Plan};
use super::{Counts, Event, PolicySummary, REPORT_VERSION, Report};
use crate::distribution::oci::{self, OciRef};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub agents: usize,
    pub interval: Duration,
    pub duration: Duration,
    pub resources: u32,
    /// Share of runs that find one resource drifted (and repair it).
    pub drift_rate: f64,
    /// Share of runs that fail one resource.
    pub fail_rate: f64,
    /// Runs to generate in the history first (spread over 30 days).
    pub seed_runs: u64,
    /// Roll `next` out to `channel` (which names the previous artifact) during the run.
    pub rollout: Option<(OciRef, String, Vec<f64>)>,
    pub registry: oci::Options,
}

/// What was measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SimReport {
    pub agents: usize,
    pub seeded_runs: u64,
    pub seed_seconds: f64,
    pub reports: usize,
    pub errors: usize,
    pub live_seconds: f64,
    pub reports_per_second: f64,
    /// Report write latency through the ingest service (ms): p50, p95, p99, max.
    pub write_ms: [f64; 4],
    pub runs_in_table: i64,
    /// Bytes of `runs` (with indexes) per run, and per node per day at the interval.
    pub bytes_per_run: f64,
    pub bytes_per_node_per_day: f64,
    pub database_bytes: i64,
    /// Query latencies (ms): median and max of several calls.
    pub queries_ms: BTreeMap<String, [f64; 2]>,
    pub rollout: Option<String>,
    pub rollout_seconds: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A cheap deterministic pseudo-random number in [0, 1) from a seed and a counter.
fn unit(seed: u64, n: u64) -> f64 {
    let mut x = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Run the simulation against `db` (a fresh schema is best); `say` hears progress.
pub async fn simulate(
    db: Arc<FleetDb>,
    opts: SimOptions,
    say: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<SimReport> {
    let mut report = SimReport {
        agents: opts.agents,
        ..SimReport::default()
    };
    // Enrol the agents.
    let mut tokens = Vec::with_capacity(opts.agents);
    for i in 0..opts.agents {
        let name = format!("sim-{i:05}");
        let token = db.enroll(&name, &BTreeMap::new()).await?;
        tokens.push((name, token));
    }
    say(&format!("{} agents enrolled", opts.agents));
    // Seed the history.
    let per_node = opts.seed_runs / opts.agents.max(1) as u64;
    if per_node > 0 {
        let t = Instant::now();
        db.seed(per_node, opts.resources).await?;
        report.seeded_runs = per_node * opts.agents as u64;
        report.seed_seconds = t.elapsed().as_secs_f64();
        say(&format!(
            "{} runs seeded over 30 days in {:.1} s",
            report.seeded_runs, report.seed_seconds
        ));
    }
    // The ingest service, in this process.
    let counters = Arc::new(super::serve::Counters::default());
    let addr = super::serve::serve("127.0.0.1:0".parse()?, db.clone(), counters).await?;
    let url = format!("http://{addr}/v1/reports");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()?;
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // What the channel names, read once per digest for every agent (a selector's choice
    // is per node).
    let selectors: Arc<Mutex<BTreeMap<String, Option<rollout::Selector>>>> = Arc::default();
    let channel = opts.rollout.as_ref().map(|(c, _, _)| c.clone());
    let live = Instant::now();
    let mut tasks = Vec::new();
    for (i, (name, token)) in tokens.into_iter().enumerate() {
        let (client, url, lat, errs, stop) = (
            client.clone(),
            url.clone(),
            latencies.clone(),
            errors.clone(),
            stop.clone(),
        );
        let (channel, selectors, registry) =
            (channel.clone(), selectors.clone(), opts.registry.clone());
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            // The agent's slot within the interval.
            let phase = opts
                .interval
                .mul_f64(rollout::position(&name) as f64 / u64::MAX as f64);
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(opts.interval);
            let mut seq = per_node;
            let mut applied: Option<String> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                seq += 1;
                if let Some(ch) = &channel
                    && let Ok(d) = oci::resolve(ch, &registry).await
                {
                    let known = selectors.lock().ok().and_then(|s| s.get(&d).cloned());
                    let sel = match known {
                        Some(s) => s,
                        None => {
                            let s = match oci::config_if(
                                &ch.at_digest(&d),
                                rollout::SELECTOR_MEDIA_TYPE,
                                &registry,
                            )
                            .await
                            {
                                Ok((_, Some(b))) => serde_json::from_slice(&b).ok(),
                                _ => None,
                            };
                            if let Ok(mut m) = selectors.lock() {
                                m.insert(d.clone(), s.clone());
                            }
                            s
                        }
                    };
                    applied = Some(match sel {
                        Some(s) => s.choose(&name).to_owned(),
                        None => d,
                    });
                }
                let r = simulated_report(
                    &name,
                    seq,
                    i as u64,
                    &opts,
                    applied.as_deref(),
                    channel.as_ref(),
                );
                let t = Instant::now();
                let ok = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&[r])
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if ok {
                    if let Ok(mut l) = lat.lock() {
                        l.push(ms);
                    }
                } else {
                    errs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    say(&format!(
        "live: {} agents reporting every {} through {url}",
        opts.agents,
        humantime::format_duration(opts.interval)
    ));
    // The roll-out, once every agent has reported once.
    if let Some((ch, next, waves)) = &opts.rollout {
        tokio::time::sleep(opts.interval + Duration::from_secs(1)).await;
        let previous = oci::resolve(ch, &opts.registry).await?;
        let plan = Plan {
            channel: ch.text.clone(),
            next: next.clone(),
            previous,
            waves: waves.clone(),
            max_failure_rate: 0.05,
            min_reported: 0.95,
            step_timeout_secs: opts.interval.as_secs().max(1) * 6,
        };
        let id = db.create_rollout(&plan).await?;
        let t = Instant::now();
        let c = Controller {
            db: &db,
            registry: opts.registry.clone(),
            poll: Duration::from_secs(1),
            say,
        };
        let ended = c.drive(id).await?;
        report.rollout_seconds = Some(t.elapsed().as_secs_f64());
        report.rollout = Some(match ended {
            Ended::Succeeded => "succeeded".into(),
            Ended::RolledBack(r) => format!("rolled back: {r}"),
            Ended::Paused(r) => format!("paused: {r}"),
        });
    }
    let left = opts.duration.saturating_sub(live.elapsed());
    tokio::time::sleep(left).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    report.live_seconds = live.elapsed().as_secs_f64();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(f64::total_cmp);
    report.reports = l.len();
    report.errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    report.reports_per_second = l.len() as f64 / report.live_seconds;
    report.write_ms = [
        percentile(&l, 0.5),
        percentile(&l, 0.95),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(0.0),
    ];
    // Size and queries over what is now in the tables.
    let (runs, runs_bytes, total) = db.sizes().await?;
    report.runs_in_table = runs;
    report.database_bytes = total;
    report.bytes_per_run = runs_bytes as f64 / runs.max(1) as f64;
    report.bytes_per_node_per_day =
        report.bytes_per_run * 86_400.0 / opts.interval.as_secs_f64().max(1.0);
    let stale = opts.interval * 3;
    let mut time = async |name: &str, n: usize| -> anyhow::Result<()> {
        let mut v = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            match name {
                "status" => drop(db.status(stale).await?),
                "nodes" => drop(
                    db.nodes(
                        &super::db::NodeFilter {
                            limit: 100_000,
                            ..Default::default()
                        },
                        stale,
                    )
                    .await?,
                ),
                "drift_24h" => drop(db.drift(Duration::from_secs(86_400), 20).await?),
                "failures_24h" => drop(db.failures(Duration::from_secs(86_400), 50).await?),
                "runs_of_a_node" => drop(db.runs("sim-00042", 20).await?),
                _ => {}
            }
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        v.sort_by(f64::total_cmp);
        report.queries_ms.insert(
            name.to_owned(),
            [percentile(&v, 0.5), v.last().copied().unwrap_or(0.0)],
        );
        Ok(())
    };
    for q in [
        "status",
        "nodes",
        "drift_24h",
        "failures_24h",
        "runs_of_a_node",
    ] {
        time(q, 9).await?;
    }
    Ok(report)
}

/// The report agent `name` sends for its run `seq`.
fn simulated_report(
    name: &str,
    seq: u64,
    seed: u64,
    opts: &SimOptions,
    artifact: Option<&str>,
    channel: Option<&OciRef>,
) -> Report {
    let now = SystemTime::now();
    let drifted = unit(seed, seq) < opts.drift_rate;
    let failed = unit(seed ^ 0xfa11, seq) < opts.fail_rate;
    let mut events = Vec::new();
    let mut counts = Counts {
        resources: opts.resources,
        in_sync: opts.resources,
        ..Counts::default()
    };
    if drifted {
        counts.changed = 1;
        counts.corrective = 1;
        events.push(Event {
            id: format!(
                "file-{}",
                (unit(seed, seq + 7) * opts.resources as f64) as u32
            ),
            type_name: "file.file".into(),
            outcome: "updated".into(),
            corrective: true,
            fields: vec!["/content".into()],
            error: None,
        });
    }
    if failed {
        counts.failed = 1;
        counts.in_sync -= 1;
        events.push(Event {
            id: "service-app".into(),
            type_name: "service.service".into(),
            outcome: "failed".into(),
            corrective: false,
            fields: Vec::new(),
            error: Some("simulated failure".into()),
        });
    }
    Report {
        version: REPORT_VERSION,
        node: name.to_owned(),
        seq,
        hash: crate::digest::sha256_hex(format!("{name}:{seq}").as_bytes()),
        command: "apply".into(),
        started_at: rfc3339(now - Duration::from_millis(150)),
        finished_at: rfc3339(now),
        outcome: if failed {
            "failed"
        } else if drifted {
            "changed"
        } else {
            "converged"
        }
        .into(),
        counts,
        artifact: artifact.map(|d| crate::manifest::Artifact {
            reference: channel.map(|c| c.text.clone()).unwrap_or_default(),
            digest: d.to_owned(),
        }),
        facts: serde_json::json!({"os_family": "Debian", "os_name": "Debian", "os_release": "12.11", "hostname": name, "architecture": "x86_64"}),
        events,
        policy: PolicySummary::default(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    }
}
