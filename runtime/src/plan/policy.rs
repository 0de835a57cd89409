//! What the policies decided, as a plan carries it and the history records it: each
//! result of each rule, its enforcement level and outcome, the waivers and overrides
//! that applied. The vocabulary only — evaluating policies is [`crate::policy`]'s work,
//! reading a manifest's `policy:` section [`crate::manifest::policy`]'s — so that plans
//! and run records need nothing of either.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a denial is enforced (Sentinel's levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Reported, never blocks (the default of `warn` rules).
    Advisory,
    /// Blocks unless overridden with a recorded reason (the default of `deny` rules).
    SoftMandatory,
    /// Blocks; never overridden or waived.
    HardMandatory,
}

impl Level {
    /// `advisory`, `soft-mandatory` or `hard-mandatory`.
    pub fn parse(text: &str) -> Option<Level> {
        Some(match text {
            "advisory" => Level::Advisory,
            "soft-mandatory" => Level::SoftMandatory,
            "hard-mandatory" => Level::HardMandatory,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Advisory => "advisory",
            Level::SoftMandatory => "soft-mandatory",
            Level::HardMandatory => "hard-mandatory",
        })
    }
}

/// Which stage a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The manifest and its grants, before any provider runs.
    Preflight,
    /// The plan.
    Plan,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Preflight => "preflight",
            Stage::Plan => "plan",
        })
    }
}

/// What a result means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Denied,
    Warning,
    /// A denial an `exception` rule exempts.
    Excepted,
    /// A denial a live waiver covers (`waiver` says which).
    Waived,
    /// A soft-mandatory denial overridden for this run (`overridden` says by whom, why).
    Overridden,
}

/// `--override-policy RULE --reason TEXT`: who let a soft-mandatory denial pass, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// `package.rule`, or a result `id`.
    pub rule: String,
    pub reason: String,
    pub user: String,
    pub host: String,
    /// RFC 3339, UTC.
    pub at: String,
}

/// One result of one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyResult {
    pub stage: Stage,
    pub outcome: Outcome,
    pub level: Level,
    /// `package.rule`.
    pub rule: String,
    /// Where the rule is (`policy/x.rego:3:1`).
    pub rule_location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// A JSON pointer into the resource's properties (or the provider's declaration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The manifest place it is about (`tenet.yaml:12:9`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Any other fields of the result object.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// The waiver that covers it, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiver: Option<Box<Waiver>>,
    /// The override that let it pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overridden: Option<Override>,
}

impl PolicyResult {
    /// Whether it stops the run: a denial that is not advisory.
    pub fn blocks(&self) -> bool {
        self.outcome == Outcome::Denied && self.level != Level::Advisory
    }
}

/// The outcome of evaluating a policy set at one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub stage: Stage,
    /// The policy set's digest.
    pub set_sha256: String,
    /// Rules evaluated.
    pub rules: usize,
    pub files: Vec<String>,
    /// Sorted by (location, rule, message).
    pub results: Vec<PolicyResult>,
    /// Which waivers covered a result at this stage, and which did not.
    #[serde(default)]
    pub waivers: Applied,
    pub elapsed_ms: u64,
}

impl Decision {
    /// Whether a result stops the run.
    pub fn blocked(&self) -> bool {
        self.results.iter().any(PolicyResult::blocks)
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }
}

/// One waiver, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiver {
    pub id: String,
    /// `package.rule`, or a result `id`.
    pub rule: String,
    /// Resource id globs (empty: see `providers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    pub reason: String,
    pub approved_by: String,
    pub created: String,
    pub expires: String,
    /// Where it is written.
    pub location: String,
    /// Whether it had expired when the run started.
    pub expired: bool,
}

/// What applying the waivers to a decision found besides the results themselves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// Waivers that covered a result in this run.
    pub used: Vec<String>,
    /// Waivers that covered nothing (a warning: a stale exception hides nothing, and
    /// should go).
    pub unused: Vec<String>,
}
