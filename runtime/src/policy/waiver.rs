//! Waivers: `waivers.yaml` in a policy directory — an exception to a rule for named
//! resources (or providers), with a reason, an approver and an expiry no further than
//! `max_waiver_days` after it was created. Applied by the host, not in Rego, so they
//! stay simple and auditable; the waiver's text goes with every result it covers into
//! the plan and the run record.
//!
//! ```yaml
//! waivers:
//!   - id: W-2026-014
//!     rule: tenet.ownership.deny      # package.rule, or a result id (OWN-001)
//!     resources: [legacy-*]           # id globs; or providers: [name, …]
//!     reason: "migrated with INFRA-881"
//!     approved_by: security@example.com
//!     created: 2026-11-20
//!     expires: 2026-12-31             # the end of that day, UTC
//! ```
//!
//! An expired waiver covers nothing and says so; a hard-mandatory rule cannot be waived
//! (an error at the waiver); a waiver that covered nothing in a run is a warning.

use super::{Level, Outcome, PolicyResult, RuleInfo};
use crate::diag::{Diagnostics, Location};
use crate::manifest::yaml::{self, Spans};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub use crate::manifest::policy::DEFAULT_MAX_WAIVER_DAYS;
pub use crate::plan::policy::{Applied, Waiver};
/// The file a policy directory holds its waivers in.
pub const FILE: &str = "waivers.yaml";
/// A waiver this close to its expiry is reported as expiring.
pub const EXPIRING_SOON: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether `w` covers `r` (whatever its expiry).
fn covers(w: &Waiver, r: &PolicyResult) -> bool {
    let rule = w.rule == r.rule || r.id.as_deref() == Some(w.rule.as_str());
    let subject = match (&r.resource, &r.provider) {
        (Some(res), _) => w.resources.iter().any(|g| glob(g, res)),
        (None, Some(p)) => w.providers.iter().any(|n| n == p),
        // A plan-level result: a waiver naming neither resources nor providers.
        (None, None) => w.resources.is_empty() && w.providers.is_empty(),
    };
    rule && subject
}

/// `*` and `?` globs over resource ids.
fn glob(pattern: &str, text: &str) -> bool {
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(text))
        .unwrap_or(pattern == text)
}

/// The end of a `YYYY-MM-DD` day (UTC), or an RFC 3339 instant.
fn instant(text: &str, end_of_day: bool) -> Option<SystemTime> {
    let full = if text.len() == 10 {
        format!(
            "{text}T{}Z",
            if end_of_day { "23:59:59" } else { "00:00:00" }
        )
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .or_else(|| humantime::parse_rfc3339(&full).ok())
}

/// Read `waivers.yaml` of each policy directory; every problem at its place.
/// `rules` is `None` when the policy files did not all parse (a waiver's rule is then
/// not checked: that would only repeat the problem).
pub fn load(
    files: &[(std::path::PathBuf, String)],
    rules: Option<&[RuleInfo]>,
    max_days: u64,
    now: SystemTime,
    diags: &mut Diagnostics,
) -> Vec<Waiver> {
    let mut out: Vec<Waiver> = Vec::new();
    for (name, text) in files {
        let (doc, spans) = match yaml::parse(name, text) {
            Ok(d) => d,
            Err(e) => {
                diags.error(Some(e.location), e.message);
                continue;
            }
        };
        let Some(list) = doc.get("waivers").and_then(Value::as_array) else {
            diags.error(
                Some(Location::file(name)),
                "a waivers file is a mapping with `waivers:`, a list of waivers",
            );
            continue;
        };
        for (i, w) in list.iter().enumerate() {
            if let Some(waiver) = one(
                w,
                &format!("/waivers/{i}"),
                &spans,
                rules,
                max_days,
                now,
                diags,
            ) {
                if let Some(first) = out.iter().find(|o| o.id == waiver.id) {
                    diags.error(
                        Some(spans.value(&format!("/waivers/{i}/id"))),
                        format!(
                            "waiver `{}` is declared twice (first at {})",
                            waiver.id, first.location
                        ),
                    );
                    continue;
                }
                out.push(waiver);
            }
        }
    }
    out
}

fn one(
    w: &Value,
    at: &str,
    spans: &Spans,
    rules: Option<&[RuleInfo]>,
    max_days: u64,
    now: SystemTime,
    diags: &mut Diagnostics,
) -> Option<Waiver> {
    let before = diags.len();
    let Some(map) = w.as_object() else {
        diags.error(Some(spans.value(at)), "a waiver is a mapping (`id`, `rule`, `resources`, `reason`, `approved_by`, `created`, `expires`)");
        return None;
    };
    const KEYS: &[&str] = &[
        "id",
        "rule",
        "resources",
        "providers",
        "reason",
        "approved_by",
        "created",
        "expires",
    ];
    for k in map.keys() {
        if !KEYS.contains(&k.as_str()) {
            diags.error(
                Some(spans.key(&format!("{at}/{}", yaml::escape(k)))),
                format!(
                    "unknown field `{k}` in a waiver (expected {})",
                    KEYS.join(", ")
                ),
            );
        }
    }
    let text = |k: &str, diags: &mut Diagnostics| -> String {
        match map.get(k) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => {
                diags.error(
                    Some(spans.value(&format!("{at}/{k}"))),
                    format!("`{k}` of a waiver must be non-empty text"),
                );
                String::new()
            }
            None => {
                diags.error(Some(spans.value(at)), format!("a waiver needs `{k}`"));
                String::new()
            }
        }
    };
    let id = text("id", diags);
    let rule = text("rule", diags);
    let reason = text("reason", diags);
    let approved_by = text("approved_by", diags);
    let created = text("created", diags);
    let expires = text("expires", diags);
    let list = |k: &str, diags: &mut Diagnostics| -> Vec<String> {
        match map.get(k) {
            None => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                diags.error(
                    Some(spans.value(&format!("{at}/{k}"))),
                    format!("`{k}` of a waiver is a list of names"),
                );
                Vec::new()
            }
        }
    };
    let resources = list("resources", diags);
    let providers = list("providers", diags);
    let (start, end) = (instant(&created, false), instant(&expires, true));
    if !created.is_empty() && start.is_none() {
        diags.error(
            Some(spans.value(&format!("{at}/created"))),
            format!("`created` must be a date (YYYY-MM-DD, UTC), found `{created}`"),
        );
    }
    if !expires.is_empty() && end.is_none() {
        diags.error(Some(spans.value(&format!("{at}/expires"))), format!("`expires` must be a date (YYYY-MM-DD, UTC) or an RFC 3339 instant, found `{expires}`"));
    }
    if let (Some(s), Some(e)) = (start, end) {
        match e.duration_since(s) {
            Ok(life) if life > Duration::from_secs(max_days * 86_400 + 86_399) => diags.error(
                Some(spans.value(&format!("{at}/expires"))),
                format!(
                    "waiver `{id}` lasts {} days, over the limit of {max_days} (policy.max_waiver_days): waivers are temporary",
                    life.as_secs() / 86_400
                ),
            ),
            Ok(_) => {}
            Err(_) => diags.error(Some(spans.value(&format!("{at}/expires"))), format!("waiver `{id}` expires before it was created")),
        }
    }
    if let (false, Some(rules)) = (rule.is_empty(), rules) {
        let named: Vec<&RuleInfo> = rules.iter().filter(|r| r.path() == rule).collect();
        if named.iter().any(|r| r.level == Level::HardMandatory) {
            diags.error(
                Some(spans.value(&format!("{at}/rule"))),
                format!("`{rule}` is hard-mandatory: it cannot be waived"),
            );
        } else if named.is_empty() && rule.contains('.') && !rule.contains('-') {
            diags.error(
                Some(spans.value(&format!("{at}/rule"))),
                format!("no policy rule `{rule}` (name a rule as package.rule, or a result id)"),
            );
        }
    }
    if diags.len() > before {
        return None;
    }
    Some(Waiver {
        expired: end.is_some_and(|e| e < now),
        id,
        rule,
        resources,
        providers,
        reason,
        approved_by,
        created,
        expires,
        location: spans.value(at).to_string(),
    })
}

/// Waive what the waivers cover: a denial that a live waiver covers becomes
/// `waived` (with the waiver's text); one an expired waiver would cover stays denied,
/// and its message says which waiver expired.
pub fn apply(waivers: &[Waiver], results: &mut [PolicyResult]) -> Applied {
    let mut used = std::collections::BTreeSet::new();
    for r in results.iter_mut().filter(|r| r.outcome == Outcome::Denied) {
        let Some(w) = waivers.iter().find(|w| covers(w, r)) else {
            continue;
        };
        used.insert(w.id.clone());
        if w.expired {
            r.msg = format!("{} (waiver {} expired {})", r.msg, w.id, w.expires);
            continue;
        }
        if r.level == Level::HardMandatory {
            continue;
        }
        r.outcome = Outcome::Waived;
        r.waiver = Some(Box::new(w.clone()));
    }
    Applied {
        unused: waivers
            .iter()
            .filter(|w| !used.contains(&w.id))
            .map(|w| w.id.clone())
            .collect(),
        used: used.into_iter().collect(),
    }
}

/// The waivers files of the policy directories.
pub fn files(
    dirs: &[(std::path::PathBuf, std::path::PathBuf)],
) -> Vec<(std::path::PathBuf, String)> {
    dirs.iter()
        .filter_map(|(dir, shown)| {
            let path = Path::new(dir).join(FILE);
            std::fs::read_to_string(&path)
                .ok()
                .map(|t| (shown.join(FILE), t))
        })
        .collect()
}
