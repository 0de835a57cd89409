//! What a resource says about *when* and *how often* it runs, beyond its dependencies:
//! `retry:` (transient failures tried again with backoff; also a provider-wide default),
//! `timeout:` (one deadline for all attempts), `on_failure:` (a handler that runs only
//! when a listed resource fails) and `serial:` / `max_failures:` (the instances of a
//! `for_each` or `count` rolled out a batch at a time). Parsed here, carried by the plan,
//! carried out by the engine.

use super::load::{object, type_name};
use super::yaml::Spans;
use crate::diag::Diagnostics;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// Most attempts `retry:` may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// Default wait before the second attempt.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Default growth of the wait per attempt.
pub const DEFAULT_BACKOFF: f64 = 2.0;
/// Largest growth factor accepted.
pub const MAX_BACKOFF: f64 = 10.0;
/// Default longest wait between attempts.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(60);
/// Longest `delay`, `max_delay` or `timeout` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// `retry: {attempts: 5, delay: 1s, backoff: 2, max_delay: 30s}`: a failure the provider
/// marks transient is tried again, up to `attempts` tries in all, waiting `delay`, then
/// `delay × backoff`, … at most `max_delay` between them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    pub attempts: u32,
    pub delay_ms: u64,
    pub backoff: f64,
    pub max_delay_ms: u64,
}

impl Retry {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let ms = (self.delay_ms as f64) * self.backoff.powi(exp);
        let capped = ms.min(self.max_delay_ms as f64).max(0.0);
        Duration::from_millis(capped as u64)
    }
}

/// `serial:` on a resource with `for_each`/`count`: its instances form a rolling group,
/// changed `serial` at a time in instance order; a batch starts only when the previous
/// batch and everything that depends on it alone (its health checks) succeeded. Up to
/// `max_failures` failed instances are tolerated; past that the rest are not started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rolling {
    /// The group: the resource's id without its instance key.
    pub group: String,
    /// The instance's place in the group (0-based, instance order).
    pub position: usize,
    pub serial: usize,
    pub max_failures: usize,
}

impl Rolling {
    /// The batch it belongs to (0-based).
    pub fn batch(&self) -> usize {
        self.position / self.serial.max(1)
    }
}

/// A duration written like `30s` or `2m`, within (0, [`MAX_WAIT`]].
fn duration(
    map: &Map<String, Value>,
    key: &str,
    pointer: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<Duration> {
    let at = format!("{pointer}/{key}");
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => match humantime::parse_duration(t) {
            Ok(d) if d.is_zero() => {
                diags.error(
                    Some(spans.value(&at)),
                    format!("{key} of {what} must be longer than zero"),
                );
                None
            }
            Ok(d) if d > MAX_WAIT => {
                diags.error(
                    Some(spans.value(&at)),
                    format!("{key} of {what} may be at most 24h, found `{t}`"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                diags.error(
                    Some(spans.value(&at)),
                    format!("invalid {key} `{t}` of {what} (e.g. `30s`, `2m`): {e}"),
                );
                None
            }
        },
        Some(other) => {
            diags.error(
                Some(spans.value(&at)),
                format!(
                    "{key} of {what} must be a duration such as `30s`, found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// A whole number at `key` within `range`.
fn count(
    map: &Map<String, Value>,
    key: &str,
    pointer: &str,
    spans: &Spans,
    what: &str,
    range: std::ops::RangeInclusive<u64>,
    diags: &mut Diagnostics,
) -> Option<u64> {
    let v = map.get(key)?;
    match v.as_u64().filter(|n| range.contains(n)) {
        Some(n) => Some(n),
        None => {
            diags.error(
                Some(spans.value(&format!("{pointer}/{key}"))),
                format!(
                    "{key} of {what} must be a whole number from {} to {}, found {v}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }
}

/// `retry:` at `pointer` (a resource's or a provider's).
pub(super) fn retry(
    value: &Value,
    pointer: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<Retry> {
    let what = format!("retry of {what}");
    let map = object(
        value,
        pointer,
        spans,
        &what,
        &["attempts", "delay", "backoff", "max_delay"],
        diags,
    )?;
    let errors = diags.len();
    let Some(attempts) = count(
        map,
        "attempts",
        pointer,
        spans,
        &what,
        1..=u64::from(MAX_ATTEMPTS),
        diags,
    ) else {
        if map.get("attempts").is_none() {
            diags.error(
                Some(spans.value(pointer)),
                format!("{what} needs `attempts` (how many tries in all, e.g. `attempts: 3`)"),
            );
        }
        return None;
    };
    let delay = duration(map, "delay", pointer, spans, &what, diags).unwrap_or(DEFAULT_RETRY_DELAY);
    let max_delay =
        duration(map, "max_delay", pointer, spans, &what, diags).unwrap_or(DEFAULT_MAX_DELAY);
    let backoff = match map.get("backoff") {
        None | Some(Value::Null) => DEFAULT_BACKOFF,
        Some(v) => match v.as_f64().filter(|b| (1.0..=MAX_BACKOFF).contains(b)) {
            Some(b) => b,
            None => {
                diags.error(
                    Some(spans.value(&format!("{pointer}/backoff"))),
                    format!(
                        "backoff of {what} must be a number from 1 to {MAX_BACKOFF}, found {v}"
                    ),
                );
                DEFAULT_BACKOFF
            }
        },
    };
    if max_delay < delay {
        diags.error(
            Some(spans.value(&format!("{pointer}/max_delay"))),
            format!("max_delay of {what} is shorter than its delay"),
        );
    }
    (diags.len() == errors).then_some(Retry {
        attempts: u32::try_from(attempts).unwrap_or(MAX_ATTEMPTS),
        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        backoff,
        max_delay_ms: u64::try_from(max_delay.as_millis()).unwrap_or(u64::MAX),
    })
}

/// A resource's `timeout:`.
pub(super) fn timeout(
    map: &Map<String, Value>,
    pointer: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<Duration> {
    duration(map, "timeout", pointer, spans, what, diags)
}

/// A resource's `serial:` and `max_failures:`, as (serial, max_failures). `instance`:
/// whether the resource is an instance of `for_each`/`count` (a group needs members).
pub(super) fn serial(
    map: &Map<String, Value>,
    pointer: &str,
    spans: &Spans,
    what: &str,
    instance: bool,
    diags: &mut Diagnostics,
) -> Option<(usize, usize)> {
    let serial = count(map, "serial", pointer, spans, what, 1..=1_000_000, diags);
    let max_failures = count(
        map,
        "max_failures",
        pointer,
        spans,
        what,
        0..=1_000_000,
        diags,
    );
    match (serial, map.contains_key("serial")) {
        (None, false) => {
            if map.contains_key("max_failures") {
                diags.error(
                    Some(spans.value(&format!("{pointer}/max_failures"))),
                    format!("max_failures of {what} needs `serial:` (a rolling group)"),
                );
            }
            None
        }
        (None, true) => None,
        (Some(_), _) if !instance => {
            diags.error(
                Some(spans.value(&format!("{pointer}/serial"))),
                format!(
                    "serial of {what} rolls the instances of a `for_each` or `count` out a batch at a time; this resource has neither"
                ),
            );
            None
        }
        (Some(s), _) => Some((
            usize::try_from(s).unwrap_or(usize::MAX),
            usize::try_from(max_failures.unwrap_or(0)).unwrap_or(usize::MAX),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_backoff_up_to_the_cap() {
        let r = Retry {
            attempts: 6,
            delay_ms: 100,
            backoff: 2.0,
            max_delay_ms: 500,
        };
        let waits: Vec<u128> = (1..=5).map(|a| r.delay_after(a).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn batches_follow_serial() {
        let r = |position, serial| Rolling {
            group: "g".into(),
            position,
            serial,
            max_failures: 0,
        };
        assert_eq!(
            (0..5).map(|p| r(p, 2).batch()).collect::<Vec<_>>(),
            vec![0, 0, 1, 1, 2]
        );
        assert_eq!(r(3, 1).batch(), 3);
    }
}
