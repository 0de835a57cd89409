//! Staged roll-outs (`tenet rollout start|status|resume`): a new desired-state artifact
//! reaches a channel wave by wave, each wave gated on the fleet's reports, and the
//! channel goes back to the previous artifact on its own when a wave fails.
//!
//! **How a wave reaches its nodes.** Nodes keep following one channel tag. During a
//! roll-out the controller points that tag at a small *selector* artifact (config
//! [`SELECTOR_MEDIA_TYPE`]) naming the previous and the new artifact and a bound on
//! node positions: a node whose [`position`] (the first 8 bytes of the sha256 of its
//! name, the same on the node and in the controller) is below the bound applies the new
//! artifact, every other node the previous one. Each wave moves the tag to a selector
//! with a higher bound; the last wave moves it to the new artifact itself; a rollback
//! moves it to the previous artifact itself. Both artifacts a selector names are signed
//! desired-state artifacts that nodes verify as always: a selector can choose only
//! between artifacts a trusted key signed (a registry that can move tags could do as
//! much anyway).
//!
//! **Which nodes are in a wave.** The controller orders the active nodes by position
//! and puts the first `ceil(share × nodes)` (at least one) in the waves up to that one:
//! exact counts, the same nodes however often it is asked, and a wave of 1% of five
//! nodes is one node, not none.
//!
//! **The gate.** A wave's node has *reported* when its last run applied the new
//! artifact and finished after the wave started; it *failed* when that run failed or
//! was denied by policy. The wave halts — and the channel is rolled back — when failed
//! / reported exceeds `max_failure_rate` (strictly); it passes when reported / members
//! reaches `min_reported` without that. A wave that does not pass within
//! `step_timeout` pauses the roll-out (resume it, or start another).
//!
//! **One controller at a time, resumable.** Every decision is in PostgreSQL (`rollouts`,
//! `rollout_events`); the controller holds a session advisory lock while it works, so a
//! second one is refused and a killed one's lock goes with its connection; `tenet
//! rollout resume ID` continues from the recorded wave.

use super::db::{FleetDb, FleetError};
use crate::distribution::oci::{self, OciRef};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// The selector's config media type.
pub const SELECTOR_MEDIA_TYPE: &str = "application/vnd.tenet.rollout.selector.v1+json";
/// The OCI empty descriptor's media type (a selector has no content of its own).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// A node's place in every roll-out: deterministic, uniform, the same everywhere.
pub fn position(node: &str) -> u64 {
    let d = crate::digest::sha256_hex(format!("tenet-rollout:{node}").as_bytes());
    u64::from_str_radix(&d[..16], 16).unwrap_or(u64::MAX)
}

/// What a selector says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub format_version: u32,
    pub rollout: i64,
    /// The artifact nodes below `below` apply.
    pub next: String,
    /// The artifact every other node applies.
    pub previous: String,
    /// Nodes whose position is below this apply `next`.
    pub below: u64,
}

impl Selector {
    /// The artifact digest `node` applies.
    pub fn choose(&self, node: &str) -> &str {
        if position(node) < self.below {
            &self.next
        } else {
            &self.previous
        }
    }
}

/// Waves as shares of the fleet, each larger than the last, the last 100%.
pub fn parse_waves(text: &str) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let share = parse_percent(part.trim())?;
        if share <= 0.0 || out.last().is_some_and(|l| share <= *l) {
            return Err(format!(
                "`{text}`: waves are increasing shares of the fleet above 0 (e.g. 1%,10%,50%,100%)"
            ));
        }
        out.push(share);
    }
    if out.last() != Some(&1.0) {
        return Err(format!("`{text}`: the last wave must be 100%"));
    }
    Ok(out)
}

/// `2%` or `0.02` as a share in [0, 1].
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let v = match text.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a percentage (e.g. 2%)"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("`{text}` is not between 0% and 100%"));
    }
    Ok(v)
}

/// The bound that puts the first `ceil(share × n)` (at least one) of `positions`
/// (sorted) below it; `u64::MAX` when that is all of them.
pub fn bound(positions: &[u64], share: f64) -> u64 {
    let n = positions.len();
    let k = ((share * n as f64).ceil() as usize).clamp(1, n.max(1));
    if k >= n { u64::MAX } else { positions[k] }
}

/// How a wave stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gate {
    pub members: usize,
    pub reported: usize,
    pub failed: usize,
}

/// What the gate decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    Pass,
    Halt(String),
}

impl Gate {
    pub fn verdict(&self, max_failure_rate: f64, min_reported: f64) -> Verdict {
        if self.reported > 0 {
            let rate = self.failed as f64 / self.reported as f64;
            if rate > max_failure_rate {
                return Verdict::Halt(format!(
                    "{} of {} reporting nodes failed ({:.1}% > {:.1}%)",
                    self.failed,
                    self.reported,
                    rate * 100.0,
                    max_failure_rate * 100.0
                ));
            }
        }
        if self.members == 0 || self.reported as f64 / self.members as f64 >= min_reported - 1e-9 {
            return Verdict::Pass;
        }
        Verdict::Wait
    }
}

/// A roll-out's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The channel tag nodes follow (`oci://host/repo:stable`).
    pub channel: String,
    /// The new artifact's digest.
    pub next: String,
    /// The artifact the channel named before (what a rollback restores).
    pub previous: String,
    pub waves: Vec<f64>,
    pub max_failure_rate: f64,
    pub min_reported: f64,
    pub step_timeout_secs: u64,
}

/// A roll-out as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub id: i64,
    pub plan: Plan,
    /// running, succeeded, rolled_back, paused.
    pub state: String,
    /// The wave in progress (0-based).
    pub step: i32,
    pub reason: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    /// When the wave in progress started (Unix seconds).
    pub step_started_epoch: f64,
    pub events: Vec<RolloutEvent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutEvent {
    pub at: String,
    pub step: i32,
    pub event: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Oci(#[from] crate::distribution::oci::OciError),
    #[error("{0}")]
    Refused(String),
}

/// How a controller run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    RolledBack(String),
    Paused(String),
}

/// The controller: drives roll-out `id` to its end (or a pause), wave by wave.
pub struct Controller<'a> {
    pub db: &'a FleetDb,
    pub registry: oci::Options,
    /// How often the gate is evaluated.
    pub poll: Duration,
    /// Told of each decision (the CLI prints them).
    pub say: &'a (dyn Fn(&str) + Sync),
}

impl Controller<'_> {
    /// Run roll-out `id` from its recorded wave, holding the controller lock.
    pub async fn drive(&self, id: i64) -> Result<Ended, RolloutError> {
        let _lock = self.db.controller_lock().await?.ok_or_else(|| {
            RolloutError::Refused(
                "another roll-out controller is running against this fleet database (one at a time)"
                    .into(),
            )
        })?;
        let r = self.db.rollout(id).await?;
        if r.state != "running" && r.state != "paused" {
            return Err(RolloutError::Refused(format!(
                "roll-out {id} is {}: nothing to resume",
                r.state
            )));
        }
        if r.state == "paused" {
            self.db
                .rollout_update(id, "running", r.step, None, true)
                .await?;
        }
        let plan = r.plan.clone();
        let channel = OciRef::parse(&plan.channel)?;
        let mut step = r.step;
        // A resumed wave keeps its start (reports since then count).
        let mut fresh = r.events.iter().all(|e| e.step != step || e.event != "wave");
        while (step as usize) < plan.waves.len() {
            let share = plan.waves[step as usize];
            let positions = self.db.positions().await?;
            let below = bound(&positions, share);
            let last = step as usize + 1 == plan.waves.len();
            if fresh {
                let target = if last {
                    channel.at_digest(&plan.next)
                } else {
                    let sel = Selector {
                        format_version: 1,
                        rollout: id,
                        next: plan.next.clone(),
                        previous: plan.previous.clone(),
                        below,
                    };
                    let digest = push_selector(&channel, &sel, &self.registry).await?;
                    channel.at_digest(&digest)
                };
                oci::tag(&target, &channel, &self.registry).await?;
                self.db
                    .rollout_update(id, "running", step, None, true)
                    .await?;
                self.db
                    .rollout_event(
                        id,
                        step,
                        "wave",
                        serde_json::json!({"share": share, "below": below.to_string(), "channel_now": target.text}),
                    )
                    .await?;
                (self.say)(&format!(
                    "wave {} of {} ({:.0}% of the fleet): {} now selects {}",
                    step + 1,
                    plan.waves.len(),
                    share * 100.0,
                    plan.channel,
                    if last {
                        "the new artifact for every node"
                    } else {
                        "the new artifact for the wave"
                    }
                ));
            }
            fresh = true;
            let started = self.db.rollout(id).await?.step_started_epoch;
            let deadline = tokio::time::Instant::now()
                + Duration::from_secs(plan.step_timeout_secs)
                    .saturating_sub(Duration::from_secs((now_epoch() - started).max(0.0) as u64));
            loop {
                let gate = self.db.gate(&plan.next, below, started).await?;
                match gate.verdict(plan.max_failure_rate, plan.min_reported) {
                    Verdict::Pass => {
                        self.db
                            .rollout_event(id, step, "passed", serde_json::json!(gate))
                            .await?;
                        (self.say)(&format!(
                            "wave {} passed: {} of {} nodes reported, {} failed",
                            step + 1,
                            gate.reported,
                            gate.members,
                            gate.failed
                        ));
                        break;
                    }
                    Verdict::Halt(why) => {
                        let back = channel.at_digest(&plan.previous);
                        oci::tag(&back, &channel, &self.registry).await?;
                        let reason = format!("wave {} halted: {why}; rolled back", step + 1);
                        self.db
                            .rollout_event(
                                id,
                                step,
                                "rolled_back",
                                serde_json::json!({"gate": gate, "reason": why}),
                            )
                            .await?;
                        self.db
                            .rollout_update(id, "rolled_back", step, Some(&reason), false)
                            .await?;
                        (self.say)(&format!(
                            "{reason}: {} names {} again",
                            plan.channel, plan.previous
                        ));
                        return Ok(Ended::RolledBack(reason));
                    }
                    Verdict::Wait => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    let reason = format!(
                        "wave {}: {} of {} nodes reported within {} (need {:.0}%)",
                        step + 1,
                        gate.reported,
                        gate.members,
                        humantime::format_duration(Duration::from_secs(plan.step_timeout_secs)),
                        plan.min_reported * 100.0
                    );
                    self.db
                        .rollout_event(id, step, "paused", serde_json::json!(gate))
                        .await?;
                    self.db
                        .rollout_update(id, "paused", step, Some(&reason), false)
                        .await?;
                    (self.say)(&format!("paused: {reason}"));
                    return Ok(Ended::Paused(reason));
                }
                tokio::time::sleep(self.poll).await;
            }
            step += 1;
            if (step as usize) < plan.waves.len() {
                self.db
                    .rollout_update(id, "running", step, None, false)
                    .await?;
            }
        }
        self.db
            .rollout_update(id, "succeeded", step - 1, None, false)
            .await?;
        self.db
            .rollout_event(id, step - 1, "succeeded", serde_json::json!({}))
            .await?;
        (self.say)(&format!(
            "roll-out {id} succeeded: {} names {}",
            plan.channel, plan.next
        ));
        Ok(Ended::Succeeded)
    }
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Push a selector to the channel's repository (untagged); its digest.
async fn push_selector(
    channel: &OciRef,
    sel: &Selector,
    options: &oci::Options,
) -> Result<String, RolloutError> {
    let config = serde_json::to_vec(sel).map_err(|e| RolloutError::Refused(e.to_string()))?;
    let digest = format!("sha256:{}", crate::digest::sha256_hex(&config));
    // Pushed by a tag of its own (registries want one), then referred to by digest.
    let tag = channel.with_tag(&format!("rollout-{}-{}", sel.rollout, &digest[7..19]));
    Ok(oci::push_artifact(
        &tag,
        oci::Blob {
            data: config,
            media_type: SELECTOR_MEDIA_TYPE,
            title: None,
        },
        vec![oci::Blob {
            data: b"{}".to_vec(),
            media_type: EMPTY_MEDIA_TYPE,
            title: None,
        }],
        Default::default(),
        options,
    )
    .await?)
}

/// The controller's lock: a session advisory lock on a connection of its own, released
/// when dropped (the connection closes) or when the process dies.
pub struct ControllerLock {
    _client: Client,
}

/// Roll-outs as the fleet database keeps them (`rollouts`, `rollout_events`).
impl FleetDb {
    /// Take the roll-out controller lock, or `None` when another controller holds it.
    pub async fn controller_lock(&self) -> Result<Option<ControllerLock>, FleetError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| self.pg(e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[
                    &crate::state::postgres::LOCK_NAMESPACE,
                    &crate::state::postgres::lock_key(&self.schema, "rollout-controller"),
                ],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let got: bool = row.get(0);
        Ok(got.then_some(ControllerLock { _client: client }))
    }

    /// The roll-out positions of the active nodes, sorted.
    pub async fn positions(&self) -> Result<Vec<u64>, FleetError> {
        let c = self.conn().await?;
        let rows = c
            .query("SELECT name FROM nodes WHERE deactivated_at IS NULL", &[])
            .await
            .map_err(|e| self.pg(e))?;
        let mut out: Vec<u64> = rows.iter().map(|r| position(r.get::<_, &str>(0))).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// How the wave of nodes below `below` stands on artifact `next` since `since`
    /// (Unix seconds): one read of `node_status`.
    pub async fn gate(&self, next: &str, below: u64, since: f64) -> Result<Gate, FleetError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT n.name,
                   coalesce(s.artifact_digest = $1 AND extract(epoch FROM s.finished_at)::float8 >= $2::float8, false),
                   coalesce(s.outcome IN ('failed', 'denied'), false)
                 FROM nodes n LEFT JOIN node_status s USING (node_id)
                 WHERE n.deactivated_at IS NULL",
                &[&next, &since],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let mut g = Gate {
            members: 0,
            reported: 0,
            failed: 0,
        };
        for r in rows {
            if position(r.get::<_, &str>(0)) >= below {
                continue;
            }
            g.members += 1;
            let (reported, failed): (bool, bool) = (r.get(1), r.get(2));
            if reported {
                g.reported += 1;
                g.failed += usize::from(failed);
            }
        }
        Ok(g)
    }

    /// Record a new roll-out; refused while another is running or paused on the channel.
    pub async fn create_rollout(&self, plan: &Plan) -> Result<i64, FleetError> {
        let c = self.conn().await?;
        let json = serde_json::to_string(plan).map_err(|e| self.err(e))?;
        match c
            .query_one(
                "INSERT INTO rollouts (channel, plan, state, step, step_started_at)
                 VALUES ($1, $2::text::jsonb, 'running', 0, now()) RETURNING rollout_id",
                &[&plan.channel, &json],
            )
            .await
        {
            Ok(row) => Ok(row.get(0)),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                let row = c
                    .query_one(
                        "SELECT rollout_id, state FROM rollouts
                         WHERE channel = $1 AND state IN ('running', 'paused')",
                        &[&plan.channel],
                    )
                    .await
                    .map_err(|e| self.pg(e))?;
                let (id, state): (i64, String) = (row.get(0), row.get(1));
                Err(FleetError::Invalid(format!(
                    "roll-out {id} of {} is {state}: resume it (`tenet rollout resume {id}`) or let it end first",
                    plan.channel
                )))
            }
            Err(e) => Err(self.pg(e)),
        }
    }

    /// Set a roll-out's state and wave (`restart`: the wave starts now).
    pub async fn rollout_update(
        &self,
        id: i64,
        state: &str,
        step: i32,
        reason: Option<&str>,
        restart: bool,
    ) -> Result<(), FleetError> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE rollouts SET state = $2, step = $3, reason = $4, updated_at = now(),
               step_started_at = CASE WHEN $5 THEN now() ELSE step_started_at END
             WHERE rollout_id = $1",
            &[&id, &state, &step, &reason, &restart],
        )
        .await
        .map_err(|e| self.pg(e))?;
        Ok(())
    }

    pub async fn rollout_event(
        &self,
        id: i64,
        step: i32,
        event: &str,
        detail: serde_json::Value,
    ) -> Result<(), FleetError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO rollout_events (rollout_id, step, event, detail) VALUES ($1, $2, $3, $4::text::jsonb)",
            &[&id, &step, &event, &detail.to_string()],
        )
        .await
        .map_err(|e| self.pg(e))?;
        Ok(())
    }

    /// A roll-out with its events.
    pub async fn rollout(&self, id: i64) -> Result<Rollout, FleetError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT plan::text, state, step, reason, started_at::text, updated_at::text,
                   extract(epoch FROM step_started_at)::float8
                 FROM rollouts WHERE rollout_id = $1",
                &[&id],
            )
            .await
            .map_err(|e| self.pg(e))?
            .ok_or_else(|| FleetError::Invalid(format!("no roll-out {id}")))?;
        let plan: Plan = serde_json::from_str(row.get::<_, &str>(0))
            .map_err(|e| self.err(format!("roll-out {id}: its plan does not read back: {e}")))?;
        let events = c
            .query(
                "SELECT at::text, step, event, detail::text FROM rollout_events
                 WHERE rollout_id = $1 ORDER BY at",
                &[&id],
            )
            .await
            .map_err(|e| self.pg(e))?
            .into_iter()
            .map(|r| RolloutEvent {
                at: r.get(0),
                step: r.get(1),
                event: r.get(2),
                detail: serde_json::from_str(r.get::<_, &str>(3)).unwrap_or_default(),
            })
            .collect();
        Ok(Rollout {
            id,
            plan,
            state: row.get(1),
            step: row.get(2),
            reason: row.get(3),
            started_at: row.get(4),
            updated_at: row.get(5),
            step_started_epoch: row.get(6),
            events,
        })
    }

    /// The newest roll-outs' ids, newest first.
    pub async fn rollout_ids(&self, limit: i64) -> Result<Vec<i64>, FleetError> {
        let c = self.conn().await?;
        Ok(c.query(
            "SELECT rollout_id FROM rollouts ORDER BY rollout_id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(|e| self.pg(e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_and_shares_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_waves("1%,10%,50%,100%").expect("ok"),
            [0.01, 0.1, 0.5, 1.0]
        );
        assert_eq!(parse_percent("2%").expect("ok"), 0.02);
        for bad in ["10%,5%,100%", "10%,50%", "0%,100%", "abc,100%"] {
            assert!(parse_waves(bad).is_err(), "{bad}");
        }
        assert!(parse_percent("150%").is_err());
    }

    #[test]
    fn waves_take_exact_counts_of_nodes_in_position_order() {
        let mut positions: Vec<u64> = (0..5).map(|i| position(&format!("n{i}"))).collect();
        positions.sort_unstable();
        // 1% of five nodes is one node; 50% is three; 100% is everyone.
        let b = bound(&positions, 0.01);
        assert_eq!(positions.iter().filter(|p| **p < b).count(), 1);
        let b = bound(&positions, 0.5);
        assert_eq!(positions.iter().filter(|p| **p < b).count(), 3);
        assert_eq!(bound(&positions, 1.0), u64::MAX);
        let sel = Selector {
            format_version: 1,
            rollout: 1,
            next: "new".into(),
            previous: "old".into(),
            below: bound(&positions, 0.5),
        };
        let chosen = (0..5)
            .filter(|i| sel.choose(&format!("n{i}")) == "new")
            .count();
        assert_eq!(chosen, 3, "the node and the controller agree");
        // Positions spread: 1,000 names over 10 buckets, none with more than twice its share.
        let mut buckets = [0usize; 10];
        for i in 0..1000 {
            buckets[(position(&format!("node-{i}")) / (u64::MAX / 10 + 1)) as usize] += 1;
        }
        assert!(buckets.iter().all(|b| *b > 50 && *b < 200), "{buckets:?}");
    }

    #[test]
    fn the_gate_halts_strictly_above_the_rate_and_passes_at_the_reported_share() {
        let g = |members, reported, failed| Gate {
            members,
            reported,
            failed,
        };
        assert_eq!(g(10, 5, 0).verdict(0.02, 0.95), Verdict::Wait);
        assert_eq!(g(10, 10, 0).verdict(0.02, 0.95), Verdict::Pass);
        assert!(matches!(g(10, 3, 1).verdict(0.02, 0.95), Verdict::Halt(_)));
        // Exactly at the threshold passes.
        assert_eq!(g(50, 50, 1).verdict(0.02, 0.95), Verdict::Pass);
        assert!(matches!(g(50, 49, 1).verdict(0.02, 0.95), Verdict::Halt(_)));
        assert_eq!(g(20, 19, 0).verdict(0.02, 0.95), Verdict::Pass);
        assert_eq!(g(0, 0, 0).verdict(0.02, 0.95), Verdict::Pass);
    }
}
