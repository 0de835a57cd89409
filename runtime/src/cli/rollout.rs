//! `tenet rollout start|resume|status`: staged roll-outs of a desired-state artifact to
//! a channel, gated on the fleet's reports (see [`crate::fleet::rollout`]).

use super::args::parse_timeout;
use super::plugin::RegistryArgs;
use crate::distribution::artifact;
use crate::distribution::oci::{self, OciRef};
use crate::fleet::db::FleetDb;
use crate::fleet::rollout::{self, Controller, Ended, Plan};
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Debug, Clone, Args)]
struct Db {
    /// The fleet database: postgres://user@host/db?schema=NAME.
    #[arg(long, value_name = "URL", env = "TENET_FLEET_DB")]
    db: String,
}

#[derive(Debug, Clone, Args)]
struct Drive {
    /// How often a wave's gate is evaluated.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    poll: Duration,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Roll ARTIFACT (oci://host/repo@sha256:…) out to --channel wave by wave; stays
    /// until it succeeds (exit 0), is rolled back (exit 3) or pauses (exit 1).
    Start {
        artifact: String,
        /// The channel tag nodes follow: oci://host/repo:stable (same repository).
        #[arg(long, value_name = "REFERENCE")]
        channel: String,
        /// Shares of the fleet, increasing, the last 100%.
        #[arg(long, default_value = "1%,10%,50%,100%")]
        waves: String,
        /// A wave halts (and the channel is rolled back) when more of its reporting
        /// nodes failed than this.
        #[arg(long, value_name = "PERCENT", default_value = "2%")]
        max_failure_rate: String,
        /// A wave passes when this share of its nodes reported on the new artifact.
        #[arg(long, value_name = "PERCENT", default_value = "95%")]
        min_reported: String,
        /// A wave not passed by then pauses the roll-out.
        #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_timeout)]
        step_timeout: Duration,
        /// Refuse an artifact these keys did not sign (nodes would refuse it).
        #[arg(long = "trust", value_name = "KEY.pub")]
        trust: Vec<PathBuf>,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        drive: Drive,
    },
    /// Continue a roll-out from its recorded wave (after the controller stopped).
    Resume {
        id: i64,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        drive: Drive,
    },
    /// A roll-out's waves and decisions (default: the newest few).
    Status {
        id: Option<i64>,
        #[command(flatten)]
        db: Db,
        #[arg(long)]
        json: bool,
    },
}

pub async fn execute(args: RolloutArgs) -> anyhow::Result<u8> {
    match args.command {
        RolloutCommand::Start {
            artifact,
            channel,
            waves,
            max_failure_rate,
            min_reported,
            step_timeout,
            trust,
            db,
            drive,
        } => {
            let waves = rollout::parse_waves(&waves).map_err(anyhow::Error::msg)?;
            let max_failure_rate =
                rollout::parse_percent(&max_failure_rate).map_err(anyhow::Error::msg)?;
            let min_reported = rollout::parse_percent(&min_reported).map_err(anyhow::Error::msg)?;
            let target = OciRef::parse(&artifact)?;
            let Some(next) = target.digest().map(str::to_owned) else {
                anyhow::bail!("{artifact}: name the artifact by digest (oci://…@sha256:…)");
            };
            let ch = OciRef::parse(&channel)?;
            if ch.digest().is_some() || ch.at_digest(&next).text != target.text {
                anyhow::bail!(
                    "--channel {channel}: a tag of the artifact's own repository (oci://…/repo:stable)"
                );
            }
            let options = drive.registry.options();
            // What nodes would refuse is not rolled out.
            let fetched = artifact::pull(&target, &options).await?;
            if !trust.is_empty() {
                let keys = crate::distribution::bundle::keys_from_files(&trust)?;
                fetched.verify(&keys)?;
            }
            let previous = previous_of(&ch, &options).await?;
            if previous == next {
                anyhow::bail!("{channel} already names {next}");
            }
            let fleet = FleetDb::open(&db.db, 30).await?;
            let plan = Plan {
                channel: channel.clone(),
                next,
                previous,
                waves,
                max_failure_rate,
                min_reported,
                step_timeout_secs: step_timeout.as_secs().max(1),
            };
            let id = fleet.create_rollout(&plan).await?;
            fleet
                .rollout_event(id, 0, "started", serde_json::to_value(&plan)?)
                .await?;
            println!(
                "roll-out {id}: {} → {} on {channel}",
                plan.previous, plan.next
            );
            drive_it(&fleet, id, &drive).await
        }
        RolloutCommand::Resume { id, db, drive } => {
            let fleet = FleetDb::open(&db.db, 30).await?;
            println!("roll-out {id}: resuming");
            drive_it(&fleet, id, &drive).await
        }
        RolloutCommand::Status { id, db, json } => {
            let fleet = FleetDb::open(&db.db, 30).await?;
            let ids = match id {
                Some(id) => vec![id],
                None => fleet.rollout_ids(5).await?,
            };
            let mut all = Vec::new();
            for id in ids {
                all.push(fleet.rollout(id).await?);
            }
            let mut out = String::new();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
            } else if all.is_empty() {
                writeln!(out, "No roll-outs.")?;
            }
            for r in all.iter().filter(|_| !json) {
                writeln!(
                    out,
                    "roll-out {}: {} — wave {} of {} ({}), started {}{}",
                    r.id,
                    r.state,
                    r.step + 1,
                    r.plan.waves.len(),
                    r.plan
                        .waves
                        .iter()
                        .map(|w| format!("{:.0}%", w * 100.0))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.started_at,
                    r.reason
                        .as_deref()
                        .map(|x| format!("\n  {x}"))
                        .unwrap_or_default()
                )?;
                writeln!(
                    out,
                    "  {}: {} → {}",
                    r.plan.channel, r.plan.previous, r.plan.next
                )?;
                for e in &r.events {
                    writeln!(
                        out,
                        "  {} wave {} {} {}",
                        e.at,
                        e.step + 1,
                        e.event,
                        e.detail
                    )?;
                }
            }
            print!("{out}");
            Ok(0)
        }
    }
}

/// What the channel names now (through a leftover selector: its previous artifact).
async fn previous_of(ch: &OciRef, options: &oci::Options) -> anyhow::Result<String> {
    let digest = oci::resolve(ch, options).await.map_err(|e| {
        anyhow::anyhow!("{e} (a roll-out starts from an artifact the channel already names)")
    })?;
    let (_, config) = oci::config_if(
        &ch.at_digest(&digest),
        rollout::SELECTOR_MEDIA_TYPE,
        options,
    )
    .await?;
    Ok(match config {
        Some(bytes) => serde_json::from_slice::<rollout::Selector>(&bytes)?.previous,
        None => digest,
    })
}

async fn drive_it(fleet: &FleetDb, id: i64, drive: &Drive) -> anyhow::Result<u8> {
    let say = |s: &str| println!("{s}");
    let controller = Controller {
        db: fleet,
        registry: drive.registry.options(),
        poll: drive.poll,
        say: &say,
    };
    Ok(match controller.drive(id).await? {
        Ended::Succeeded => 0,
        Ended::RolledBack(_) => super::EXIT_DENIED,
        Ended::Paused(_) => super::EXIT_ERROR,
    })
}
