//! Policy as code: Rego policies (through `regorus`, in-process) over a versioned input
//! document ([`input`]) — the manifest, every provider's grants and provenance, the plan
//! — with conftest's conventions and Sentinel's enforcement levels.
//!
//! - Rules named `deny`, `violation` (denials) and `warn` (warnings), each optionally
//!   with a `_suffix`, in any package; `exception` rules exempt `deny_<name>` rules of
//!   their package as conftest's do. A result is a message string or an object with
//!   `msg` (and optionally `id`, `resource`, `provider`, `path`, `severity`, …).
//! - Levels ([`Level`]): a denial is soft-mandatory, a warning advisory, unless the
//!   manifest's `policy.levels` says otherwise per package or rule.
//! - Two stages: `preflight` (the manifest and its grants, before any provider code
//!   runs) and `plan` (after the plan, also when a plan is applied).
//! - Fail closed: a file that does not parse, a policy set without rules, an error or a
//!   timeout while evaluating is an error naming the file, line and rule; nothing is
//!   planned or applied.
//!
//! This module is the only one that knows `regorus`.

pub mod input;
pub mod test;
pub mod waiver;

pub use crate::manifest::policy::PolicyConfig;
pub use crate::plan::policy::{Decision, Level, Outcome, Override, PolicyResult, Stage};

use crate::diag::{Diagnostics, Location};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest policy file read.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;
/// Most policy files in a set.
pub const MAX_POLICY_FILES: usize = 1_000;
/// Most results one rule may produce (a runaway comprehension is a mistake).
pub const MAX_RESULTS_PER_RULE: usize = 10_000;
/// How long past its own timer an evaluation may run (inside one builtin, which the
/// timer does not interrupt) before the watchdog gives up on it.
pub const WATCHDOG_GRACE: Duration = Duration::from_secs(2);

/// What a rule's name makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// `deny`, `violation`, `deny_x`, `violation_x`.
    Deny,
    /// `warn`, `warn_x`.
    Warn,
    /// `exception`: names the `deny_`/`violation_` rules of its package that do not apply.
    Exception,
}

impl RuleKind {
    /// conftest's names: `^(deny|violation)(_[a-zA-Z0-9]+)*$`, `^warn(_[a-zA-Z0-9]+)*$`.
    pub fn of(name: &str) -> Option<RuleKind> {
        let suffix_ok = |rest: &str| {
            rest.is_empty()
                || rest.strip_prefix('_').is_some_and(|r| {
                    r.split('_')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
                })
        };
        for (prefix, kind) in [
            ("deny", RuleKind::Deny),
            ("violation", RuleKind::Deny),
            ("warn", RuleKind::Warn),
        ] {
            if let Some(rest) = name.strip_prefix(prefix)
                && suffix_ok(rest)
            {
                return Some(kind);
            }
        }
        (name == "exception").then_some(RuleKind::Exception)
    }
}

/// One enforced rule of the set.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub package: String,
    pub name: String,
    pub kind: RuleKind,
    pub level: Level,
    /// Where its (first) head is.
    pub location: Location,
}

impl RuleInfo {
    pub fn path(&self) -> String {
        format!("{}.{}", self.package, self.name)
    }
}

/// One policy file, as read.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// As messages name it (relative to where `tenet` runs, like manifest files).
    pub shown: String,
    pub text: String,
}

/// A loaded, parsed policy set.
#[derive(Debug, Clone)]
pub struct Policies {
    pub config: PolicyConfig,
    pub files: Vec<PolicyFile>,
    /// `data.yaml` / `data.json` in the policy directories, merged, plus `params`.
    pub data: Value,
    pub rules: Vec<RuleInfo>,
    /// sha256 over the files' names and texts, the data, the waivers and the levels.
    pub sha256: String,
    /// `waivers.yaml` of the policy directories.
    pub waivers: Vec<waiver::Waiver>,
    /// What the operator overrides in this run (soft-mandatory rules only).
    pub overrides: Vec<Override>,
}

/// Why a policy set could not decide: the run stops (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {rule} ({file}): {message}")]
    Eval {
        rule: String,
        file: String,
        message: String,
    },
    #[error(
        "policy evaluation exceeded {limit:?} (the policy timeout) in {rule} ({file}); nothing was changed"
    )]
    Timeout {
        rule: String,
        file: String,
        limit: Duration,
    },
    #[error("policy evaluation failed: {0}")]
    Internal(String),
    /// The input document is larger than `policy.max_input` allows.
    #[error(
        "the policy input of the {stage} stage is {size} bytes, over the limit of {limit} (policy.max_input): nothing was changed"
    )]
    Input { stage: Stage, size: u64, limit: u64 },
    /// An override that cannot be: a hard-mandatory or unknown rule.
    #[error("{0}")]
    Override(String),
}

/// Where in the manifest a result is: the property `path` of `resource` (or the
/// resource), else the declaration of `provider`.
pub fn locate(
    m: &crate::manifest::Manifest,
    resource: Option<&str>,
    provider: Option<&str>,
    path: Option<&str>,
) -> Option<Location> {
    if let Some(r) = resource.and_then(|id| m.resources.iter().find(|r| r.id == id)) {
        return Some(match path {
            Some(p) if r.spans.offset(p).is_some() => r.property_location(p),
            _ => r.location.clone(),
        });
    }
    provider
        .and_then(|name| m.providers.get(name))
        .map(|p| p.location.clone())
}

/// The preflight stage of a manifest: its policy set (the manifest's `policy:`, or
/// `policy/` beside it) loaded, and — when the manifest itself is sound — evaluated
/// over the manifest and its grants, before any provider is loaded. A policy set that
/// does not load adds its problems to `diags`.
pub fn preflight(
    m: &crate::manifest::Manifest,
    overrides: &[(String, String)],
    diags: &mut Diagnostics,
) -> Result<Option<(Policies, Option<Decision>)>, PolicyError> {
    let Some(config) = PolicyConfig::of(m) else {
        return Ok(None);
    };
    let sound = !diags.has_errors();
    let Some(policies) = load(&config, diags) else {
        return Ok(None);
    };
    let run = input::RunFacts::now();
    let policies = policies.with_overrides(overrides, &run)?;
    if !sound {
        return Ok(Some((policies, None)));
    }
    let doc = input::build(Stage::Preflight, None, m, None, &BTreeMap::new(), &run);
    let decision = evaluate(&policies, Stage::Preflight, doc, m)?;
    Ok(Some((policies, Some(decision))))
}

/// The `*.rego` files (with `*_test.rego` when `tests`) and the merged `data.yaml`/
/// `data.json` of the policy directories, named as messages show them.
fn read_files(
    config: &PolicyConfig,
    tests: bool,
    diags: &mut Diagnostics,
) -> (Vec<(PathBuf, String)>, Map<String, Value>) {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut data = Map::new();
    for (dir, shown) in config.paths.iter().zip(&config.shown) {
        if !dir.is_dir() {
            diags.error(
                config.location.clone(),
                format!("policy directory `{shown}` does not exist"),
            );
            continue;
        }
        let mut found = Vec::new();
        walk(dir, &mut found, diags);
        found.sort();
        let shown_dir = path_clean::clean(config.shown_dir.join(shown));
        for path in found {
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            let name = shown_dir.join(rel);
            let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_rego = file_name.ends_with(".rego");
            let is_data = matches!(file_name, "data.yaml" | "data.yml" | "data.json");
            if (!is_rego && !is_data) || (file_name.ends_with("_test.rego") && !tests) {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.len() > MAX_POLICY_BYTES => {
                    diags.error(
                        Some(Location::file(&name)),
                        format!(
                            "{} bytes, over the limit of {MAX_POLICY_BYTES} (MAX_POLICY_BYTES)",
                            m.len()
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    diags.error(Some(Location::file(&name)), format!("cannot read: {e}"));
                    continue;
                }
                Ok(_) => {}
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    diags.error(Some(Location::file(&name)), format!("cannot read: {e}"));
                    continue;
                }
            };
            if is_rego {
                files.push((name, text));
            } else {
                match crate::manifest::yaml::parse(&name, &text) {
                    Ok((Value::Object(m), _)) => merge(&mut data, m),
                    Ok(_) => diags.error(
                        Some(Location::file(&name)),
                        "policy data must be a mapping (it becomes `data`)",
                    ),
                    Err(e) => diags.error(Some(e.location), e.message),
                }
            }
        }
    }
    if files.len() > MAX_POLICY_FILES {
        diags.error(
            config.location.clone(),
            format!(
                "{} policy files, over the limit of {MAX_POLICY_FILES} (MAX_POLICY_FILES)",
                files.len()
            ),
        );
        files.clear();
    }
    data.insert("params".into(), config.params.clone());
    (files, data)
}

/// An engine with `files` added; a file that does not parse is reported at its place.
fn engine_with(files: &[(PathBuf, String)], diags: &mut Diagnostics) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_strict_builtin_errors(true);
    for (name, text) in files {
        if let Err(e) = engine.add_policy(name.display().to_string(), text.clone()) {
            let (at, msg) = located(&e.to_string());
            diags.error(Some(at.unwrap_or_else(|| Location::file(name))), msg);
        }
    }
    engine
}

/// Read and parse the policy set `config` names: every problem at once, each with its
/// file, line and column.
pub fn load(config: &PolicyConfig, diags: &mut Diagnostics) -> Option<Policies> {
    let before = diags.len();
    let (files, data) = read_files(config, false, diags);
    if files.is_empty() && diags.len() == before {
        diags.error(
            config.location.clone().or_else(|| {
                config.shown.first().map(|s| Location::file(Path::new(s)))
            }),
            format!(
                "no policies: {} holds no *.rego file (an empty policy set would pass everything silently)",
                config.shown.join(", ")
            ),
        );
    }
    let mut engine = engine_with(&files, diags);
    let parsed = diags.len() == before;
    let mut rules = Vec::new();
    for module in engine.get_modules().iter() {
        let package = package_name(module.package.refr.span().text());
        let file = module.package.span.source.get_path().clone();
        if module.policy.is_empty() {
            diags.error(
                Some(Location::new(
                    &file,
                    module.package.span.line as usize,
                    module.package.span.col as usize,
                )),
                format!(
                    "package `{package}` has no rules: a policy file without rules checks nothing"
                ),
            );
            continue;
        }
        if package.ends_with("_test") {
            continue;
        }
        for rule in &module.policy {
            let (span, name) = match rule.as_ref() {
                regorus::unstable::Rule::Spec { head, .. } => {
                    let refr = match head {
                        regorus::unstable::RuleHead::Compr { refr, .. }
                        | regorus::unstable::RuleHead::Set { refr, .. }
                        | regorus::unstable::RuleHead::Func { refr, .. } => refr,
                    };
                    (refr.span().clone(), head_name(refr.span().text()))
                }
                regorus::unstable::Rule::Default { refr, .. } => {
                    (refr.span().clone(), head_name(refr.span().text()))
                }
            };
            let Some(kind) = RuleKind::of(&name) else {
                continue;
            };
            // A rule with several bodies or heads is one rule.
            if rules
                .iter()
                .any(|r: &RuleInfo| r.package == package && r.name == name)
            {
                continue;
            }
            let default = match kind {
                RuleKind::Warn => Level::Advisory,
                _ => Level::SoftMandatory,
            };
            rules.push(RuleInfo {
                level: config.level(&package, &name, default),
                package: package.clone(),
                name,
                kind,
                location: Location::new(&file, span.line as usize, span.col as usize),
            });
        }
    }
    if parsed {
        unknown_functions(&files, engine.get_modules(), diags);
    }
    if diags.len() == before
        && !files.is_empty()
        && !rules.iter().any(|r| r.kind != RuleKind::Exception)
    {
        diags.error(
            config.location.clone().or_else(|| {
                files.first().map(|(n, _)| Location::file(n))
            }),
            format!(
                "no policy rules: none of the {} policy file(s) has a `deny`, `violation` or `warn` rule (an empty policy set would pass everything silently)",
                files.len()
            ),
        );
    }
    let dirs: Vec<(PathBuf, PathBuf)> = config
        .paths
        .iter()
        .zip(&config.shown)
        .map(|(d, s)| (d.clone(), path_clean::clean(config.shown_dir.join(s))))
        .collect();
    let waiver_files = waiver::files(&dirs);
    let waivers = waiver::load(
        &waiver_files,
        parsed.then_some(rules.as_slice()),
        config.max_waiver_days,
        std::time::SystemTime::now(),
        diags,
    );
    if diags.len() > before {
        return None;
    }
    rules.sort_by(|a, b| (&a.package, &a.name).cmp(&(&b.package, &b.name)));
    let mut h = Sha256::new();
    for (name, text) in &waiver_files {
        h.update(name.display().to_string().as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    for (name, text) in &files {
        h.update(name.display().to_string().as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    let data = Value::Object(data);
    h.update(data.to_string().as_bytes());
    h.update(format!("{:?}", config.levels).as_bytes());
    Some(Policies {
        config: config.clone(),
        files: files
            .into_iter()
            .map(|(n, text)| PolicyFile {
                shown: n.display().to_string(),
                text,
            })
            .collect(),
        data,
        rules,
        sha256: hex::encode(h.finalize()),
        waivers,
        overrides: Vec::new(),
    })
}

impl Policies {
    /// Let `--override-policy RULE --reason TEXT` pass soft-mandatory denials of those
    /// rules in this run. A hard-mandatory rule, or one the set does not have, is refused.
    pub fn with_overrides(
        mut self,
        overrides: &[(String, String)],
        run: &input::RunFacts,
    ) -> Result<Policies, PolicyError> {
        for (rule, reason) in overrides {
            let named: Vec<&RuleInfo> = self.rules.iter().filter(|r| r.path() == *rule).collect();
            if named.is_empty() {
                let known: Vec<String> = self
                    .rules
                    .iter()
                    .filter(|r| r.kind == RuleKind::Deny)
                    .map(RuleInfo::path)
                    .collect();
                return Err(PolicyError::Override(format!(
                    "--override-policy {rule}: no such deny rule (rules: {})",
                    known.join(", ")
                )));
            }
            if let Some(hard) = named.iter().find(|r| r.level == Level::HardMandatory) {
                return Err(PolicyError::Override(format!(
                    "--override-policy {rule}: the rule is hard-mandatory (at {}): it is never overridden",
                    hard.location
                )));
            }
            if reason.trim().is_empty() {
                return Err(PolicyError::Override(format!(
                    "--override-policy {rule} needs --reason TEXT: an override is recorded with who gave it and why"
                )));
            }
            self.overrides.push(Override {
                rule: rule.clone(),
                reason: reason.clone(),
                user: run.user.clone(),
                host: run.host.clone(),
                at: run.time.clone(),
            });
        }
        Ok(self)
    }
}

/// Calls of functions that are neither builtins of this build nor functions of the
/// policy set, found at load: regorus reports them only when a call is evaluated, so a
/// typo in a branch no input reaches would otherwise pass unnoticed.
fn unknown_functions(
    files: &[(PathBuf, String)],
    modules: &[regorus::unstable::Ref<regorus::unstable::Module>],
    diags: &mut Diagnostics,
) {
    let mut defined: std::collections::BTreeSet<String> = Default::default();
    for module in modules {
        for rule in &module.policy {
            if let regorus::unstable::Rule::Spec {
                head: regorus::unstable::RuleHead::Func { refr, .. },
                ..
            } = rule.as_ref()
            {
                let text = refr.span().text();
                let name = text.rsplit('.').next().unwrap_or(text);
                defined.insert(head_name(name));
            }
        }
    }
    const KEYWORDS: &[&str] = &[
        "if", "not", "some", "every", "contains", "in", "with", "else", "default", "package",
        "import", "as", "true", "false", "null",
    ];
    for (name, text) in files {
        for (line, col, call) in calls(text) {
            let first = call.split('.').next().unwrap_or(&call);
            let last = call.rsplit('.').next().unwrap_or(&call);
            // A function of the set is known by its last name, however it is reached
            // (`is_file(…)`, `lib.is_file(…)` through an import, `data.lib.is_file(…)`).
            let known = regorus::unstable::BUILTINS.contains_key(call.as_str())
                || matches!(call.as_str(), "print" | "trace")
                || KEYWORDS.contains(&call.as_str())
                || first == "data"
                || defined.contains(last);
            if !known {
                diags.error(
                    Some(Location::new(name, line, col)),
                    format!(
                        "unknown function `{call}`: neither a builtin of this build nor a function of the policy set"
                    ),
                );
            }
        }
    }
}

/// `(line, column, name)` of every call `name(` in Rego source, outside comments and
/// strings; `name` is a dotted chain of identifiers.
fn calls(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '#' => break,
                '"' => {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                '`' => {
                    i += 1;
                    while i < chars.len() && chars[i] != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let start = i;
                    while i < chars.len()
                        && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                    {
                        i += 1;
                    }
                    let prev = start.checked_sub(1).map(|p| chars[p]);
                    let chain: String = chars[start..i].iter().collect();
                    if i < chars.len()
                        && chars[i] == '('
                        && !matches!(prev, Some('.' | ']' | ')'))
                        && !chain.ends_with('.')
                    {
                        out.push((n + 1, start + 1, chain));
                    }
                }
                _ => i += 1,
            }
        }
    }
    out
}

/// Every file under `dir`, recursively (symlinks not followed out of it).
fn walk(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Diagnostics) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.error(Some(Location::file(dir)), format!("cannot read: {e}"));
            return;
        }
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, out, diags),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// Deep-merge `from` into `into` (maps merge, anything else is replaced).
fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// `tenet.network` from a package reference as written (`tenet.network`,
/// `tenet["network"]`).
fn package_name(text: &str) -> String {
    text.replace("[\"", ".")
        .replace("\"]", "")
        .replace(char::is_whitespace, "")
}

/// A rule's name from its head as written: `deny`, `deny_shell`, `deny contains …`.
fn head_name(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The place and message of a regorus error (`--> file:line:col … error: message`).
fn located(text: &str) -> (Option<Location>, String) {
    let at = text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("--> ")?;
        let mut parts = rest.rsplitn(3, ':');
        let col = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        Some(Location::new(parts.next()?, line, col))
    });
    let message = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .strip_prefix("error: ")
                .unwrap_or(l.trim())
                .to_owned()
        })
        .unwrap_or_else(|| text.to_owned());
    (at, message)
}

/// Evaluate every rule of `policies` over `input` at `stage`, with the set's time limit
/// (the engine's timer, and a watchdog for time spent inside one builtin). Results are
/// placed in `manifest` ([`locate`]).
pub fn evaluate(
    policies: &Policies,
    stage: Stage,
    input: Value,
    manifest: &crate::manifest::Manifest,
) -> Result<Decision, PolicyError> {
    let started = Instant::now();
    // As text: its size is what the limit is about, and regorus reads text fastest
    // (keys of a list of like objects are interned: 10,000 resources share one `id`).
    let doc = input;
    let input = serde_json::to_string(&doc).map_err(|e| PolicyError::Internal(e.to_string()))?;
    let size = input.len() as u64;
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        bytes = size,
        "policy input serialised"
    );
    if size > policies.config.max_input_bytes {
        return Err(PolicyError::Input {
            stage,
            size,
            limit: policies.config.max_input_bytes,
        });
    }
    let limit = policies.config.timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    let progress = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let job = {
        let files = policies.files.clone();
        let data = policies.data.clone();
        let rules = policies.rules.clone();
        let progress = progress.clone();
        move || {
            let mut engine = regorus::Engine::new();
            let out = run_rules(&mut engine, &files, data, &rules, input, limit, &progress);
            let _ = tx.send(out);
            // Freeing a large input (10,000 resources: tens of ms) after the answer.
            drop((engine, doc));
        }
    };
    std::thread::Builder::new()
        .name("tenet-policy".into())
        .stack_size(64 * 1024 * 1024)
        .spawn(job)
        .map_err(|e| PolicyError::Internal(e.to_string()))?;
    let raw = match rx.recv_timeout(limit + WATCHDOG_GRACE) {
        Ok(r) => r?,
        Err(_) => {
            let rule = progress.lock().map(|p| p.clone()).unwrap_or_default();
            let file = policies
                .rules
                .iter()
                .find(|r| r.path() == rule)
                .map(|r| r.location.to_string())
                .unwrap_or_default();
            return Err(PolicyError::Timeout { rule, file, limit });
        }
    };
    let mut results = Vec::new();
    for (rule, values, exempt) in raw {
        for v in values {
            let (msg, fields) = match v {
                Value::String(s) => (s, Map::new()),
                Value::Object(mut m) => match m.remove("msg") {
                    Some(Value::String(s)) => (s, m),
                    _ => {
                        return Err(PolicyError::Eval {
                            rule: rule.path(),
                            file: rule.location.to_string(),
                            message: "a result object must have a string `msg`".into(),
                        });
                    }
                },
                other => {
                    return Err(PolicyError::Eval {
                        rule: rule.path(),
                        file: rule.location.to_string(),
                        message: format!(
                            "a result must be a message string or an object with `msg`, found {other}"
                        ),
                    });
                }
            };
            let mut metadata = fields;
            let text = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
                Some(Value::String(s)) => Some(s),
                Some(other) => {
                    m.insert(k.to_owned(), other);
                    None
                }
                None => None,
            };
            let id = text(&mut metadata, "id");
            let resource = text(&mut metadata, "resource");
            let provider = text(&mut metadata, "provider");
            let path = text(&mut metadata, "path");
            let loc = metadata
                .remove("_loc")
                .and_then(|l| {
                    Some(Location::new(
                        l.get("file")?.as_str()?,
                        l.get("line")?.as_u64()? as usize,
                        1,
                    ))
                })
                .or_else(|| {
                    locate(
                        manifest,
                        resource.as_deref(),
                        provider.as_deref(),
                        path.as_deref(),
                    )
                });
            let outcome = match (rule.kind, exempt) {
                (RuleKind::Warn, _) => Outcome::Warning,
                (_, true) => Outcome::Excepted,
                _ => Outcome::Denied,
            };
            results.push(PolicyResult {
                stage,
                outcome,
                level: rule.level,
                rule: rule.path(),
                rule_location: rule.location.to_string(),
                id,
                msg,
                resource,
                provider,
                path,
                location: loc.map(|l| l.to_string()),
                metadata,
                waiver: None,
                overridden: None,
            });
        }
    }
    results.sort_by(|a, b| {
        (&a.location, &a.rule, &a.msg, &a.resource).cmp(&(
            &b.location,
            &b.rule,
            &b.msg,
            &b.resource,
        ))
    });
    results.dedup();
    let waivers = waiver::apply(&policies.waivers, &mut results);
    for r in results.iter_mut().filter(|r| r.blocks()) {
        if let Some(o) = policies
            .overrides
            .iter()
            .find(|o| o.rule == r.rule || r.id.as_deref() == Some(o.rule.as_str()))
            && r.level == Level::SoftMandatory
        {
            r.outcome = Outcome::Overridden;
            r.overridden = Some(o.clone());
        }
    }
    Ok(Decision {
        waivers,
        stage,
        set_sha256: policies.sha256.clone(),
        rules: policies.rules.len(),
        files: policies.files.iter().map(|f| f.shown.clone()).collect(),
        results,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Each rule's values (and whether an `exception` exempts it), evaluated on this thread.
type Raw = Vec<(RuleInfo, Vec<Value>, bool)>;

fn run_rules(
    engine: &mut regorus::Engine,
    files: &[PolicyFile],
    data: Value,
    rules: &[RuleInfo],
    input: String,
    limit: Duration,
    progress: &std::sync::Mutex<String>,
) -> Result<Raw, PolicyError> {
    let internal = |e: anyhow::Error| PolicyError::Internal(e.to_string());
    let t0 = Instant::now();
    engine.set_strict_builtin_errors(true);
    for f in files {
        engine
            .add_policy(f.shown.clone(), f.text.clone())
            .map_err(internal)?;
    }
    engine
        .add_data(regorus::Value::from(data))
        .map_err(internal)?;
    let t1 = Instant::now();
    engine.set_input(regorus::Value::from_json_str(&input).map_err(internal)?);
    drop(input);
    tracing::debug!(
        parse_ms = (t1 - t0).as_secs_f64() * 1e3,
        input_ms = t1.elapsed().as_secs_f64() * 1e3,
        "policy engine ready"
    );
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit,
        check_interval: std::num::NonZeroU32::MIN.saturating_add(63),
    });
    // Exceptions first: the names they exempt, by package.
    let mut exempt: std::collections::BTreeSet<(String, String)> = Default::default();
    let mut out = Vec::new();
    let eval = |engine: &mut regorus::Engine, rule: &RuleInfo| -> Result<Vec<Value>, PolicyError> {
        if let Ok(mut p) = progress.lock() {
            *p = rule.path();
        }
        let v = engine
            .eval_rule(format!("data.{}", rule.path()))
            .map_err(|e| {
                let (at, msg) = located(&e.to_string());
                PolicyError::Eval {
                    rule: rule.path(),
                    file: at.unwrap_or_else(|| rule.location.clone()).to_string(),
                    message: msg,
                }
            })?;
        if v == regorus::Value::Undefined {
            return Ok(Vec::new());
        }
        let json = serde_json::to_value(&v).map_err(|e| PolicyError::Internal(e.to_string()))?;
        let items = match json {
            Value::Array(items) => items,
            Value::Bool(false) | Value::Null => Vec::new(),
            Value::Bool(true) => vec![Value::String(format!("{} is true", rule.path()))],
            other => vec![other],
        };
        if items.len() > MAX_RESULTS_PER_RULE {
            return Err(PolicyError::Eval {
                rule: rule.path(),
                file: rule.location.to_string(),
                message: format!(
                    "{} results, over the limit of {MAX_RESULTS_PER_RULE} (MAX_RESULTS_PER_RULE)",
                    items.len()
                ),
            });
        }
        Ok(items)
    };
    for rule in rules.iter().filter(|r| r.kind == RuleKind::Exception) {
        for v in eval(engine, rule)? {
            let names: Vec<String> = match v {
                Value::Array(items) => items
                    .into_iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect(),
                Value::String(s) => vec![s],
                _ => Vec::new(),
            };
            for n in names {
                for prefix in ["deny_", "violation_"] {
                    exempt.insert((rule.package.clone(), format!("{prefix}{n}")));
                }
            }
        }
    }
    for rule in rules.iter().filter(|r| r.kind != RuleKind::Exception) {
        let t = Instant::now();
        let values = eval(engine, rule)?;
        tracing::debug!(
            rule = rule.path(),
            ms = t.elapsed().as_secs_f64() * 1e3,
            "policy rule"
        );
        let is_exempt = exempt.contains(&(rule.package.clone(), rule.name.clone()));
        out.push((rule.clone(), values, is_exempt));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_follow_conftest() {
        assert_eq!(RuleKind::of("deny"), Some(RuleKind::Deny));
        assert_eq!(RuleKind::of("deny_shell_2"), Some(RuleKind::Deny));
        assert_eq!(RuleKind::of("violation_x"), Some(RuleKind::Deny));
        assert_eq!(RuleKind::of("warn_replace"), Some(RuleKind::Warn));
        assert_eq!(RuleKind::of("exception"), Some(RuleKind::Exception));
        for no in ["denyx", "deny_", "deny__x", "allow", "warning", "is_deny"] {
            assert_eq!(RuleKind::of(no), None, "{no}");
        }
    }

    #[test]
    fn errors_are_located() {
        let (at, msg) = located(
            "\n--> policy/x.rego:3:7\n  |\n3 | deny if {\n  |       ^\nerror: unexpected token",
        );
        assert_eq!(at, Some(Location::new("policy/x.rego", 3, 7)));
        assert_eq!(msg, "unexpected token");
    }
}
