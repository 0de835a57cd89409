//! The argument groups commands share, defined once: the manifest and its variables
//! (with where its state lives), how a run walks the graph, durations.

use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::state::StateStore;

/// The manifest to work on and its variables.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// Manifest file, or directory whose *.yaml files are merged.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Set a variable: --var name=value (repeatable; wins over values files).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// YAML file of variable values (repeatable; later files win).
    #[arg(long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// Run providers that carry no signature (shown loudly in plans). A signature that
    /// is present must still verify.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Where the state lives: the session refuses grants that reach it.
    #[command(flatten)]
    pub location: StateLocation,
    /// Use the facts in this YAML or JSON file instead of this host's (to plan for
    /// another machine, or in tests).
    #[arg(long = "facts", value_name = "FILE")]
    pub facts: Option<PathBuf>,
    /// Directory of external facts (*.json, *.yaml) merged over the core facts.
    #[arg(long = "facts-dir", value_name = "DIR", env = "TENET_FACTS_DIR")]
    pub facts_dir: Option<PathBuf>,
}

/// `--override-policy RULE --reason TEXT`: let soft-mandatory denials of RULE pass in
/// this run, recorded with who and why. Hard-mandatory rules are never overridden.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyOverrides {
    /// A soft-mandatory policy rule (`package.rule`, or a result id) whose denials this
    /// run lets pass (repeatable; needs --reason).
    #[arg(long = "override-policy", value_name = "RULE")]
    pub rules: Vec<String>,
    /// Why the overridden rules may be broken this time (recorded in the history).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

impl PolicyOverrides {
    /// (rule, reason) pairs; an override without a reason is refused.
    pub fn pairs(&self) -> anyhow::Result<Vec<(String, String)>> {
        if self.rules.is_empty() {
            return Ok(Vec::new());
        }
        let reason = self
            .reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--override-policy needs --reason TEXT: an override is recorded with who gave it and why"
                )
            })?;
        Ok(self
            .rules
            .iter()
            .map(|r| (r.clone(), reason.clone()))
            .collect())
    }
}

/// How a run walks the graph.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Most provider calls in flight at once (each provider's `max_concurrency` in the
    /// manifest limits it further).
    #[arg(long, value_name = "N", default_value_t = crate::engine::DEFAULT_PARALLELISM,
          value_parser = parse_parallelism)]
    pub parallelism: usize,
}

fn parse_parallelism(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

impl ManifestArgs {
    /// What the session is opened from; `--var` must be `NAME=VALUE`.
    pub fn session_options(&self) -> anyhow::Result<crate::session::SessionOptions> {
        let vars = self
            .vars
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow::anyhow!("--var `{kv}` is not NAME=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        let facts = self.facts.as_ref().map(|f| read_facts(f)).transpose()?;
        Ok(crate::session::SessionOptions {
            path: self.path.clone(),
            vars,
            values_files: self.values.clone(),
            allow_unsigned: self.allow_unsigned,
            state: self.location.location(),
            facts,
            facts_dir: self.facts_dir.clone(),
            policy_overrides: Vec::new(),
            artifact: None,
        })
    }
}

/// A `--facts` file: a YAML (or JSON) mapping.
fn read_facts(file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("--facts {}: {e}", file.display()))?;
    let (value, _) = crate::manifest::yaml::parse(file, &text)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.location, e.message))?;
    if !value.is_object() {
        anyhow::bail!("--facts {}: facts must be a mapping", file.display());
    }
    Ok(value)
}

/// Where the state lives.
#[derive(Debug, Clone, Args)]
pub struct StateLocation {
    /// State database: a file (default: .tenet/state.db beside the manifest), or
    /// PostgreSQL as postgres://user@host/db?schema=NAME (schema default: tenet).
    #[arg(long = "state", value_name = "FILE|URL", env = "TENET_STATE")]
    pub state: Option<PathBuf>,
}

impl StateLocation {
    pub fn location(&self) -> crate::state::Location {
        crate::state::Location {
            explicit: self.state.clone(),
        }
    }

    /// Open (creating if needed) the state of the manifest at `manifest`.
    pub fn open(&self, manifest: &Path) -> anyhow::Result<Arc<dyn StateStore>> {
        Ok(self.location().open(manifest)?)
    }
}

/// A duration argument like `30s` (`--lock-timeout`, `report --since`).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 30s: {e}"))
}
