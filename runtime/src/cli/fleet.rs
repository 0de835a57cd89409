//! `tenet fleet serve|enroll|deactivate|maintain|status|nodes|drift|failures|runs`: the
//! fleet database (see [`crate::fleet`]). `serve` is the ingest endpoint agents report
//! to; the queries read indexed tables only (`node_status` for status questions, a
//! time-bounded range of the partitioned tables for history ones).

use super::args::parse_timeout;
use crate::fleet::db::{FleetDb, NodeFilter};
use crate::fleet::serve::{self, Counters};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
}

/// The fleet database.
#[derive(Debug, Clone, Args)]
struct Db {
    /// postgres://user@host/db?schema=NAME (default schema `tenet_fleet`).
    #[arg(long, value_name = "URL", env = "TENET_FLEET_DB")]
    db: String,
    /// Reports of runs older than this many days are not kept (whole days are dropped).
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    keep_days: u32,
}

impl Db {
    async fn open(&self) -> anyhow::Result<FleetDb> {
        Ok(FleetDb::open(&self.db, self.keep_days).await?)
    }
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Serve the ingest endpoint agents report to (`tenet agent --report URL`).
    Serve {
        #[command(flatten)]
        db: Db,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Allow a non-loopback address (plain HTTP: tokens travel in clear unless a
        /// TLS proxy is in front).
        #[arg(long)]
        insecure_listen: bool,
    },
    /// Enrol a node (or give it a new token): prints the token it reports with, once.
    Enroll {
        name: String,
        #[command(flatten)]
        db: Db,
        /// A label (repeatable): --label env=prod.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        token_file: Option<std::path::PathBuf>,
    },
    /// Deactivate a node: its token stops working, it leaves the figures.
    Deactivate {
        name: String,
        #[command(flatten)]
        db: Db,
    },
    /// Create the coming days' partitions and drop the days past --keep-days.
    Maintain {
        #[command(flatten)]
        db: Db,
    },
    /// Compliance across the fleet, nodes by last outcome and artifact, nodes not
    /// reporting. Exit 2 when a node is drifted, failed or denied.
    Status {
        #[command(flatten)]
        db: Db,
        /// A node whose last report is older is "not reporting".
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_timeout)]
        stale: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Nodes and their last run.
    Nodes {
        #[command(flatten)]
        db: Db,
        /// Only nodes whose last run ended so (converged, changed, drifted, failed, denied).
        #[arg(long)]
        outcome: Option<String>,
        /// Only nodes whose last run applied this artifact digest.
        #[arg(long, value_name = "DIGEST")]
        artifact: Option<String>,
        /// Only nodes not reporting within --stale.
        #[arg(long)]
        not_reporting: bool,
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_timeout)]
        stale: Duration,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// The resources that drifted on the most nodes.
    Drift {
        #[command(flatten)]
        db: Db,
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_timeout)]
        since: Duration,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Failed runs, newest first.
    Failures {
        #[command(flatten)]
        db: Db,
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_timeout)]
        since: Duration,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// A simulated fleet in this process (a benchmark: bench/fleet.sh): agents enrolled
    /// and reporting through the real ingest service, optionally a seeded history and a
    /// roll-out; prints latencies, throughput, sizes and query times.
    Simulate {
        #[command(flatten)]
        db: Db,
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
        interval: Duration,
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
        duration: Duration,
        /// Resources per node.
        #[arg(long, default_value_t = 50)]
        resources: u32,
        #[arg(long, value_name = "PERCENT", default_value = "5%")]
        drift_rate: String,
        #[arg(long, value_name = "PERCENT", default_value = "1%")]
        fail_rate: String,
        /// Runs generated in the history first (spread over 30 days).
        #[arg(long, default_value_t = 0)]
        seed_runs: u64,
        /// Roll this artifact (oci://…@sha256:…) out to --channel during the run.
        #[arg(long, value_name = "REFERENCE", requires = "channel")]
        rollout: Option<String>,
        #[arg(long, value_name = "REFERENCE")]
        channel: Option<String>,
        #[arg(long, default_value = "1%,10%,50%,100%")]
        waves: String,
        #[arg(long)]
        json: bool,
    },
    /// One node's runs, newest first.
    Runs {
        node: String,
        #[command(flatten)]
        db: Db,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

pub async fn execute(args: FleetArgs) -> anyhow::Result<u8> {
    let mut out = String::new();
    let code = match args.command {
        FleetCommand::Serve {
            db,
            listen,
            insecure_listen,
        } => {
            if !is_loopback(&listen) && !insecure_listen {
                anyhow::bail!(
                    "{listen} is not a loopback address: node tokens would travel in plain HTTP; put a TLS proxy in front and pass --insecure-listen"
                );
            }
            let fleet = Arc::new(db.open().await?);
            fleet.maintain().await?;
            let counters = Arc::new(Counters::default());
            let bound = serve::serve(listen, fleet.clone(), counters).await?;
            eprintln!(
                "tenet fleet serve: serving http://{bound}/v1/reports (schema {})",
                fleet.schema
            );
            let maintainer = fleet.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match maintainer.maintain().await {
                        Ok(dropped) if !dropped.is_empty() => {
                            tracing::info!(?dropped, "old partitions dropped")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("fleet maintenance: {e}"),
                    }
                }
            });
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            0
        }
        FleetCommand::Enroll {
            name,
            db,
            labels,
            token_file,
        } => {
            let labels: BTreeMap<String, String> = labels
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| anyhow::anyhow!("--label `{kv}` is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?;
            let token = db.open().await?.enroll(&name, &labels).await?;
            match token_file {
                Some(f) => {
                    crate::atomic::write(&f, format!("{token}\n").as_bytes())
                        .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                    writeln!(out, "Enrolled `{name}`: its token is in {}.", f.display())?;
                }
                None => writeln!(out, "{token}")?,
            }
            0
        }
        FleetCommand::Deactivate { name, db } => {
            if !db.open().await?.deactivate(&name).await? {
                anyhow::bail!("no node `{name}`");
            }
            writeln!(out, "Deactivated `{name}`.")?;
            0
        }
        FleetCommand::Maintain { db } => {
            let dropped = db.open().await?.maintain().await?;
            writeln!(
                out,
                "Partitions ready; {} dropped (older than {} days){}",
                dropped.len(),
                db.keep_days,
                if dropped.is_empty() {
                    String::new()
                } else {
                    format!(": {}", dropped.join(", "))
                }
            )?;
            0
        }
        FleetCommand::Status { db, stale, json } => {
            let st = db.open().await?.status(stale).await?;
            let bad: i64 = ["drifted", "failed", "denied"]
                .iter()
                .filter_map(|o| st.by_outcome.get(*o))
                .sum();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&st)?)?;
            } else {
                writeln!(
                    out,
                    "{} nodes; compliance {:.1}% ({} of {} resources in the desired state at their last run)",
                    st.nodes,
                    st.compliance * 100.0,
                    st.in_sync,
                    st.resources
                )?;
                for o in [
                    "converged",
                    "changed",
                    "drifted",
                    "failed",
                    "denied",
                    "never",
                ] {
                    if let Some(n) = st.by_outcome.get(o) {
                        writeln!(out, "  {o:<10} {n}")?;
                    }
                }
                writeln!(
                    out,
                    "  not reporting within {}: {}",
                    humantime::format_duration(stale),
                    st.not_reporting
                )?;
                if !st.by_artifact.is_empty() {
                    writeln!(out, "Artifacts applied:")?;
                    for (d, n) in &st.by_artifact {
                        writeln!(out, "  {d} {n}")?;
                    }
                }
            }
            if bad > 0 { super::EXIT_CHANGES } else { 0 }
        }
        FleetCommand::Nodes {
            db,
            outcome,
            artifact,
            not_reporting,
            stale,
            limit,
            json,
        } => {
            let f = NodeFilter {
                outcome,
                artifact,
                stale_only: not_reporting,
                limit,
            };
            let rows = db.open().await?.nodes(&f, stale).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                for r in &rows {
                    writeln!(
                        out,
                        "{:<24} {:<10} run {:<6} {}/{} in sync  {}  {}{}",
                        r.name,
                        r.outcome.as_deref().unwrap_or("never"),
                        r.run_seq.map(|s| s.to_string()).unwrap_or_default(),
                        r.in_sync.unwrap_or(0),
                        r.resources.unwrap_or(0),
                        r.artifact_digest.as_deref().unwrap_or("-"),
                        r.received_at.as_deref().unwrap_or("-"),
                        if r.stale { "  NOT REPORTING" } else { "" }
                    )?;
                }
            }
            0
        }
        FleetCommand::Drift {
            db,
            since,
            limit,
            json,
        } => {
            let rows = db.open().await?.drift(since, limit).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else if rows.is_empty() {
                writeln!(
                    out,
                    "No drift in the last {}.",
                    humantime::format_duration(since)
                )?;
            } else {
                for r in &rows {
                    writeln!(
                        out,
                        "{:<32} {:<16} on {} node(s), {} time(s), last {}",
                        r.resource, r.type_name, r.nodes, r.events, r.last_at
                    )?;
                }
            }
            0
        }
        FleetCommand::Failures {
            db,
            since,
            limit,
            json,
        } => {
            let rows = db.open().await?.failures(since, limit).await?;
            runs_out(&mut out, &rows, json)?;
            0
        }
        FleetCommand::Simulate {
            db,
            agents,
            interval,
            duration,
            resources,
            drift_rate,
            fail_rate,
            seed_runs,
            rollout,
            channel,
            waves,
            json,
        } => {
            use crate::fleet::rollout::{parse_percent, parse_waves};
            let rollout = match (rollout, channel) {
                (Some(r), Some(c)) => {
                    let r = crate::distribution::oci::OciRef::parse(&r)?;
                    let next = r
                        .digest()
                        .ok_or_else(|| anyhow::anyhow!("--rollout: name the artifact by digest"))?
                        .to_owned();
                    Some((
                        crate::distribution::oci::OciRef::parse(&c)?,
                        next,
                        parse_waves(&waves).map_err(anyhow::Error::msg)?,
                    ))
                }
                _ => None,
            };
            let opts = crate::fleet::simulate::SimOptions {
                agents,
                interval,
                duration,
                resources,
                drift_rate: parse_percent(&drift_rate).map_err(anyhow::Error::msg)?,
                fail_rate: parse_percent(&fail_rate).map_err(anyhow::Error::msg)?,
                seed_runs,
                rollout,
                registry: crate::distribution::oci::Options::default(),
            };
            let fleet = Arc::new(FleetDb::open(&db.db, db.keep_days.max(32)).await?);
            let say = |s: &str| eprintln!("{s}");
            let r = crate::fleet::simulate::simulate(fleet, opts, &say).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
            } else {
                writeln!(
                    out,
                    "{} agents, {} reports in {:.0} s ({:.1}/s), {} errors",
                    r.agents, r.reports, r.live_seconds, r.reports_per_second, r.errors
                )?;
                writeln!(
                    out,
                    "report write through the ingest service (ms): p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
                    r.write_ms[0], r.write_ms[1], r.write_ms[2], r.write_ms[3]
                )?;
                writeln!(
                    out,
                    "runs in the table: {} (seeded {} in {:.1} s); {:.0} bytes per run with indexes = {:.1} KiB per node per day at this interval; schema {:.1} MiB",
                    r.runs_in_table,
                    r.seeded_runs,
                    r.seed_seconds,
                    r.bytes_per_run,
                    r.bytes_per_node_per_day / 1024.0,
                    r.database_bytes as f64 / 1048576.0
                )?;
                for (q, [median, max]) in &r.queries_ms {
                    writeln!(out, "query {q:<16} median {median:.1} ms  max {max:.1} ms")?;
                }
                if let Some(ro) = &r.rollout {
                    writeln!(
                        out,
                        "roll-out: {ro} in {:.0} s",
                        r.rollout_seconds.unwrap_or(0.0)
                    )?;
                }
            }
            0
        }
        FleetCommand::Runs {
            node,
            db,
            limit,
            json,
        } => {
            let rows = db.open().await?.runs(&node, limit).await?;
            runs_out(&mut out, &rows, json)?;
            0
        }
    };
    print!("{out}");
    Ok(code)
}

fn runs_out(out: &mut String, rows: &[crate::fleet::db::RunRow], json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(rows)?)?;
        return Ok(());
    }
    for r in rows {
        writeln!(
            out,
            "{:<24} #{:<6} {:<8} {:<10} {}  {} changed, {} drifted, {} failed{}",
            r.node,
            r.run_seq,
            r.command,
            r.outcome,
            r.started_at,
            r.changed,
            r.drifted,
            r.failed,
            r.artifact_digest
                .as_deref()
                .map(|d| format!("  {d}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}
