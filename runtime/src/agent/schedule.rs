//! When the agent runs without being woken: on wall-clock slots whose phase is fixed by
//! the node's id (`phase = H(node) mod interval`), each shifted by a jitter that is also
//! a function of the node and the slot — Puppet's proposed fix for its start-relative
//! `splay` (a fleet restarted together would otherwise run together), Flux's ±10%. The
//! same node gets the same slots across restarts; a thousand nodes spread over the
//! interval. And how long a failed run waits before the next try: exponential with
//! jitter up to a cap, reset by a success (client-go's rate limiter, without a crate:
//! the schedule must be a pure function to be tested).

use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest jitter, as a share of the interval (beyond it, slots could reorder).
pub const MAX_JITTER: f64 = 0.5;

/// Slots on the wall clock for one node.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval_ms: u64,
    jitter: f64,
    phase_ms: u64,
    node: String,
}

/// A number in [0, 1) from the hash of `parts` (deterministic).
fn unit(parts: &[&[u8]]) -> f64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Schedule {
    /// `jitter` is a share of the interval (0.1: each slot moves by up to ±10%).
    pub fn new(node: &str, interval: Duration, jitter: f64) -> Schedule {
        let interval_ms = (interval.as_millis() as u64).max(1);
        Schedule {
            interval_ms,
            jitter: jitter.clamp(0.0, MAX_JITTER),
            phase_ms: (unit(&[b"phase", node.as_bytes()]) * interval_ms as f64) as u64,
            node: node.to_owned(),
        }
    }

    /// Where in each interval this node's slots fall (before jitter).
    pub fn phase(&self) -> Duration {
        Duration::from_millis(self.phase_ms)
    }

    /// Slot `k` on the wall clock, in ms since the epoch.
    fn slot(&self, k: u64) -> u64 {
        let shift = (unit(&[b"slot", self.node.as_bytes(), &k.to_le_bytes()]) * 2.0 - 1.0)
            * self.jitter
            * self.interval_ms as f64;
        ((k * self.interval_ms + self.phase_ms) as f64 + shift).max(0.0) as u64
    }

    /// The first slot after `now`. A run that overran its slot goes to the next one in
    /// the future: no burst of catch-up runs.
    pub fn next_after(&self, now: SystemTime) -> SystemTime {
        let now_ms = epoch_ms(now);
        let k0 = (now_ms.saturating_sub(self.phase_ms) / self.interval_ms).saturating_sub(1);
        let at = (k0..k0 + 4)
            .map(|k| self.slot(k))
            .find(|&t| t > now_ms)
            .unwrap_or(now_ms + self.interval_ms);
        UNIX_EPOCH + Duration::from_millis(at)
    }
}

/// How long a failing agent waits before it tries again.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A run failed: the delay before the next try, `min(base·2ⁿ, cap)` with its upper
    /// half jittered by `random` (in [0, 1)), so retries of many nodes spread out but
    /// still grow visibly.
    pub fn failed(&mut self, random: f64) -> Duration {
        let n = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let full = self.base.saturating_mul(1u32 << n).min(self.cap);
        full.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
    }

    /// A run succeeded: back to the base delay.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// A random number in [0, 1) (for jitter that should differ between runs and nodes).
pub fn random() -> f64 {
    let v = getrandom::u64().unwrap_or_else(|_| epoch_ms(SystemTime::now()));
    (v >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn the_same_node_gets_the_same_slots_and_they_advance() {
        let a = Schedule::new("web1", Duration::from_secs(1800), 0.1);
        let b = Schedule::new("web1", Duration::from_secs(1800), 0.1);
        let now = at(1_800_000_000_000);
        assert_eq!(a.next_after(now), b.next_after(now), "same id, same slot");
        let mut t = now;
        for _ in 0..50 {
            let next = a.next_after(t);
            assert!(next > t, "the next slot is in the future");
            let gap = next.duration_since(t).expect("later");
            assert!(gap <= Duration::from_secs(1800 * 2), "{gap:?}");
            t = next;
        }
        let other = Schedule::new("web2", Duration::from_secs(1800), 0.1);
        assert_ne!(a.phase(), other.phase(), "another id, another phase");
    }

    #[test]
    fn a_fleet_spreads_over_the_interval() {
        // 1,000 nodes, 10 buckets of the interval: no bucket holds more than twice its
        // share (a stampede would put them all in one).
        let interval = Duration::from_secs(600);
        let mut buckets = [0usize; 10];
        let now = at(1_800_000_000_000);
        for i in 0..1000 {
            let s = Schedule::new(&format!("node-{i}"), interval, 0.1);
            let off = epoch_ms(s.next_after(now)) % 600_000;
            buckets[(off / 60_000) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| b > 50 && b < 200), "{buckets:?}");
    }

    #[test]
    fn slots_stay_within_the_jitter_of_the_phase() {
        let s = Schedule::new("db1", Duration::from_secs(100), 0.1);
        let mut t = at(1_000_000_000);
        for _ in 0..100 {
            t = s.next_after(t);
            let off = (epoch_ms(t) + 100_000 - s.phase_ms) % 100_000;
            assert!(
                !(10_000..=90_000).contains(&off),
                "slot {off} ms off its phase"
            );
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets_on_success() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let delays: Vec<Duration> = (0..8).map(|_| b.failed(0.999_999)).collect();
        let secs: Vec<u64> = delays
            .iter()
            .map(|d| d.as_secs_f64().round() as u64)
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.failures(), 8);
        assert!(
            b.failed(0.0) >= Duration::from_secs(15),
            "jitter keeps half"
        );
        b.succeeded();
        assert_eq!(b.failed(0.999_999).as_secs_f64().round() as u64, 1);
    }
}
