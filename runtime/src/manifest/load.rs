//! Reading manifest files into a [`Manifest`]: structure, variables, providers and
//! resources. Every problem found is collected; nothing stops at the first one.

use super::credentials;
use super::expr::Scope;
use super::orchestrate;
use super::vars::{self, VarDecl};
use super::yaml::{self, Spans};
use super::{
    Access, Dependency, ExecGrant, FsGrant, Grants, Limits, MAX_LOG_LINES, MAX_OUTPUT_LIMIT,
    Manifest, NetGrant, ProviderDecl, ProviderSource, ResourceDecl, TrustedKey,
};
use crate::diag::{Diagnostics, Location};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Variable values from the command line.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--var name=value`, in order; later wins.
    pub vars: Vec<(String, String)>,
    /// `--values FILE`: YAML mappings of variable names to values, in order.
    pub values_files: Vec<PathBuf>,
    /// Load this recorded manifest instead of the files on disk (rollback).
    pub snapshot: Option<Snapshot>,
    /// The facts `${ facts.… }` sees: given (`--facts FILE`, or a rollback's recorded
    /// ones), or — `None` — gathered from this host when the manifest uses them.
    pub facts: Option<Value>,
    /// Where external facts are (default [`crate::facts::EXTERNAL_DIR`]).
    pub facts_dir: Option<PathBuf>,
    /// The desired-state artifact the files were unpacked from, if any.
    pub artifact: Option<super::Artifact>,
}

/// A manifest as recorded in the history: its files' text (named relative to its
/// directory) and its variables' values. Paths in it are relative to `base_dir`, as they
/// were when it was recorded.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub base_dir: PathBuf,
    pub files: BTreeMap<String, String>,
    pub vars: BTreeMap<String, Value>,
    /// The facts the run saw, when the manifest used them.
    pub facts: Option<Value>,
    /// The layered data the run saw, when the manifest declared some.
    pub data: Option<Value>,
    /// The templates the run rendered, by name relative to `base_dir` (`None`: a run
    /// recorded before templates were, whose templates are read from disk).
    pub templates: Option<std::sync::Arc<BTreeMap<String, String>>>,
}

pub(super) struct Doc {
    pub(super) file: PathBuf,
    pub(super) text: String,
    pub(super) value: Value,
    pub(super) spans: Spans,
}

/// Load and structurally validate the manifest at `path` (a file or a directory).
/// Returns what could be read — declarations with errors are left out — and every
/// problem found, so later checks can add theirs and all are reported together.
pub fn load(path: &Path, options: &LoadOptions) -> (Manifest, Diagnostics) {
    let mut diags = Diagnostics::new();
    let (files, base_dir) = match &options.snapshot {
        // Names with a `/` are the files of modules the manifest calls.
        Some(s) => (
            s.files
                .keys()
                .filter(|name| !name.contains('/'))
                .map(|name| s.base_dir.join(name))
                .collect(),
            s.base_dir.clone(),
        ),
        None => manifest_files(path, &mut diags),
    };

    let mut docs = Vec::new();
    for (i, file) in files.iter().enumerate() {
        // A snapshot is read only from the snapshot, never from today's files.
        let read = match &options.snapshot {
            Some(s) => s
                .files
                .iter()
                .filter(|(name, _)| !name.contains('/'))
                .nth(i)
                .map(|(_, text)| text.clone())
                .ok_or_else(|| std::io::Error::other("missing from the snapshot")),
            None => std::fs::read_to_string(file),
        };
        let text = match read {
            Ok(t) => t,
            Err(e) => {
                diags.error(Some(Location::file(file)), format!("cannot read: {e}"));
                continue;
            }
        };
        match yaml::parse(file, &text) {
            Ok((value, spans)) => docs.push(Doc {
                file: file.clone(),
                text,
                value,
                spans,
            }),
            Err(e) => diags.error(Some(e.location), e.message),
        }
    }

    // Top-level structure and variable declarations first: everything else needs them.
    let mut decls = BTreeMap::new();
    for doc in &docs {
        if let Some(map) = doc.value.as_object() {
            for key in map.keys() {
                if !["vars", "providers", "resources", "trust", "data", "policy"]
                    .contains(&key.as_str())
                {
                    diags.error(
                        Some(doc.spans.key(&format!("/{key}"))),
                        format!(
                            "unknown top-level key `{key}` (expected `vars`, `providers`, `resources`, `trust`, `data`, `policy`)"
                        ),
                    );
                }
            }
            if let Some(v) = map.get("vars") {
                vars::declarations(v, &doc.spans, &mut decls, &mut diags);
            }
        }
    }
    let values = resolve_vars(&decls, options, &mut diags);
    // Facts only when the manifest uses them (reading them costs a few files).
    let uses_facts = docs.iter().any(|d| {
        ["facts", "template(", "module"]
            .iter()
            .any(|w| d.text.contains(w))
    });
    let facts = match (&options.facts, &options.snapshot) {
        _ if !uses_facts => None,
        (Some(given), _) => Some(given.clone()),
        (None, Some(snapshot)) => snapshot.facts.clone(),
        (None, None) => {
            let (facts, problems) = crate::facts::gather(options.facts_dir.as_deref());
            for p in problems {
                diags.error(None, format!("external facts: {p}"));
            }
            Some(facts)
        }
    };
    let data = layered_data(
        &mut docs,
        options,
        &base_dir,
        &values,
        facts.as_ref(),
        &mut diags,
    );
    let mut ev = super::expr::Evaluator::new(
        &values,
        Some(&base_dir),
        facts.as_ref(),
        data.as_ref().map(|d| &d.value),
    );
    if let Some(recorded) = options.snapshot.as_ref().and_then(|s| s.templates.clone()) {
        ev = ev.recorded(recorded, "");
    }

    let mut trusted_keys = Vec::new();
    let mut providers = BTreeMap::new();
    let mut policy: Option<super::policy::PolicyConfig> = None;
    for doc in &docs {
        if let Some(v) = doc.value.get("policy") {
            match &policy {
                Some(first) => diags.error(
                    Some(doc.spans.key("/policy")),
                    format!(
                        "`policy` is declared twice (first at {})",
                        first
                            .location
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    ),
                ),
                None => policy = Some(super::policy::parse(v, &doc.spans, &base_dir, &mut diags)),
            }
        }
    }
    let secret = |name: &str| decls.get(name).is_some_and(|d: &vars::VarDecl| d.sensitive);
    let none = Scope::none();
    for doc in &mut docs {
        // Every file of a manifest sits in `base_dir`.
        let dir = base_dir.clone();
        let Some(map) = doc.value.as_object_mut() else {
            continue;
        };
        if let Some(v) = map.get_mut("providers") {
            let mut ignored = Vec::new();
            vars::interpolate(
                v,
                "/providers",
                &doc.spans,
                (&ev, &none),
                &secret,
                &mut ignored,
                &mut diags,
            );
        }
        if let Some(v) = map.get("trust") {
            parse_trust(v, &doc.spans, &dir, &mut trusted_keys, &mut diags);
        }
        if let Some(v) = map.get("providers") {
            parse_providers(v, &doc.spans, &dir, &mut providers, &mut diags);
        }
    }

    // Resources, with the modules they call: each instance's expressions see its
    // `each`/`count`, and modules' outputs.
    let declared: std::collections::BTreeSet<String> = providers.keys().cloned().collect();
    let ctx = super::module::Context::new(
        &base_dir,
        options.snapshot.as_ref(),
        facts.as_ref(),
        data.as_ref().map(|d| &d.value),
        &declared,
    );
    let shown = match &options.snapshot {
        Some(_) => base_dir.clone(),
        None if path.is_dir() => path.to_path_buf(),
        None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let top = super::module::Level {
        prefix: String::new(),
        dir: base_dir.clone(),
        shown,
        ev: &ev,
        secret: &secret,
        providers: None,
        chain: Vec::new(),
    };
    let made = super::module::resources(&top, &docs, &ctx, &mut diags);
    let mut resources: Vec<ResourceDecl> = Vec::new();
    let mut seen_ids: BTreeMap<String, Location> = BTreeMap::new();
    let rejected_ids: std::collections::BTreeSet<String> = made.rejected.into_iter().collect();
    let mut excluded = BTreeMap::new();
    let mut excluded_resources = Vec::new();
    for (r, when) in made.parsed {
        if let Some(first) = seen_ids.get(&r.id).or_else(|| excluded.get(&r.id)) {
            diags.error(
                Some(r.location.clone()),
                format!(
                    "duplicate resource id `{}` (first declared at {first})",
                    r.id
                ),
            );
            continue;
        }
        if let Some(at) = when {
            excluded.insert(r.id.clone(), at);
            excluded_resources.push(r);
            continue;
        }
        seen_ids.insert(r.id.clone(), r.location.clone());
        resources.push(r);
    }

    // Templates are part of what the manifest says: a changed one is a changed manifest.
    let mut template_files = ev.templates();
    template_files.extend(ctx.templates());
    let mut read = template_files.clone();
    if let Some(d) = &data {
        read.extend(
            d.texts
                .iter()
                .map(|(k, v)| (format!("data:{k}"), v.clone())),
        );
    }
    // So are modules' files and the templates their instances rendered.
    let module_files = ctx.files.take();
    read.extend(
        module_files
            .iter()
            .map(|(k, v)| (format!("module:{k}"), v.clone())),
    );
    let sha256 = digest(&docs, &values, &read);
    let sources = docs
        .iter()
        .map(|d| (d.file.clone(), d.text.clone()))
        .collect();
    let manifest = Manifest {
        path: absolute(Path::new("."), path),
        base_dir,
        files,
        sources,
        sha256,
        sensitive_vars: decls
            .iter()
            .filter(|(_, d)| d.sensitive)
            .map(|(k, _)| k.clone())
            .collect(),
        vars: values,
        trusted_keys,
        providers,
        resources,
        rejected_ids,
        excluded,
        excluded_resources,
        facts,
        data,
        module_files,
        template_files,
        policy,
        artifact: options.artifact.clone(),
    };
    (manifest, diags)
}

/// The YAML files of a manifest (named as the operator named the manifest, so messages
/// show the paths they typed) and the absolute directory relative paths start from.
fn manifest_files(path: &Path, diags: &mut Diagnostics) -> (Vec<PathBuf>, PathBuf) {
    let abs = absolute(Path::new("."), path);
    if abs.is_dir() {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect(),
            Err(e) => {
                diags.error(
                    Some(Location::file(path)),
                    format!("cannot read directory: {e}"),
                );
                Vec::new()
            }
        };
        files.sort();
        if files.is_empty() && !diags.has_errors() {
            diags.error(
                Some(Location::file(path)),
                "no manifest here: the directory has no *.yaml or *.yml files",
            );
        }
        (files, abs)
    } else if abs.is_file() {
        let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
        (vec![path.to_path_buf()], dir)
    } else {
        diags.error(
            Some(Location::file(path)),
            "no such manifest file or directory",
        );
        (Vec::new(), abs)
    }
}

/// A `--var` value: `--var replicas=3` is a number and `--var debug=true` a boolean;
/// anything else is the string exactly as given.
pub fn typed_var(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => raw
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(raw.to_owned())),
    }
}

/// `base.join(p)`, made absolute and lexically normalised (`.` and `..` removed).
pub fn absolute(base: &Path, p: &Path) -> PathBuf {
    let joined = base.join(p);
    let abs = std::path::absolute(&joined).unwrap_or(joined);
    path_clean::clean(abs)
}

fn resolve_vars(
    decls: &BTreeMap<String, VarDecl>,
    options: &LoadOptions,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Value> {
    let mut given: BTreeMap<String, Value> = BTreeMap::new();
    for file in &options.values_files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                diags.error(
                    Some(Location::file(file)),
                    format!("cannot read values file: {e}"),
                );
                continue;
            }
        };
        match yaml::parse(file, &text) {
            Ok((Value::Object(map), spans)) => {
                for (k, v) in map {
                    vars::refuse_placeholders(
                        &v,
                        &format!("/{}", yaml::escape(&k)),
                        &spans,
                        &format!("the value of variable `{k}` in this values file"),
                        diags,
                    );
                    if !decls.contains_key(&k) {
                        diags.error(
                            Some(spans.key(&format!("/{k}"))),
                            format!("values file sets undeclared variable `{k}`"),
                        );
                    }
                    given.insert(k, v);
                }
            }
            Ok(_) => diags.error(
                Some(Location::file(file)),
                "a values file must be a mapping of variable names to values",
            ),
            Err(e) => diags.error(Some(e.location), e.message),
        }
    }
    if let Some(s) = &options.snapshot {
        given.extend(s.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for (k, raw) in &options.vars {
        if !decls.contains_key(k) {
            diags.error(None, format!("--var sets undeclared variable `{k}`"));
        }
        given.insert(k.clone(), typed_var(raw));
    }
    let mut out = BTreeMap::new();
    for (name, decl) in decls {
        match given.get(name).or(decl.default.as_ref()) {
            Some(v) => {
                out.insert(name.clone(), v.clone());
            }
            None => diags.error(
                Some(decl.location.clone()),
                format!(
                    "variable `{name}` has no default and no value: pass --var {name}=VALUE or a values file"
                ),
            ),
        }
    }
    out
}

fn digest(
    docs: &[Doc],
    vars: &BTreeMap<String, Value>,
    templates: &BTreeMap<String, String>,
) -> String {
    let mut h = Sha256::new();
    for doc in docs {
        let name = doc.file.file_name().map(|n| n.to_string_lossy());
        h.update(name.unwrap_or_default().as_bytes());
        h.update([0]);
        h.update(doc.text.as_bytes());
        h.update([0]);
    }
    for (name, text) in templates {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    h.update(serde_json::to_string(vars).unwrap_or_default().as_bytes());
    hex::encode(h.finalize())
}

/// Check that `value` at `pointer` is a mapping with only `allowed` keys.
pub(super) fn object<'a>(
    value: &'a Value,
    pointer: &str,
    spans: &Spans,
    what: &str,
    allowed: &[&str],
    diags: &mut Diagnostics,
) -> Option<&'a Map<String, Value>> {
    let Some(map) = value.as_object() else {
        diags.error(
            Some(spans.value(pointer)),
            format!("{what} must be a mapping, found {}", type_name(value)),
        );
        return None;
    };
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            let expected: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
            diags.error(
                Some(spans.key(&format!("{pointer}/{key}"))),
                format!(
                    "unknown field `{key}` in {what} (expected {})",
                    expected.join(", ")
                ),
            );
        }
    }
    Some(map)
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

pub(super) fn string<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    pointer: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<&'a str> {
    match map.get(key) {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            diags.error(
                Some(spans.value(&format!("{pointer}/{key}"))),
                format!(
                    "`{key}` of {what} must be a string, found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// A `true`/`false` at `key` (`default` when absent or null); anything else is an error
/// naming `key` and `what`.
fn boolean(
    map: &Map<String, Value>,
    key: &str,
    pointer: &str,
    spans: &Spans,
    what: &str,
    default: bool,
    diags: &mut Diagnostics,
) -> bool {
    match map.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            diags.error(
                Some(spans.value(&format!("{pointer}/{key}"))),
                format!(
                    "{key} of {what} must be true or false, found {}",
                    type_name(other)
                ),
            );
            default
        }
    }
}

/// A string at `key` that is one of two names: `false` for `off` (also when absent),
/// `true` for `on`. `label` names the field in the error.
#[allow(clippy::too_many_arguments)]
fn either(
    map: &Map<String, Value>,
    key: &str,
    pointer: &str,
    spans: &Spans,
    what: &str,
    (off, on): (&str, &str),
    label: &str,
    diags: &mut Diagnostics,
) -> bool {
    match string(map, key, pointer, spans, what, diags) {
        None => false,
        Some(v) if v == off => false,
        Some(v) if v == on => true,
        Some(other) => {
            diags.error(
                Some(spans.value(&format!("{pointer}/{key}"))),
                format!("{label} must be `{off}` (the default) or `{on}`, found `{other}`"),
            );
            false
        }
    }
}

fn parse_providers(
    value: &Value,
    spans: &Spans,
    dir: &Path,
    out: &mut BTreeMap<String, ProviderDecl>,
    diags: &mut Diagnostics,
) {
    let Some(map) = value.as_object() else {
        diags.error(
            Some(spans.value("/providers")),
            format!(
                "`providers` must be a mapping of provider names to declarations, found {}",
                type_name(value)
            ),
        );
        return;
    };
    for (name, decl) in map {
        let pointer = format!("/providers/{name}");
        let location = spans.key(&pointer);
        if !vars::valid_name(name) {
            diags.error(
                Some(location.clone()),
                format!("invalid provider name `{name}`: use letters, digits, `_` and `-`"),
            );
        }
        if let Some(prev) = out.get(name) {
            diags.error(
                Some(location),
                format!(
                    "provider `{name}` is declared twice (first at {})",
                    prev.location
                ),
            );
            continue;
        }
        let what = format!("provider `{name}`");
        let empty = Map::new();
        let fields = if decl.is_null() {
            Some(&empty)
        } else {
            object(
                decl,
                &pointer,
                spans,
                &what,
                &[
                    "source",
                    "grants",
                    "limits",
                    "max_concurrency",
                    "consistency_check",
                    "unsigned",
                    "retry",
                ],
                diags,
            )
        };
        let Some(fields) = fields else { continue };
        let source_text = string(fields, "source", &pointer, spans, &what, diags);
        let source_location = source_text.map(|_| spans.value(&format!("{pointer}/source")));
        let source = match source_text {
            None => ProviderSource::Builtin(name.clone()),
            // Its syntax is distribution's to judge (`session::check_sources`).
            Some(s) if s.starts_with("oci://") => ProviderSource::Oci(s.to_owned()),
            Some(s) => match s.strip_prefix("builtin:") {
                Some(b) => ProviderSource::Builtin(b.to_owned()),
                None => ProviderSource::Path(absolute(dir, Path::new(s))),
            },
        };
        let unsigned = boolean(fields, "unsigned", &pointer, spans, &what, false, diags);
        if unsigned && !matches!(source, ProviderSource::Path(_)) {
            diags.error(
                Some(spans.value(&format!("{pointer}/unsigned"))),
                format!("unsigned: true is only for providers loaded from a local path; {what} comes from `{source}`"),
            );
        }
        let grants = fields
            .get("grants")
            .map(|g| parse_grants(g, &format!("{pointer}/grants"), spans, &what, dir, diags))
            .unwrap_or_default();
        let limits = fields
            .get("limits")
            .map(|l| parse_limits(l, &format!("{pointer}/limits"), spans, &what, diags))
            .unwrap_or_default();
        let max_concurrency = match fields.get("max_concurrency") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().filter(|n| *n >= 1) {
                Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                None => {
                    diags.error(
                        Some(spans.value(&format!("{pointer}/max_concurrency"))),
                        format!("max_concurrency of {what} must be a whole number of at least 1, found {v}"),
                    );
                    None
                }
            },
        };
        let consistency_check = boolean(
            fields,
            "consistency_check",
            &pointer,
            spans,
            &what,
            true,
            diags,
        );
        let retry = fields
            .get("retry")
            .filter(|v| !v.is_null())
            .and_then(|v| orchestrate::retry(v, &format!("{pointer}/retry"), spans, &what, diags));
        out.insert(
            name.clone(),
            ProviderDecl {
                name: name.clone(),
                source,
                grants,
                limits,
                max_concurrency,
                consistency_check,
                unsigned,
                retry,
                location,
                source_location,
            },
        );
    }
}

/// `trust:` — a list of minisign public keys, each `key: RWQ…` or `file: path.pub`, with
/// an optional `name`.
fn parse_trust(
    value: &Value,
    spans: &Spans,
    dir: &Path,
    out: &mut Vec<TrustedKey>,
    diags: &mut Diagnostics,
) {
    let Some(items) = value.as_array() else {
        diags.error(
            Some(spans.value("/trust")),
            format!(
                "`trust` must be a list of public keys (`- key: RWQ…` or `- file: keys/release.pub`), found {}",
                type_name(value)
            ),
        );
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let pointer = format!("/trust/{i}");
        let what = format!("trusted key #{}", i + 1);
        let Some(fields) = object(
            item,
            &pointer,
            spans,
            &what,
            &["key", "file", "name"],
            diags,
        ) else {
            continue;
        };
        let location = spans.value(&pointer);
        let name = string(fields, "name", &pointer, spans, &what, diags).map(str::to_owned);
        let mut file = None;
        let (text, origin, at) = match (
            string(fields, "key", &pointer, spans, &what, diags),
            string(fields, "file", &pointer, spans, &what, diags),
        ) {
            (Some(k), None) => (k.to_owned(), None, format!("{pointer}/key")),
            (None, Some(f)) => {
                let path = absolute(dir, Path::new(f));
                match std::fs::read_to_string(&path) {
                    Ok(t) => {
                        file = Some(path);
                        (t, Some(f.to_owned()), format!("{pointer}/file"))
                    }
                    Err(e) => {
                        diags.error(
                            Some(spans.value(&format!("{pointer}/file"))),
                            format!("{what}: cannot read {}: {e}", path.display()),
                        );
                        continue;
                    }
                }
            }
            _ => {
                diags.error(
                    Some(location),
                    format!("{what} needs exactly one of `key` (the public key) or `file` (a minisign .pub file)"),
                );
                continue;
            }
        };
        match super::trust::parse_public_key(&text) {
            Ok((id, public_key)) => {
                if out.iter().any(|k| k.id == id) {
                    continue;
                }
                out.push(TrustedKey {
                    name: name.or(origin).unwrap_or_else(|| id.clone()),
                    id,
                    public_key,
                    location,
                    file,
                });
            }
            Err(e) => diags.error(Some(spans.value(&at)), format!("{what}: {e}")),
        }
    }
}

fn parse_grants(
    value: &Value,
    pointer: &str,
    spans: &Spans,
    what: &str,
    dir: &Path,
    diags: &mut Diagnostics,
) -> Grants {
    let mut grants = Grants::default();
    let Some(map) = object(
        value,
        pointer,
        spans,
        &format!("grants of {what}"),
        &["fs", "exec", "net", "env"],
        diags,
    ) else {
        return grants;
    };
    let mut exec_at = Vec::new();
    let list = |key: &str, example: &str, diags: &mut Diagnostics| -> &[Value] {
        match map.get(key) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => items,
            Some(_) => {
                diags.error(
                    Some(spans.value(&format!("{pointer}/{key}"))),
                    format!("`{key}` grants of {what} must be a list like `{example}`"),
                );
                &[]
            }
        }
    };
    for (i, item) in list(
        "exec",
        "[{program: /usr/bin/systemctl, args: [[status, \"*\"]]}]",
        diags,
    )
    .iter()
    .enumerate()
    {
        if let Some(g) = parse_exec_grant(item, &format!("{pointer}/exec/{i}"), spans, what, diags)
        {
            grants.exec.push(g);
            exec_at.push(spans.value(&format!("{pointer}/exec/{i}/program")));
        }
    }
    for (i, item) in list("net", "[https://api.example.com]", diags)
        .iter()
        .enumerate()
    {
        let p = format!("{pointer}/net/{i}");
        if item.is_object() {
            if let Some(g) = credentials::parse_grant(item, &p, spans, what, dir, diags) {
                grants.net.push(g);
            }
            continue;
        }
        match item.as_str().map(NetGrant::parse) {
            Some(Ok(g)) => grants.net.push(g),
            Some(Err(message)) => diags.error(Some(spans.value(&p)), format!("net grant of {what}: {message}")),
            None => diags.error(
                Some(spans.value(&p)),
                format!("a net grant of {what} must be a string like `https://api.example.com`, found {}", type_name(item)),
            ),
        }
    }
    for (i, item) in list("env", "[HOME, LANG]", diags).iter().enumerate() {
        let p = format!("{pointer}/env/{i}");
        match item.as_str() {
            Some(name) if !name.is_empty() && !name.contains(['=', '\0']) => {
                grants.env.push(name.to_owned())
            }
            _ => diags.error(
                Some(spans.value(&p)),
                format!("an env grant of {what} must be a variable name like `LANG`, found {item}"),
            ),
        }
    }
    for (i, item) in list("fs", "[{path: ./out, access: rw}]", diags)
        .iter()
        .enumerate()
    {
        let p = format!("{pointer}/fs/{i}");
        let Some(m) = object(item, &p, spans, "an fs grant", &["path", "access"], diags) else {
            continue;
        };
        let path = string(m, "path", &p, spans, "an fs grant", diags);
        let access = match string(m, "access", &p, spans, "an fs grant", diags) {
            None | Some("ro") => Some(Access::ReadOnly),
            Some("rw") => Some(Access::ReadWrite),
            Some(other) => {
                diags.error(
                    Some(spans.value(&format!("{p}/access"))),
                    format!("fs grant access must be `ro` or `rw`, found `{other}`"),
                );
                None
            }
        };
        if let Some(problem) = path.and_then(super::control_characters) {
            diags.error(
                Some(spans.value(&format!("{p}/path"))),
                format!("an fs grant of {what}: {problem}"),
            );
            continue;
        }
        match (path, access) {
            (Some(path), Some(access)) => grants.fs.push(FsGrant {
                path: absolute(dir, Path::new(path)),
                access,
                location: Some(spans.value(&format!("{p}/path"))),
            }),
            (None, _) => diags.error(
                Some(spans.value(&p)),
                format!("an fs grant of {what} needs a `path`"),
            ),
            _ => {}
        }
    }
    // WASI cannot carve a read-only hole out of a writable preopen: the outer grant would
    // still reach the inner directory. Refuse instead of pretending.
    for inner in &grants.fs {
        for outer in &grants.fs {
            if inner.path != outer.path
                && inner.path.starts_with(&outer.path)
                && inner.access == Access::ReadOnly
                && outer.access == Access::ReadWrite
            {
                diags.error(
                    Some(spans.value(&format!("{pointer}/fs"))),
                    format!(
                        "{what}: read-only grant {} lies inside read-write grant {}, which cannot be enforced; grant the read-write directories separately",
                        inner.path.display(),
                        outer.path.display()
                    ),
                );
            }
        }
    }
    // A program the provider could rewrite during apply is code execution outside the
    // sandbox, whatever the argument patterns say.
    for (e, at) in grants.exec.iter().zip(&exec_at) {
        if let Some(rw) = grants
            .fs
            .iter()
            .find(|g| g.access == Access::ReadWrite && e.program.starts_with(&g.path))
        {
            diags.error(
                Some(at.clone()),
                format!(
                    "{what}: granted program {} lies inside read-write grant {}, so the provider could replace it; grant a program outside its writable directories",
                    e.program.display(),
                    rw.path.display()
                ),
            );
        }
    }
    grants
}

fn parse_exec_grant(
    item: &Value,
    p: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<ExecGrant> {
    let m = object(
        item,
        p,
        spans,
        "an exec grant",
        &["program", "args", "mode"],
        diags,
    )?;
    let program = string(m, "program", p, spans, "an exec grant", diags);
    let probe = either(
        m,
        "mode",
        p,
        spans,
        "an exec grant",
        ("apply", "probe"),
        "exec grant mode",
        diags,
    );
    let mut args = Vec::new();
    let bad_args = |diags: &mut Diagnostics| {
        diags.error(
            Some(spans.value(&format!("{p}/args"))),
            format!(
                "`args` of an exec grant of {what} must be a list of argument lists of glob patterns, like `[[status, \"*\"], [--version]]`"
            ),
        );
    };
    match m.get("args") {
        None | Some(Value::Null) => {}
        Some(Value::Array(lists)) => {
            for list in lists {
                let patterns: Option<Vec<String>> = list
                    .as_array()
                    .and_then(|l| l.iter().map(|a| a.as_str().map(str::to_owned)).collect());
                match patterns {
                    Some(patterns) => {
                        if let Some(bad) =
                            patterns.iter().find(|pat| globset::Glob::new(pat).is_err())
                        {
                            diags.error(
                                Some(spans.value(&format!("{p}/args"))),
                                format!(
                                    "invalid argument pattern `{bad}` in an exec grant of {what}"
                                ),
                            );
                        }
                        args.push(patterns);
                    }
                    None => {
                        bad_args(diags);
                        break;
                    }
                }
            }
        }
        Some(_) => bad_args(diags),
    }
    if let Some(problem) = program.and_then(super::control_characters) {
        diags.error(
            Some(spans.value(&format!("{p}/program"))),
            format!("exec grant program of {what}: {problem}"),
        );
        return None;
    }
    match program {
        Some(program) if Path::new(program).is_absolute() => Some(ExecGrant {
            program: PathBuf::from(program),
            args,
            probe,
        }),
        Some(program) => {
            diags.error(
                Some(spans.value(&format!("{p}/program"))),
                format!("exec grant program of {what} must be an absolute path (like `/usr/bin/systemctl`), found `{program}`"),
            );
            None
        }
        None => {
            diags.error(
                Some(spans.value(p)),
                format!("an exec grant of {what} needs a `program`"),
            );
            None
        }
    }
}

/// A size like `1MiB` (or a plain number of bytes) at `key`, if present and valid.
fn size(
    map: &Map<String, Value>,
    key: &str,
    pointer: &str,
    spans: &Spans,
    diags: &mut Diagnostics,
) -> Option<u64> {
    let at = || Some(spans.value(&format!("{pointer}/{key}")));
    match map.get(key) {
        None => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(Value::String(s)) => match s.parse::<bytesize::ByteSize>() {
            Ok(b) => Some(b.as_u64()),
            Err(e) => {
                diags.error(
                    at(),
                    format!("invalid {key} limit `{s}` (e.g. `256MiB`): {e}"),
                );
                None
            }
        },
        Some(other) => {
            diags.error(
                at(),
                format!(
                    "{key} limit must be a size like `256MiB`, found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

fn parse_limits(
    value: &Value,
    pointer: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> Limits {
    let mut limits = Limits::default();
    let Some(map) = object(
        value,
        pointer,
        spans,
        &format!("limits of {what}"),
        &["memory", "memory_total", "timeout", "output", "log_lines"],
        diags,
    ) else {
        return limits;
    };
    if let Some(b) = size(map, "memory", pointer, spans, diags) {
        limits.memory_bytes = b;
    }
    match size(map, "memory_total", pointer, spans, diags) {
        Some(b) => limits.memory_total_bytes = b,
        // Raising one instance's cap raises the budget with it (four such instances).
        None => {
            limits.memory_total_bytes = limits
                .memory_total_bytes
                .max(limits.memory_bytes.saturating_mul(4));
        }
    }
    if limits.memory_total_bytes < limits.memory_bytes {
        diags.error(
            Some(spans.value(&format!("{pointer}/memory_total"))),
            format!(
                "memory_total ({}) must be at least memory ({}): it is the budget of all the provider's instances together",
                bytesize::ByteSize(limits.memory_total_bytes),
                bytesize::ByteSize(limits.memory_bytes)
            ),
        );
    }
    if let Some(b) = size(map, "output", pointer, spans, diags) {
        if (1..=MAX_OUTPUT_LIMIT).contains(&b) {
            limits.output_bytes = b;
        } else {
            diags.error(
                Some(spans.value(&format!("{pointer}/output"))),
                format!(
                    "output limit must be between 1 byte and {}",
                    bytesize::ByteSize(MAX_OUTPUT_LIMIT)
                ),
            );
        }
    }
    match map.get("log_lines") {
        None => {}
        Some(v) => match v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_LOG_LINES).contains(n))
        {
            Some(n) => limits.log_lines = n,
            None => diags.error(
                Some(spans.value(&format!("{pointer}/log_lines"))),
                format!("log_lines must be a whole number from 1 to {MAX_LOG_LINES}, found {v}"),
            ),
        },
    }
    if let Some(t) = string(map, "timeout", pointer, spans, "limits", diags) {
        match humantime::parse_duration(t) {
            Ok(d) if !d.is_zero() => limits.call_timeout = d,
            Ok(_) => diags.error(
                Some(spans.value(&format!("{pointer}/timeout"))),
                "timeout must be longer than zero",
            ),
            Err(e) => diags.error(
                Some(spans.value(&format!("{pointer}/timeout"))),
                format!("invalid timeout `{t}` (e.g. `30s`): {e}"),
            ),
        }
    }
    limits
}

/// A list of resource ids (`depends_on`, `notify`) at `key`.
pub(super) fn id_list(
    map: &Map<String, Value>,
    key: &str,
    pointer: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> Vec<Dependency> {
    let mut out = Vec::new();
    match map.get(key) {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) => {
            for (j, d) in ids.iter().enumerate() {
                let loc = spans.value(&format!("{pointer}/{key}/{j}"));
                match d.as_str() {
                    Some(id) => out.push(Dependency {
                        id: id.to_owned(),
                        location: loc,
                    }),
                    None => diags.error(
                        Some(loc),
                        format!("{key} entries must be resource ids, found {}", type_name(d)),
                    ),
                }
            }
        }
        Some(other) => diags.error(
            Some(spans.value(&format!("{pointer}/{key}"))),
            format!(
                "{key} of {what} must be a list of resource ids, found {}",
                type_name(other)
            ),
        ),
    }
    out
}

/// The resources that parsed — each with where its `when:` is when that condition is
/// false (it is left out) — and the ids of those that did not parse.
pub(super) fn parse_resources(
    value: &Value,
    entries: &[Entry],
    spans: &Spans,
    dir: &Path,
    prefix: &str,
    derived: &[String],
    diags: &mut Diagnostics,
) -> (Vec<(ResourceDecl, Option<Location>)>, Vec<String>) {
    let Some(_) = value.as_array() else {
        diags.error(
            Some(spans.value("/resources")),
            format!(
                "`resources` must be a list of resources, found {}",
                type_name(value)
            ),
        );
        return (Vec::new(), Vec::new());
    };
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    for entry in entries {
        let pointer = entry.pointer.clone();
        let location = spans.value(&pointer);
        let Some(map) = object(
            &entry.value,
            &pointer,
            spans,
            "a resource",
            &[
                "id",
                "type",
                "properties",
                "depends_on",
                "notify",
                "lifecycle",
                "on_remove",
                "sensitive",
                "locks",
                "when",
                "for_each",
                "count",
                "labels",
                "retry",
                "timeout",
                "on_failure",
                "serial",
                "max_failures",
            ],
            diags,
        ) else {
            continue;
        };
        let base = string(map, "id", &pointer, spans, "a resource", diags);
        // An instance of `for_each` / `count` is `id[key]`.
        let instance = base.map(|b| match &entry.key {
            Some(k) => format!("{prefix}{b}[{k}]"),
            None => format!("{prefix}{b}"),
        });
        let id = instance.as_deref();
        let what = match id {
            Some(id) => format!("resource `{id}`"),
            None => "a resource".to_owned(),
        };
        if map.get("id").is_none() {
            diags.error(Some(location.clone()), "resource has no `id`");
        }
        // False once an error makes further checks of this resource meaningless.
        let mut sound = true;
        if let Some(id) = base
            && !valid_id(id)
        {
            sound = false;
            diags.error(
                Some(spans.value(&format!("{pointer}/id"))),
                format!(
                    "invalid resource id `{id}`: use letters, digits, `_`, `-` and `.`, starting with a letter or digit"
                ),
            );
        }
        let type_str = string(map, "type", &pointer, spans, &what, diags);
        if map.get("type").is_none() {
            diags.error(
                Some(location.clone()),
                format!("{what} has no `type` (e.g. `file.file`)"),
            );
        }
        let split = type_str.and_then(|t| {
            let parts = t.split_once('.');
            if parts.is_none_or(|(p, k)| p.is_empty() || k.is_empty()) {
                diags.error(
                    Some(spans.value(&format!("{pointer}/type"))),
                    format!("invalid type `{t}`: expected `<provider>.<kind>`, e.g. `file.file`"),
                );
            }
            parts
        });
        let properties = match map.get("properties") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(other) => {
                sound = false;
                diags.error(
                    Some(spans.value(&format!("{pointer}/properties"))),
                    format!(
                        "properties of {what} must be a mapping, found {}",
                        type_name(other)
                    ),
                );
                Value::Object(Map::new())
            }
        };
        // Ids at this level: inside a module instance, its own resources.
        let local = |mut list: Vec<Dependency>| {
            if !prefix.is_empty() {
                for d in &mut list {
                    d.id.insert_str(0, prefix);
                }
            }
            list
        };
        let depends_on = local(id_list(map, "depends_on", &pointer, spans, &what, diags));
        let notify = local(id_list(map, "notify", &pointer, spans, &what, diags));
        let on_failure = local(id_list(map, "on_failure", &pointer, spans, &what, diags));
        let retry = map
            .get("retry")
            .filter(|v| !v.is_null())
            .and_then(|v| orchestrate::retry(v, &format!("{pointer}/retry"), spans, &what, diags));
        let timeout = orchestrate::timeout(map, &pointer, spans, &what, diags);
        let serial = orchestrate::serial(map, &pointer, spans, &what, entry.key.is_some(), diags);
        let mut prevent_destroy = false;
        if let Some(lifecycle) = map.get("lifecycle") {
            let lp = format!("{pointer}/lifecycle");
            if let Some(l) = object(
                lifecycle,
                &lp,
                spans,
                &format!("lifecycle of {what}"),
                &["prevent_destroy"],
                diags,
            ) {
                prevent_destroy = boolean(l, "prevent_destroy", &lp, spans, &what, false, diags);
            }
        }
        let sensitive = match map.get("sensitive") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Vec::new(),
            Some(Value::Bool(true)) => vec!["*".to_owned()],
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(other) => {
                diags.error(
                    Some(spans.value(&format!("{pointer}/sensitive"))),
                    format!(
                        "sensitive of {what} must be true or a list of property names, found {}",
                        type_name(other)
                    ),
                );
                Vec::new()
            }
        };
        let locks = lock_list(map, &pointer, spans, &what, diags);
        let labels = label_map(map, &pointer, spans, &what, diags);
        // `when:` was evaluated with the rest: a bool, or a mistake to report.
        let excluded_at = match map.get("when") {
            None | Some(Value::Bool(true)) => None,
            Some(Value::Bool(false)) => Some(spans.value(&format!("{pointer}/when"))),
            Some(other) => {
                sound = false;
                diags.error(
                    Some(spans.value(&format!("{pointer}/when"))),
                    format!(
                        "when of {what} must be true or false (an expression such as `${{ var.env == \"prod\" }}`), found {}",
                        type_name(other)
                    ),
                );
                None
            }
        };
        let forget_on_remove = either(
            map,
            "on_remove",
            &pointer,
            spans,
            &what,
            ("delete", "forget"),
            "on_remove",
            diags,
        );
        let (true, Some(id), Some(t), Some((provider, kind))) = (sound, id, type_str, split) else {
            rejected.extend(id.map(str::to_owned));
            continue;
        };
        // Top-level properties whose expressions read a sensitive variable.
        let props_at = format!("{pointer}/properties/");
        let whole = [pointer.clone(), format!("{pointer}/properties")];
        let mut sensitive_from_vars: Vec<String> = derived
            .iter()
            .filter_map(|p| p.strip_prefix(&props_at))
            .map(|rest| yaml::unescape(rest.split('/').next().unwrap_or(rest)))
            .collect();
        // The properties (or the whole resource) as one expression over a secret.
        if derived.iter().any(|p| whole.contains(p)) {
            sensitive_from_vars.extend(
                properties
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.keys().cloned()),
            );
        }
        sensitive_from_vars.sort();
        sensitive_from_vars.dedup();
        out.push((
            ResourceDecl {
                id: id.to_owned(),
                type_name: t.to_owned(),
                provider: provider.to_owned(),
                kind: kind.to_owned(),
                properties,
                depends_on,
                notify,
                prevent_destroy,
                forget_on_remove,
                sensitive,
                sensitive_from_vars,
                locks,
                labels,
                retry,
                timeout,
                on_failure,
                rolling: serial
                    .zip(base)
                    .map(|((serial, max_failures), b)| orchestrate::Rolling {
                        group: format!("{prefix}{b}"),
                        position: 0,
                        serial,
                        max_failures,
                    }),
                location,
                type_location: Some(spans.value(&format!("{pointer}/type"))),
                spans: spans.subtree(&format!("{pointer}/properties")),
                base_dir: dir.to_path_buf(),
                declared_in: dir.to_path_buf(),
            },
            excluded_at,
        ));
    }
    // A rolling group's members, numbered in instance order.
    let mut next: BTreeMap<String, usize> = BTreeMap::new();
    for (r, _) in &mut out {
        if let Some(g) = &mut r.rolling {
            let n = next.entry(g.group.clone()).or_default();
            g.position = *n;
            *n += 1;
        }
    }
    (out, rejected)
}

/// One resource of a manifest file after `for_each` / `count`: where it is written
/// (every instance points at its resource's entry), its document with expressions
/// evaluated, and its instance key.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) pointer: String,
    pub(super) value: Value,
    pub(super) key: Option<String>,
}

/// The `data:` hierarchy (declared once, in any file of the manifest): its paths
/// evaluated with `var` and `facts`, its layers read — or, for a rollback, the data the
/// recorded run saw.
fn layered_data(
    docs: &mut [Doc],
    options: &LoadOptions,
    base_dir: &Path,
    values: &BTreeMap<String, Value>,
    facts: Option<&Value>,
    diags: &mut Diagnostics,
) -> Option<super::data::Data> {
    let mut declared: Option<Location> = None;
    let mut out = None;
    let ev = super::expr::Evaluator::new(values, None, facts, None);
    let none = Scope::none();
    for doc in docs.iter_mut() {
        let Some(decl) = doc.value.as_object_mut().and_then(|m| m.get_mut("data")) else {
            continue;
        };
        let here = doc.spans.key("/data");
        if let Some(first) = &declared {
            diags.error(
                Some(here),
                format!("`data` is declared twice (first at {first})"),
            );
            continue;
        }
        declared = Some(here);
        if let Some(recorded) = options.snapshot.as_ref().and_then(|s| s.data.clone()) {
            out = Some(super::data::Data {
                value: recorded,
                ..super::data::Data::default()
            });
            continue;
        }
        let mut ignored = Vec::new();
        vars::interpolate(
            decl,
            "/data",
            &doc.spans,
            (&ev, &none),
            &|_| false,
            &mut ignored,
            diags,
        );
        out = Some(super::data::load(
            decl, "/data", &doc.spans, base_dir, diags,
        ));
    }
    out
}

/// `depends_on: [web]` and `notify: [web]` where `web` has `for_each` / `count`
/// instances, or is a module call, mean every instance (`web[a]`, `web[b]`, …) and every
/// resource of the module (`web.conf`, `web[a].conf`, …). `bases` are such ids.
pub(super) fn depend_on_instances(
    resources: &mut [(ResourceDecl, Option<Location>)],
    bases: &std::collections::BTreeSet<String>,
) {
    if bases.is_empty() {
        return;
    }
    let declared: std::collections::BTreeSet<String> =
        resources.iter().map(|(r, _)| r.id.clone()).collect();
    let mut instances: BTreeMap<String, Vec<String>> =
        bases.iter().map(|b| (b.clone(), Vec::new())).collect();
    for (r, when) in resources.iter() {
        if when.is_some() {
            continue;
        }
        // The longest base the id starts with, followed by `[` or `.`.
        let mut cut = r.id.len();
        while let Some(at) = r.id[..cut].rfind(['[', '.']) {
            if let Some(all) = instances.get_mut(&r.id[..at]) {
                all.push(r.id.clone());
                break;
            }
            cut = at;
        }
    }
    let widen = |list: &mut Vec<super::Dependency>| {
        let mut out = Vec::with_capacity(list.len());
        for d in list.drain(..) {
            match instances.get(&d.id).filter(|_| !declared.contains(&d.id)) {
                Some(all) => out.extend(all.iter().map(|id| super::Dependency {
                    id: id.clone(),
                    location: d.location.clone(),
                })),
                None => out.push(d),
            }
        }
        *list = out;
    };
    for (r, _) in resources.iter_mut() {
        widen(&mut r.depends_on);
        widen(&mut r.notify);
    }
}

/// Most instances one `for_each` or `count` makes.
pub const MAX_INSTANCES: usize = 100_000;

/// Expand `for_each` and `count` and evaluate every entry's expressions, each instance
/// with its own `each` / `count`. Problems go to `diags` at their place; an entry whose
/// loop cannot be evaluated makes no instance.
#[allow(clippy::too_many_arguments)]
pub(super) fn expand(
    resources: &Value,
    spans: &Spans,
    ev: &super::expr::Evaluator,
    secret: &dyn Fn(&str) -> bool,
    (none, prefix): (&Scope, &str),
    pick: &dyn Fn(usize, &Value) -> bool,
    derived: &mut Vec<String>,
    diags: &mut Diagnostics,
) -> Vec<Entry> {
    let Some(items) = resources.as_array() else {
        return Vec::new();
    };
    let eval = Evaluation { spans, ev, secret };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if !pick(i, item) {
            continue;
        }
        let pointer = format!("/resources/{i}");
        let mut item = item.clone();
        let (for_each, count) = match item.as_object_mut() {
            Some(m) => (m.remove("for_each"), m.remove("count")),
            None => (None, None),
        };
        let noun = if item.get("module").is_some() {
            "module"
        } else {
            "resource"
        };
        let what = match item.get("id").and_then(Value::as_str) {
            Some(id) => format!("{noun} `{prefix}{id}`"),
            None => format!("a {noun}"),
        };
        // The loop's own expression, evaluated without `each`.
        let looped = |key: &str, v: Value, diags: &mut Diagnostics| -> Option<Value> {
            let mut v = v;
            let at = format!("{pointer}/{key}");
            let before = diags.len();
            let mut sensitive = Vec::new();
            eval.value(&mut v, &at, none, &mut sensitive, &what, diags);
            if !sensitive.is_empty() {
                // Keys become instance ids: in plans, the state and every message.
                diags.error(
                    Some(spans.value(&at)),
                    format!(
                        "{key} of {what} reads a sensitive variable: its keys would become instance ids (`id[key]`) shown everywhere; loop over something that is not secret"
                    ),
                );
            }
            (diags.len() == before).then_some(v)
        };
        let instances: Vec<(String, super::expr::Scope)> = match (for_each, count) {
            (None, None) => {
                eval.resource(&mut item, &pointer, none, derived, &what, diags);
                out.push(Entry {
                    pointer,
                    value: item,
                    key: None,
                });
                continue;
            }
            (Some(_), Some(_)) => {
                diags.error(
                    Some(spans.key(&format!("{pointer}/count"))),
                    format!("{what} has both `for_each` and `count`: choose one"),
                );
                continue;
            }
            (Some(fe), None) => {
                let Some(fe) = looped("for_each", fe, diags) else {
                    continue;
                };
                let at = spans.value(&format!("{pointer}/for_each"));
                let pairs: Vec<(String, Value)> = match fe {
                    Value::Object(m) => m.into_iter().collect(),
                    Value::Array(items) => {
                        let mut pairs = Vec::new();
                        for v in items {
                            match &v {
                                Value::String(s) => pairs.push((s.clone(), v.clone())),
                                Value::Number(n) => pairs.push((n.to_string(), v.clone())),
                                other => {
                                    diags.error(
                                        Some(at.clone()),
                                        format!(
                                            "for_each of {what}: a list's elements are the instances' keys, so they must be strings or numbers, found {} (use a map to give each element a key)",
                                            type_name(other)
                                        ),
                                    );
                                    pairs.clear();
                                    break;
                                }
                            }
                        }
                        pairs
                    }
                    other => {
                        diags.error(
                            Some(at),
                            format!(
                                "for_each of {what} must be a list or a map, found {}",
                                type_name(&other)
                            ),
                        );
                        continue;
                    }
                };
                let mut seen = std::collections::BTreeSet::new();
                let mut scopes = Vec::new();
                for (key, value) in pairs {
                    if !seen.insert(key.clone()) {
                        diags.error(
                            Some(at.clone()),
                            format!("for_each of {what} has the key `{key}` twice: instance keys must be unique"),
                        );
                        continue;
                    }
                    if key.is_empty() || key.contains([']', '[', '\n']) {
                        diags.error(
                            Some(at.clone()),
                            format!("for_each of {what}: `{}` cannot be an instance key (empty, or with `[`, `]` or a newline)", key.escape_debug()),
                        );
                        continue;
                    }
                    let scope = Scope::each(&key, &value).and(none);
                    scopes.push((key, scope));
                }
                scopes
            }
            (None, Some(c)) => {
                let Some(c) = looped("count", c, diags) else {
                    continue;
                };
                let Some(n) = c.as_u64().filter(|n| *n as usize <= MAX_INSTANCES) else {
                    diags.error(
                        Some(spans.value(&format!("{pointer}/count"))),
                        format!("count of {what} must be a whole number from 0 to {MAX_INSTANCES}, found {c}"),
                    );
                    continue;
                };
                (0..n)
                    .map(|i| (i.to_string(), Scope::count(i).and(none)))
                    .collect()
            }
        };
        if instances.len() > MAX_INSTANCES {
            diags.error(
                Some(spans.value(&pointer)),
                format!(
                    "{what} makes {} instances, over the limit of {MAX_INSTANCES}",
                    instances.len()
                ),
            );
            continue;
        }
        for (key, scope) in instances {
            let mut value = item.clone();
            let what = match item.get("id").and_then(Value::as_str) {
                Some(id) => format!("{noun} `{prefix}{id}[{key}]`"),
                None => what.clone(),
            };
            eval.resource(&mut value, &pointer, &scope, derived, &what, diags);
            out.push(Entry {
                pointer: pointer.clone(),
                value,
                key: Some(key),
            });
        }
    }
    out
}

/// What evaluating one file's resources needs throughout: where its values are
/// written, the evaluator, and which variables are sensitive.
struct Evaluation<'a> {
    spans: &'a Spans,
    ev: &'a super::expr::Evaluator,
    secret: &'a dyn Fn(&str) -> bool,
}

impl Evaluation<'_> {
    /// Evaluate one resource entry, `when:` first: a resource whose condition is false
    /// is not evaluated further (its properties may name what exists only where it
    /// applies), and is kept with its condition and without properties, to be left out.
    fn resource(
        &self,
        item: &mut Value,
        pointer: &str,
        scope: &Scope,
        derived: &mut Vec<String>,
        what: &str,
        diags: &mut Diagnostics,
    ) {
        if let Some(when) = item.get_mut("when") {
            let at = format!("{pointer}/when");
            self.value(when, &at, scope, &mut Vec::new(), what, diags);
            if *when == Value::Bool(false) {
                if let Some(m) = item.as_object_mut() {
                    m.remove("properties");
                }
                return;
            }
        }
        self.value(item, pointer, scope, derived, what, diags);
    }

    /// [`vars::interpolate`] for one resource: its problems name it (`resource `web``:
    /// …), so an error inside a template says which resource used it.
    fn value(
        &self,
        value: &mut Value,
        pointer: &str,
        scope: &Scope,
        derived: &mut Vec<String>,
        what: &str,
        diags: &mut Diagnostics,
    ) {
        let mut found = Diagnostics::new();
        let eval = (self.ev, scope);
        vars::interpolate(
            value,
            pointer,
            self.spans,
            eval,
            self.secret,
            derived,
            &mut found,
        );
        for d in found.iter() {
            diags.error(d.location.clone(), format!("{what}: {}", d.message));
        }
    }
}

/// `labels: {owner: team-db}`: metadata for policies (and people), never sent to
/// providers. Keys and values are strings.
fn label_map(
    map: &Map<String, Value>,
    pointer: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let at = format!("{pointer}/labels");
    let mut out = BTreeMap::new();
    match map.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::Number(_) | Value::Bool(_) => {
                        out.insert(k.clone(), v.to_string());
                    }
                    other => diags.error(
                        Some(spans.value(&format!("{at}/{}", yaml::escape(k)))),
                        format!(
                            "label `{k}` of {what} must be a string, found {}",
                            type_name(other)
                        ),
                    ),
                }
            }
        }
        Some(other) => diags.error(
            Some(spans.value(&at)),
            format!(
                "labels of {what} must be a mapping of names to strings, found {}",
                type_name(other)
            ),
        ),
    }
    out
}

/// `locks: [name, …]`: named locks the resource holds while it runs; every bad name
/// is reported.
fn lock_list(
    map: &Map<String, Value>,
    pointer: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> Vec<String> {
    let at = format!("{pointer}/locks");
    let items = match map.get("locks") {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            diags.error(
                Some(spans.value(&at)),
                format!(
                    "locks of {what} must be a list of lock names (e.g. `[dpkg]`), found {}",
                    type_name(other)
                ),
            );
            return Vec::new();
        }
    };
    if items.len() > super::MAX_LOCKS {
        diags.error(
            Some(spans.value(&at)),
            format!(
                "{what} names {} locks, over the limit of {}",
                items.len(),
                super::MAX_LOCKS
            ),
        );
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let problem = match item.as_str() {
            Some(name) => super::lock_name_problem(name),
            None => Some(format!(
                "a lock name is a string, found {}",
                type_name(item)
            )),
        };
        match (problem, item.as_str()) {
            (None, Some(name)) => {
                if !out.iter().any(|n| n == name) {
                    out.push(name.to_owned());
                }
            }
            (Some(p), _) => diags.error(
                Some(spans.value(&format!("{at}/{i}"))),
                format!("locks of {what}: {p}"),
            ),
            (None, None) => {}
        }
    }
    out.sort();
    out
}

pub(super) fn valid_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
