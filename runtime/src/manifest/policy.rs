//! The `policy:` section of a manifest: where the policies are, their enforcement
//! levels, their parameters and their time limit. Without the section, a `policy/`
//! directory beside the manifest is used when there is one (conftest's convention).
//!
//! ```yaml
//! policy:
//!   paths: [policy, ../org-policy]       # directories of *.rego, relative to the manifest
//!   levels:                              # by package, or package.rule
//!     tenet.capabilities: hard-mandatory
//!     main.warn_replace: soft-mandatory
//!   params: {max_deletions: 5}           # data.params in every policy
//!   timeout: 5s                          # the whole evaluation of one stage
//! ```

use super::yaml::Spans;
use crate::diag::{Diagnostics, Location};
use crate::plan::policy::Level;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory used when the manifest names none.
pub const DEFAULT_DIR: &str = "policy";
/// Default time one stage's evaluation may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest input document (JSON) a stage evaluates: far above a 100,000-resource
/// plan, low enough that a runaway plan cannot take the host's memory through policies.
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// Default longest lifetime of a waiver, from `created` to `expires`
/// (`max_waiver_days`).
pub const DEFAULT_MAX_WAIVER_DAYS: u64 = 90;

/// Longest `timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A manifest's policy configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Directories of policies, absolute.
    pub paths: Vec<PathBuf>,
    /// How each path was written (for messages).
    pub shown: Vec<String>,
    /// The manifest's directory as the operator named it: messages name policy files
    /// under it, as they name the manifest's own files.
    pub shown_dir: PathBuf,
    /// Whether the manifest named them (a missing named directory is an error; the
    /// default `policy/` is simply not there).
    pub explicit: bool,
    /// Levels by `package` or `package.rule`.
    pub levels: BTreeMap<String, Level>,
    /// `data.params`.
    pub params: Value,
    pub timeout: Duration,
    /// Longest lifetime of a waiver (`max_waiver_days`).
    pub max_waiver_days: u64,
    /// Largest input document evaluated (`max_input`, e.g. `64MiB`).
    pub max_input_bytes: u64,
    /// Where the section is written.
    pub location: Option<Location>,
}

impl PolicyConfig {
    /// The manifest's policy configuration: its `policy:` section, or — without one —
    /// `policy/` beside it when that exists. Files are named under the manifest's
    /// directory as the operator named it.
    pub fn of(m: &super::Manifest) -> Option<PolicyConfig> {
        let mut config = m
            .policy
            .clone()
            .or_else(|| PolicyConfig::implicit(&m.base_dir))?;
        config.shown_dir = m
            .files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Some(config)
    }

    /// The defaults: `policy/` beside the manifest at `base_dir`, nothing configured.
    fn defaults(base_dir: &Path, location: Option<Location>) -> PolicyConfig {
        PolicyConfig {
            paths: vec![base_dir.join(DEFAULT_DIR)],
            shown: vec![DEFAULT_DIR.to_owned()],
            shown_dir: PathBuf::new(),
            explicit: location.is_some(),
            levels: BTreeMap::new(),
            params: Value::Object(Default::default()),
            timeout: DEFAULT_TIMEOUT,
            max_waiver_days: DEFAULT_MAX_WAIVER_DAYS,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            location,
        }
    }

    /// The configuration when the manifest has no `policy:` section: `policy/` beside
    /// it, if that exists.
    pub fn implicit(base_dir: &Path) -> Option<PolicyConfig> {
        base_dir
            .join(DEFAULT_DIR)
            .is_dir()
            .then(|| PolicyConfig::defaults(base_dir, None))
    }

    /// The level of rule `name` of `package`: configured for the rule, else for its
    /// package (or an enclosing one), else the kind's default.
    pub fn level(&self, package: &str, name: &str, default: Level) -> Level {
        if let Some(l) = self.levels.get(&format!("{package}.{name}")) {
            return *l;
        }
        let mut p = package;
        loop {
            if let Some(l) = self.levels.get(p) {
                return *l;
            }
            match p.rsplit_once('.') {
                Some((outer, _)) => p = outer,
                None => return default,
            }
        }
    }
}

/// Parse `policy:` at `/policy` of a manifest file.
pub fn parse(
    value: &Value,
    spans: &Spans,
    base_dir: &Path,
    diags: &mut Diagnostics,
) -> PolicyConfig {
    // Written, so explicit: a named directory that is missing is an error.
    let mut cfg = PolicyConfig::defaults(base_dir, Some(spans.key("/policy")));
    let Some(map) = value.as_object() else {
        diags.error(
            Some(spans.value("/policy")),
            "`policy` must be a mapping (`paths`, `levels`, `params`, `timeout`)",
        );
        return cfg;
    };
    for (key, v) in map {
        let at = format!("/policy/{key}");
        match key.as_str() {
            "paths" => match v.as_array() {
                Some(items) if !items.is_empty() => {
                    cfg.paths.clear();
                    cfg.shown.clear();
                    for (i, item) in items.iter().enumerate() {
                        match item.as_str() {
                            Some(p) if !p.is_empty() => {
                                cfg.paths.push(super::load::absolute(base_dir, Path::new(p)));
                                cfg.shown.push(p.to_owned());
                            }
                            _ => diags.error(
                                Some(spans.value(&format!("{at}/{i}"))),
                                "a policy path is a directory, relative to the manifest",
                            ),
                        }
                    }
                }
                _ => diags.error(
                    Some(spans.value(&at)),
                    "`paths` of `policy` must be a non-empty list of directories",
                ),
            },
            "levels" => match v.as_object() {
                Some(levels) => {
                    for (name, level) in levels {
                        let place = spans.value(&format!("{at}/{}", super::yaml::escape(name)));
                        match level.as_str().and_then(Level::parse) {
                            Some(l) => {
                                cfg.levels.insert(name.clone(), l);
                            }
                            None => diags.error(
                                Some(place),
                                format!(
                                    "the level of `{name}` must be advisory, soft-mandatory or hard-mandatory, found {level}"
                                ),
                            ),
                        }
                    }
                }
                None => diags.error(
                    Some(spans.value(&at)),
                    "`levels` of `policy` must map packages or package.rule names to levels",
                ),
            },
            "params" => {
                if v.is_object() {
                    cfg.params = v.clone();
                } else {
                    diags.error(Some(spans.value(&at)), "`params` of `policy` must be a mapping");
                }
            }
            "timeout" => match v.as_str().map(humantime::parse_duration) {
                Some(Ok(d)) if !d.is_zero() && d <= MAX_TIMEOUT => cfg.timeout = d,
                _ => diags.error(
                    Some(spans.value(&at)),
                    format!(
                        "`timeout` of `policy` must be a duration like `5s`, at most {}",
                        humantime::format_duration(MAX_TIMEOUT)
                    ),
                ),
            },
            "max_waiver_days" => match v.as_u64() {
                Some(d) if (1..=3650).contains(&d) => cfg.max_waiver_days = d,
                _ => diags.error(
                    Some(spans.value(&at)),
                    "`max_waiver_days` of `policy` must be a whole number of days from 1 to 3650",
                ),
            },
            "max_input" => match v.as_str().map(str::parse::<bytesize::ByteSize>) {
                Some(Ok(b)) if b.as_u64() > 0 => cfg.max_input_bytes = b.as_u64(),
                _ => diags.error(
                    Some(spans.value(&at)),
                    "`max_input` of `policy` must be a size like `64MiB`",
                ),
            },
            other => diags.error(
                Some(spans.key(&at)),
                format!("unknown field `{other}` in `policy` (expected `paths`, `levels`, `params`, `timeout`, `max_waiver_days`, `max_input`)"),
            ),
        }
    }
    cfg
}
