//! Modules: a directory of manifest files that declares `inputs:`, `outputs:`, the
//! `providers:` it needs (names only: a module cannot grant itself anything) and
//! `resources:` — called from a manifest (or another module) as a resource entry:
//!
//! ```yaml
//! - id: site
//!   module: ./modules/webserver
//!   for_each: ${ var.sites }
//!   inputs: {name: "${ each.key }", port: "${ each.value.port }"}
//!   providers: {file: file}      # module's name → caller's name (default: the same)
//! ```
//!
//! Each instance's resources are addressed `site[a].conf`; `${ module.site[\"a\"].url }`
//! reads an output. Inside, `var` is the instance's inputs, templates are named relative
//! to the module's directory, and `${resources.conf.path}` names the module's own
//! resources. Modules live inside the manifest's directory (what a config artifact
//! packs); their files are part of the manifest's digest and of each run's record.
//!
//! Every level (the manifest, each module instance) is evaluated the same way: module
//! calls first, in the order their inputs read each other's outputs (a cycle is an
//! error naming it), then the other resources, which may read every output.

use super::expr::{Evaluator, Scope};
use super::load::{self, Doc, Entry};
use super::yaml::{self, Spans};
use super::{Dependency, ResourceDecl};
use crate::diag::{Diagnostics, Location};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Deepest nesting of modules calling modules.
pub const MAX_MODULE_DEPTH: usize = 16;
/// Most module instances one manifest makes, all levels together.
pub const MAX_MODULE_INSTANCES: usize = 100_000;

/// Keys of a module call entry.
const CALL_KEYS: &[&str] = &[
    "id",
    "module",
    "inputs",
    "providers",
    "depends_on",
    "when",
    "for_each",
    "count",
];

/// One level of a manifest: the manifest itself, or one module instance.
pub(super) struct Level<'a> {
    /// What ids at this level are prefixed with: `""`, `site[a].`, `site[a].db.`.
    pub prefix: String,
    /// The directory its files are in (absolute): module paths and templates start here.
    pub dir: PathBuf,
    /// How its files are named in messages (relative to where `tenet` runs).
    pub shown: PathBuf,
    pub ev: &'a Evaluator,
    /// Whether a name an expression read (a variable, `module.ID`) is sensitive.
    pub secret: &'a dyn Fn(&str) -> bool,
    /// Provider names usable here → the manifest's names; `None` at the top (any
    /// provider the manifest declares).
    pub providers: Option<&'a BTreeMap<String, String>>,
    /// Module directories being called, outermost first (a module calling itself).
    pub chain: Vec<PathBuf>,
}

/// What one level made.
#[derive(Default)]
pub(super) struct Made {
    /// Resources, each with where its `when:` is when that condition is false.
    pub parsed: Vec<(ResourceDecl, Option<Location>)>,
    /// Ids of resources that did not parse (references to them are not reported again).
    pub rejected: Vec<String>,
    /// Outputs of the module calls of this level, by call id.
    pub outputs: Map<String, Value>,
    /// Calls of this level with an instance that failed (reported): expressions that
    /// read their outputs are not reported again.
    pub failed: BTreeSet<String>,
}

/// A declared input of a module.
#[derive(Debug, Clone)]
struct InputDecl {
    kind: Type,
    default: Option<Value>,
    sensitive: bool,
    location: Location,
}

/// The type of an input: `string`, `number`, `bool`, `list`, `map`, `any`, or
/// `list(T)` / `map(T)`.
#[derive(Debug, Clone, PartialEq)]
enum Type {
    Any,
    String,
    Number,
    Bool,
    List(Box<Type>),
    Map(Box<Type>),
}

impl Type {
    fn parse(text: &str) -> Option<Type> {
        let t = text.trim();
        let inner = |prefix: &str| {
            t.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
                .and_then(Type::parse)
        };
        Some(match t {
            "any" => Type::Any,
            "string" => Type::String,
            "number" => Type::Number,
            "bool" => Type::Bool,
            "list" => Type::List(Box::new(Type::Any)),
            "map" => Type::Map(Box::new(Type::Any)),
            _ if t.starts_with("list(") => Type::List(Box::new(inner("list")?)),
            _ if t.starts_with("map(") => Type::Map(Box::new(inner("map")?)),
            _ => return None,
        })
    }

    fn admits(&self, v: &Value) -> bool {
        match (self, v) {
            (Type::Any, _) => true,
            (Type::String, Value::String(_))
            | (Type::Number, Value::Number(_))
            | (Type::Bool, Value::Bool(_)) => true,
            (Type::List(t), Value::Array(items)) => items.iter().all(|i| t.admits(i)),
            (Type::Map(t), Value::Object(m)) => m.values().all(|i| t.admits(i)),
            _ => false,
        }
    }
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::String => f.write_str("string"),
            Type::Number => f.write_str("number"),
            Type::Bool => f.write_str("bool"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Map(t) => write!(f, "map({t})"),
        }
    }
}

/// A module directory, read and checked once however often it is called.
struct Def {
    docs: Vec<Doc>,
    inputs: BTreeMap<String, InputDecl>,
    /// Providers it names, with where.
    providers: BTreeMap<String, Location>,
    /// `outputs:` as written (doc index, name, value).
    outputs: Vec<(usize, String, Value)>,
    /// Whether reading it found problems (its calls make nothing then).
    broken: bool,
    /// The evaluator its instances share (made by the first), each with its inputs.
    ev: RefCell<Option<Evaluator>>,
}

/// What every level shares: where the manifest is, what its modules may see, and what
/// was read.
pub(super) struct Context<'a> {
    /// The manifest's directory, canonical: modules may not leave it.
    root: PathBuf,
    /// The manifest's directory as loaded: relative paths of resources start there,
    /// also inside modules (a module's `path: out/site` lands in the project).
    base_dir: PathBuf,
    pub snapshot: Option<&'a load::Snapshot>,
    pub facts: Option<&'a Value>,
    pub data: Option<&'a Value>,
    /// Provider names the manifest declares.
    pub declared: &'a BTreeSet<String>,
    defs: RefCell<BTreeMap<PathBuf, Rc<Def>>>,
    /// Module files read: name relative to the manifest's directory → text.
    pub files: RefCell<BTreeMap<String, String>>,
    instances: RefCell<usize>,
    /// Problems already reported once for a place (a `for_each` call reports a missing
    /// provider once, not once per instance).
    reported: RefCell<BTreeSet<(Location, String)>>,
}

impl<'a> Context<'a> {
    pub fn new(
        base_dir: &Path,
        snapshot: Option<&'a load::Snapshot>,
        facts: Option<&'a Value>,
        data: Option<&'a Value>,
        declared: &'a BTreeSet<String>,
    ) -> Self {
        Context {
            // A rollback names modules by the recorded paths, whatever is on disk now.
            root: match snapshot {
                Some(_) => base_dir.to_path_buf(),
                None => base_dir
                    .canonicalize()
                    .unwrap_or_else(|_| base_dir.to_path_buf()),
            },
            base_dir: base_dir.to_path_buf(),
            snapshot,
            facts,
            data,
            declared,
            defs: RefCell::default(),
            files: RefCell::default(),
            instances: RefCell::new(0),
            reported: RefCell::default(),
        }
    }

    /// The templates modules' instances rendered, named relative to the manifest's
    /// directory: part of what the manifest says.
    pub fn templates(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (dir, def) in self.defs.borrow().iter() {
            if let Some(ev) = def.ev.borrow().as_ref() {
                let rel = self.relative(dir);
                out.extend(
                    ev.templates()
                        .into_iter()
                        .map(|(name, text)| (format!("{rel}/{name}"), text)),
                );
            }
        }
        out
    }

    fn once(&self, at: &Location, message: String, diags: &mut Diagnostics) {
        if self
            .reported
            .borrow_mut()
            .insert((at.clone(), message.clone()))
        {
            diags.error(Some(at.clone()), message);
        }
    }

    /// The name of `path` relative to the manifest's directory (how a run records it).
    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Read module directory `dir` (canonical) — from the recorded run when rolling
    /// back — shown as `shown`.
    fn def(&self, dir: &Path, shown: &Path, diags: &mut Diagnostics) -> Rc<Def> {
        if let Some(d) = self.defs.borrow().get(dir) {
            return d.clone();
        }
        let before = diags.len();
        let rel = self.relative(dir);
        let mut texts: Vec<(String, String)> = Vec::new();
        match self.snapshot {
            Some(s) => {
                let prefix = format!("{rel}/");
                for (name, text) in &s.files {
                    if let Some(file) = name.strip_prefix(&prefix)
                        && !file.contains('/')
                        && is_yaml(Path::new(file))
                    {
                        texts.push((file.to_owned(), text.clone()));
                    }
                }
            }
            None => match std::fs::read_dir(dir) {
                Ok(rd) => {
                    let mut names: Vec<PathBuf> = rd
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_file() && is_yaml(p))
                        .collect();
                    names.sort();
                    for p in names {
                        let name = p
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        match std::fs::read_to_string(&p) {
                            Ok(t) => texts.push((name, t)),
                            Err(e) => diags.error(
                                Some(Location::file(&shown.join(&name))),
                                format!("cannot read: {e}"),
                            ),
                        }
                    }
                }
                Err(e) => diags.error(
                    Some(Location::file(shown)),
                    format!("cannot read the module directory: {e}"),
                ),
            },
        }
        if texts.is_empty() && diags.len() == before {
            diags.error(
                Some(Location::file(shown)),
                "no module here: the directory has no *.yaml or *.yml files",
            );
        }
        let mut docs = Vec::new();
        for (name, text) in texts {
            self.files
                .borrow_mut()
                .insert(format!("{rel}/{name}"), text.clone());
            let file = shown.join(&name);
            match yaml::parse(&file, &text) {
                Ok((value, spans)) => docs.push(Doc {
                    file,
                    text,
                    value,
                    spans,
                }),
                Err(e) => diags.error(Some(e.location), e.message),
            }
        }
        let mut inputs = BTreeMap::new();
        let mut providers = BTreeMap::new();
        let mut outputs = Vec::new();
        for (d, doc) in docs.iter().enumerate() {
            let Some(map) = doc.value.as_object() else {
                if !doc.value.is_null() {
                    diags.error(
                        Some(doc.spans.value("")),
                        "a module file must be a mapping with `inputs`, `outputs`, `providers` and `resources`",
                    );
                }
                continue;
            };
            for (key, v) in map {
                let at = doc.spans.key(&format!("/{}", yaml::escape(key)));
                match key.as_str() {
                    "resources" => {}
                    "inputs" => read_inputs(v, &doc.spans, &mut inputs, diags),
                    "providers" => read_providers(v, &doc.spans, &mut providers, diags),
                    "outputs" => match v.as_object() {
                        Some(m) => {
                            for (name, value) in m {
                                if outputs.iter().any(|(_, n, _)| n == name) {
                                    diags.error(
                                        Some(doc.spans.key(&format!("/outputs/{}", yaml::escape(name)))),
                                        format!("output `{name}` is declared twice"),
                                    );
                                    continue;
                                }
                                outputs.push((d, name.clone(), value.clone()));
                            }
                        }
                        None if v.is_null() => {}
                        None => diags.error(
                            Some(doc.spans.value("/outputs")),
                            format!(
                                "`outputs` must be a mapping of names to values, found {}",
                                load::type_name(v)
                            ),
                        ),
                    },
                    "vars" => diags.error(
                        Some(at),
                        "a module has no `vars`: its variables are its `inputs` (`inputs: {port: {type: number, default: 80}}`), read as `var.NAME`",
                    ),
                    "trust" | "data" => diags.error(
                        Some(at),
                        format!("a module cannot declare `{key}`: the manifest that calls it does"),
                    ),
                    other => diags.error(
                        Some(at),
                        format!(
                            "unknown top-level key `{other}` in a module (expected `inputs`, `outputs`, `providers`, `resources`)"
                        ),
                    ),
                }
            }
        }
        let def = Rc::new(Def {
            docs,
            inputs,
            providers,
            outputs,
            broken: diags.len() > before,
            ev: RefCell::new(None),
        });
        self.defs
            .borrow_mut()
            .insert(dir.to_path_buf(), def.clone());
        def
    }
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// `inputs:`: `name: {type: T, default: V, description: TEXT, sensitive: BOOL}`.
fn read_inputs(
    v: &Value,
    spans: &Spans,
    out: &mut BTreeMap<String, InputDecl>,
    diags: &mut Diagnostics,
) {
    let Some(map) = v.as_object() else {
        if !v.is_null() {
            diags.error(
                Some(spans.value("/inputs")),
                format!(
                    "`inputs` must be a mapping of input names to declarations, found {}",
                    load::type_name(v)
                ),
            );
        }
        return;
    };
    for (name, decl) in map {
        let pointer = format!("/inputs/{}", yaml::escape(name));
        let location = spans.key(&pointer);
        if !super::vars::valid_name(name) {
            diags.error(
                Some(location.clone()),
                format!("invalid input name `{name}`: use letters, digits, `_` and `-`"),
            );
            continue;
        }
        if let Some(first) = out.get(name) {
            diags.error(
                Some(location),
                format!(
                    "input `{name}` is declared twice (first at {})",
                    first.location
                ),
            );
            continue;
        }
        let empty = Map::new();
        let fields = match decl {
            Value::Null => &empty,
            Value::Object(m) => m,
            other => {
                diags.error(
                    Some(spans.value(&pointer)),
                    format!(
                        "input `{name}` must be declared as a mapping (`{{type: string, default: …, description: …}}`), found {}",
                        load::type_name(other)
                    ),
                );
                continue;
            }
        };
        let mut ok = true;
        for key in fields.keys() {
            if !["type", "default", "description", "sensitive"].contains(&key.as_str()) {
                ok = false;
                diags.error(
                    Some(spans.key(&format!("{pointer}/{}", yaml::escape(key)))),
                    format!(
                        "unknown field `{key}` in input `{name}` (expected `type`, `default`, `description`, `sensitive`)"
                    ),
                );
            }
        }
        let kind = match fields.get("type") {
            None | Some(Value::Null) => Type::Any,
            Some(Value::String(t)) => match Type::parse(t) {
                Some(t) => t,
                None => {
                    ok = false;
                    diags.error(
                        Some(spans.value(&format!("{pointer}/type"))),
                        format!(
                            "unknown type `{t}` of input `{name}` (types: string, number, bool, list, map, any, list(T), map(T))"
                        ),
                    );
                    Type::Any
                }
            },
            Some(other) => {
                ok = false;
                diags.error(
                    Some(spans.value(&format!("{pointer}/type"))),
                    format!(
                        "the type of input `{name}` is a name like `string`, found {}",
                        load::type_name(other)
                    ),
                );
                Type::Any
            }
        };
        let default = fields.get("default").cloned();
        if let Some(d) = &default {
            super::vars::refuse_placeholders(
                d,
                &format!("{pointer}/default"),
                spans,
                &format!("the default of input `{name}`"),
                diags,
            );
            if !kind.admits(d) {
                ok = false;
                diags.error(
                    Some(spans.value(&format!("{pointer}/default"))),
                    format!(
                        "the default of input `{name}` is {}, not of its type `{kind}`",
                        load::type_name(d)
                    ),
                );
            }
        }
        let sensitive = match fields.get("sensitive") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                ok = false;
                diags.error(
                    Some(spans.value(&format!("{pointer}/sensitive"))),
                    format!("`sensitive` of input `{name}` must be true or false"),
                );
                false
            }
        };
        if ok {
            out.insert(
                name.clone(),
                InputDecl {
                    kind,
                    default,
                    sensitive,
                    location,
                },
            );
        }
    }
}

/// `providers: [file, service]`: the names the module's resources use.
fn read_providers(
    v: &Value,
    spans: &Spans,
    out: &mut BTreeMap<String, Location>,
    diags: &mut Diagnostics,
) {
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let at = spans.value(&format!("/providers/{i}"));
                match item.as_str() {
                    Some(name) => {
                        out.entry(name.to_owned()).or_insert(at);
                    }
                    None => diags.error(
                        Some(at),
                        format!(
                            "a module's providers are names, found {}",
                            load::type_name(item)
                        ),
                    ),
                }
            }
        }
        _ => diags.error(
            Some(spans.value("/providers")),
            "a module names the providers it needs (`providers: [file, service]`); it cannot declare or grant them: the manifest that calls it does, and maps them with `providers:` in the call",
        ),
    }
}

/// One module call at a level: which file and entry, its id and the modules its
/// expressions read.
struct Call {
    doc: usize,
    index: usize,
    id: String,
    reads: BTreeSet<String>,
    at: Location,
}

/// Every string in `value`, concatenated (what a call's expressions read).
fn texts(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|v| texts(v, out)),
        Value::Object(m) => m.values().for_each(|v| texts(v, out)),
        _ => {}
    }
}

/// Put `prefix` in front of every reference `${resources.ID.FIELD}` written in
/// `value` (not `$${…}`): inside a module, `resources.conf` is the module's own `conf`.
fn prefix_references(value: &mut Value, prefix: &str) {
    if prefix.is_empty() {
        return;
    }
    match value {
        Value::String(s) if s.contains("resources.") => {
            let mut out = String::with_capacity(s.len() + prefix.len());
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${") {
                let escaped = i > 0 && rest[..i].ends_with('$');
                let after = &rest[i + 2..];
                let body = after.trim_start();
                out.push_str(&rest[..i + 2]);
                out.push_str(&after[..after.len() - body.len()]);
                if !escaped && let Some(field) = body.strip_prefix("resources.") {
                    out.push_str("resources.");
                    out.push_str(prefix);
                    rest = field;
                } else {
                    rest = body;
                }
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Array(items) => items.iter_mut().for_each(|v| prefix_references(v, prefix)),
        Value::Object(m) => m.values_mut().for_each(|v| prefix_references(v, prefix)),
        _ => {}
    }
}

/// Evaluate and parse the resources of one level's files: module calls first, in the
/// order their expressions read each other's outputs, then the rest.
pub(super) fn resources(
    level: &Level,
    docs: &[Doc],
    ctx: &Context,
    diags: &mut Diagnostics,
) -> Made {
    let mut made = Made::default();
    // Inside a module, `${resources.x.f}` is the instance's `x`.
    let lists: Vec<Option<Value>> = docs
        .iter()
        .map(|d| {
            d.value.get("resources").map(|r| {
                let mut r = r.clone();
                prefix_references(&mut r, &level.prefix);
                r
            })
        })
        .collect();
    let mut calls = Vec::new();
    for (d, list) in lists.iter().enumerate() {
        let Some(items) = list.as_ref().and_then(Value::as_array) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            if item.get("module").is_none() {
                continue;
            }
            let id = item
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let mut text = String::new();
            for key in ["inputs", "for_each", "count", "when"] {
                if let Some(v) = item.get(key) {
                    texts(v, &mut text);
                }
            }
            calls.push(Call {
                doc: d,
                index: i,
                id,
                reads: super::expr::modules_read(&text),
                at: docs[d].spans.value(&format!("/resources/{i}")),
            });
        }
    }
    let order = call_order(&calls, diags);
    // Names a module's outputs make sensitive (`module.ID`), as the level's own secrets.
    let mut secret_modules: BTreeSet<String> = BTreeSet::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for c in order {
        let call = &calls[c];
        let doc = &docs[call.doc];
        let Some(list) = &lists[call.doc] else {
            continue;
        };
        let scope = Scope::none().with_modules(&made.outputs, &failed);
        let secret = |n: &str| (level.secret)(n) || secret_modules.contains(n);
        let mut derived = Vec::new();
        let entries = load::expand(
            list,
            &doc.spans,
            level.ev,
            &secret,
            (&scope, &level.prefix),
            &|i, _| i == call.index,
            &mut derived,
            diags,
        );
        for entry in entries {
            // A call whose `when:` is false makes nothing (and has no outputs).
            if entry.value.get("when") == Some(&Value::Bool(false)) {
                continue;
            }
            let Some((outputs, sensitive)) =
                instance(level, doc, &entry, &derived, ctx, &mut made, diags)
            else {
                // Reported: what reads its outputs is not reported again.
                failed.insert(call.id.clone());
                continue;
            };
            match &entry.key {
                Some(k) => {
                    if let Value::Object(all) = made
                        .outputs
                        .entry(call.id.clone())
                        .or_insert_with(|| Value::Object(Map::new()))
                    {
                        all.insert(k.clone(), outputs);
                    }
                }
                None => {
                    made.outputs.insert(call.id.clone(), outputs);
                }
            }
            if sensitive {
                secret_modules.insert(format!("module.{}", call.id));
                secret_modules.insert("module".to_owned());
            }
        }
        // A loop with no instances still names a module: `module.site` is `{}`.
        let item = &list[call.index];
        if item.get("for_each").is_some() || item.get("count").is_some() {
            made.outputs
                .entry(call.id.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    // The other resources, which may read every output.
    let scope = Scope::none().with_modules(&made.outputs, &failed);
    let secret = |n: &str| (level.secret)(n) || secret_modules.contains(n);
    let mut bases: BTreeSet<String> = BTreeSet::new();
    for (d, doc) in docs.iter().enumerate() {
        let Some(list) = &lists[d] else { continue };
        let mut derived = Vec::new();
        let entries = load::expand(
            list,
            &doc.spans,
            level.ev,
            &secret,
            (&scope, &level.prefix),
            &|_, item| item.get("module").is_none(),
            &mut derived,
            diags,
        );
        let (parsed, rejected) = load::parse_resources(
            list,
            &entries,
            &doc.spans,
            &ctx.base_dir,
            &level.prefix,
            &derived,
            diags,
        );
        made.rejected.extend(rejected);
        for (mut r, when) in parsed {
            r.declared_in = level.dir.clone();
            if !map_provider(level, &mut r, ctx, diags) {
                made.rejected.push(r.id);
                continue;
            }
            made.parsed.push((r, when));
        }
        for item in list.as_array().into_iter().flatten() {
            if (item.get("for_each").is_some() || item.get("count").is_some())
                && let Some(id) = item.get("id").and_then(Value::as_str)
            {
                bases.insert(format!("{}{id}", level.prefix));
            }
        }
    }
    for call in &calls {
        if !call.id.is_empty() {
            bases.insert(format!("{}{}", level.prefix, call.id));
        }
    }
    load::depend_on_instances(&mut made.parsed, &bases);
    made.failed = failed;
    made
}

/// A resource's provider as the manifest names it; `false` (reported) when a module
/// uses one it does not name.
fn map_provider(
    level: &Level,
    r: &mut ResourceDecl,
    ctx: &Context,
    diags: &mut Diagnostics,
) -> bool {
    let Some(map) = level.providers else {
        return true;
    };
    match map.get(&r.provider) {
        Some(top) => {
            if *top != r.provider {
                r.type_name = format!("{top}.{}", r.kind);
                r.provider = top.clone();
            }
            true
        }
        None => {
            let at = r
                .type_location
                .clone()
                .unwrap_or_else(|| r.location.clone());
            let named: Vec<&str> = map.keys().map(String::as_str).collect();
            ctx.once(
                &at,
                format!(
                    "resource `{}` uses provider `{}`, which its module does not name in `providers:` (it names: {})",
                    r.id,
                    r.provider,
                    if named.is_empty() { "none".to_owned() } else { named.join(", ") }
                ),
                diags,
            );
            false
        }
    }
}

/// Order module calls so each comes after the calls whose outputs it reads; every
/// cycle is reported once, naming its calls, and its calls are left out.
fn call_order(calls: &[Call], diags: &mut Diagnostics) -> Vec<usize> {
    let by_id: BTreeMap<&str, usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.id.is_empty())
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = calls
        .iter()
        .map(|c| {
            c.reads
                .iter()
                .filter_map(|r| by_id.get(r.as_str()).copied())
                .collect()
        })
        .collect();
    // 0: not visited, 1: on the path, 2: done.
    let mut mark = vec![0u8; calls.len()];
    let mut order = Vec::new();
    let mut in_cycle = vec![false; calls.len()];
    fn visit(
        n: usize,
        deps: &[Vec<usize>],
        mark: &mut [u8],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
        cycles: &mut Vec<Vec<usize>>,
    ) {
        match mark[n] {
            2 => return,
            1 => {
                let from = path.iter().position(|&p| p == n).unwrap_or(0);
                cycles.push(path[from..].to_vec());
                return;
            }
            _ => {}
        }
        mark[n] = 1;
        path.push(n);
        for &d in &deps[n] {
            visit(d, deps, mark, path, order, cycles);
        }
        path.pop();
        mark[n] = 2;
        order.push(n);
    }
    let mut cycles = Vec::new();
    for n in 0..calls.len() {
        visit(
            n,
            &deps,
            &mut mark,
            &mut Vec::new(),
            &mut order,
            &mut cycles,
        );
    }
    for cycle in cycles {
        for &n in &cycle {
            in_cycle[n] = true;
        }
        let mut names: Vec<String> = cycle
            .iter()
            .map(|&n| format!("`{}`", calls[n].id))
            .collect();
        names.push(format!("`{}`", calls[cycle[0]].id));
        let places: Vec<String> = cycle.iter().map(|&n| calls[n].at.to_string()).collect();
        diags.error(
            Some(calls[cycle[0]].at.clone()),
            format!(
                "module calls read each other's outputs in a cycle: {} (each reads the next's `module.ID…`; at {})",
                names.join(" → "),
                places.join(", ")
            ),
        );
    }
    order.retain(|&n| !in_cycle[n] && !deps[n].iter().any(|&d| in_cycle[d]));
    order
}

/// Make one instance of a module call (its entry evaluated at `level`): its resources
/// go to `made`; returns its outputs and whether any of them is sensitive.
fn instance(
    level: &Level,
    doc: &Doc,
    entry: &Entry,
    derived: &[String],
    ctx: &Context,
    made: &mut Made,
    diags: &mut Diagnostics,
) -> Option<(Value, bool)> {
    let nothing = None;
    let spans = &doc.spans;
    let pointer = &entry.pointer;
    let Some(map) = load::object(
        &entry.value,
        pointer,
        spans,
        "a module call",
        CALL_KEYS,
        diags,
    ) else {
        return nothing;
    };
    let Some(base) = load::string(map, "id", pointer, spans, "a module call", diags) else {
        if map.get("id").is_none() {
            diags.error(Some(spans.value(pointer)), "module call has no `id`");
        }
        return nothing;
    };
    let local = match &entry.key {
        Some(k) => format!("{base}[{k}]"),
        None => base.to_owned(),
    };
    let full = format!("{}{local}", level.prefix);
    let what = format!("module `{full}`");
    if !load::valid_id(base) {
        diags.error(
            Some(spans.value(&format!("{pointer}/id"))),
            format!("invalid module id `{base}`: use letters, digits, `_` and `-`, starting with a letter or digit"),
        );
        made.rejected.push(full);
        return nothing;
    }
    let Some(source) = load::string(map, "module", pointer, spans, &what, diags) else {
        made.rejected.push(full);
        return nothing;
    };
    let source_at = spans.value(&format!("{pointer}/module"));
    // The module's directory: inside the manifest's, named relative to the caller's.
    let rel = Path::new(source);
    if rel.is_absolute() || source.contains('\\') {
        ctx.once(
            &source_at,
            format!("{what}: `{source}`: a module is named by a path relative to the file that calls it (`./modules/web`)"),
            diags,
        );
        made.rejected.push(full);
        return nothing;
    }
    let lexical = load::absolute(&level.dir, rel);
    let dir = match ctx.snapshot {
        Some(_) => lexical.clone(),
        None => match lexical.canonicalize() {
            Ok(d) if d.is_dir() => d,
            Ok(_) => {
                ctx.once(
                    &source_at,
                    format!("{what}: `{source}` is not a directory"),
                    diags,
                );
                made.rejected.push(full);
                return nothing;
            }
            Err(e) => {
                ctx.once(&source_at, format!("{what}: `{source}`: {e}"), diags);
                made.rejected.push(full);
                return nothing;
            }
        },
    };
    if !dir.starts_with(&ctx.root) || dir == ctx.root {
        ctx.once(
            &source_at,
            format!(
                "{what}: `{source}` leads out of the manifest's directory: modules live inside it (so a config artifact holds them)"
            ),
            diags,
        );
        made.rejected.push(full);
        return nothing;
    }
    if level.chain.contains(&dir) {
        let mut names: Vec<String> = level.chain.iter().map(|d| ctx.relative(d)).collect();
        names.push(ctx.relative(&dir));
        ctx.once(
            &source_at,
            format!("{what}: a module calls itself: {}", names.join(" → ")),
            diags,
        );
        made.rejected.push(full);
        return nothing;
    }
    if level.chain.len() >= MAX_MODULE_DEPTH {
        ctx.once(
            &source_at,
            format!("{what}: modules nested over {MAX_MODULE_DEPTH} deep (MAX_MODULE_DEPTH)"),
            diags,
        );
        made.rejected.push(full);
        return nothing;
    }
    {
        let mut n = ctx.instances.borrow_mut();
        *n += 1;
        if *n > MAX_MODULE_INSTANCES {
            ctx.once(
                &source_at,
                format!("over {MAX_MODULE_INSTANCES} module instances (MAX_MODULE_INSTANCES)"),
                diags,
            );
            made.rejected.push(full);
            return nothing;
        }
    }
    let shown = path_clean::clean(level.shown.join(rel));
    let def = ctx.def(&dir, &shown, diags);
    if def.broken {
        made.rejected.push(full);
        return nothing;
    }

    // Inputs: each given one declared and of its type; each declared one given or
    // defaulted. Evaluated at the caller, they are the instance's `var`.
    let mut ok = true;
    let mut vars: BTreeMap<String, Value> = BTreeMap::new();
    let mut secret_inputs: BTreeSet<String> = BTreeSet::new();
    let inputs_at = format!("{pointer}/inputs");
    let whole_secret = derived.iter().any(|p| p == pointer || *p == inputs_at);
    let given = match map.get("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            diags.error(
                Some(spans.value(&inputs_at)),
                format!(
                    "inputs of {what} must be a mapping of input names to values, found {}",
                    load::type_name(other)
                ),
            );
            made.rejected.push(full);
            return nothing;
        }
    };
    for (name, value) in &given {
        let at = format!("{inputs_at}/{}", yaml::escape(name));
        let Some(decl) = def.inputs.get(name) else {
            let known: Vec<&str> = def.inputs.keys().map(String::as_str).collect();
            ctx.once(
                &spans.key(&at),
                format!(
                    "{}: the module `{source}` has no input `{name}` (its inputs: {})",
                    call_name(&what, &entry.key, base),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
                diags,
            );
            ok = false;
            continue;
        };
        if !decl.kind.admits(value) {
            diags.error(
                Some(spans.value(&at)),
                format!(
                    "{what}: input `{name}` must be of type `{}` (declared at {}), found {}",
                    decl.kind,
                    decl.location,
                    load::type_name(value)
                ),
            );
            ok = false;
            continue;
        }
        if decl.sensitive
            || whole_secret
            || derived.iter().any(|p| {
                p.starts_with(&at) && (p.len() == at.len() || p[at.len()..].starts_with('/'))
            })
        {
            secret_inputs.insert(name.clone());
        }
        vars.insert(name.clone(), value.clone());
    }
    for (name, decl) in &def.inputs {
        if given.contains_key(name) {
            continue;
        }
        match &decl.default {
            Some(d) => {
                if decl.sensitive {
                    secret_inputs.insert(name.clone());
                }
                vars.insert(name.clone(), d.clone());
            }
            None => {
                ctx.once(
                    &spans.value(pointer),
                    format!(
                        "{}: input `{name}` of module `{source}` is required (declared at {}) and not given",
                        call_name(&what, &entry.key, base),
                        decl.location
                    ),
                    diags,
                );
                ok = false;
            }
        }
    }

    // Providers: the module's names, mapped by the call (default: the same name), to
    // the manifest's.
    let mut mapping: BTreeMap<String, String> = BTreeMap::new();
    let providers_at = format!("{pointer}/providers");
    let given_map = match map.get("providers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            diags.error(
                Some(spans.value(&providers_at)),
                format!(
                    "providers of {what} must map the module's provider names to this manifest's (`{{file: file}}`), found {}",
                    load::type_name(other)
                ),
            );
            made.rejected.push(full);
            return nothing;
        }
    };
    for (name, target) in &given_map {
        let at = format!("{providers_at}/{}", yaml::escape(name));
        if !def.providers.contains_key(name) {
            ctx.once(
                &spans.key(&at),
                format!(
                    "{}: the module `{source}` does not use a provider `{name}`",
                    call_name(&what, &entry.key, base)
                ),
                diags,
            );
            ok = false;
        }
        if !target.is_string() {
            ctx.once(
                &spans.value(&at),
                format!(
                    "{}: provider `{name}` must map to a provider name, found {}",
                    call_name(&what, &entry.key, base),
                    load::type_name(target)
                ),
                diags,
            );
            ok = false;
        }
    }
    for (name, named_at) in &def.providers {
        let local = given_map
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or(name.as_str());
        let top = match level.providers {
            None => ctx.declared.contains(local).then(|| local.to_owned()),
            Some(outer) => outer.get(local).cloned(),
        };
        match top {
            Some(top) => {
                mapping.insert(name.clone(), top);
            }
            None => {
                let at = match given_map.get(name) {
                    Some(_) => spans.value(&format!("{providers_at}/{}", yaml::escape(name))),
                    None => spans.value(pointer),
                };
                let here = match level.providers {
                    None => "this manifest does not declare it under `providers:`".to_owned(),
                    Some(_) => {
                        "the module that calls it does not name it in its `providers:`".to_owned()
                    }
                };
                ctx.once(
                    &at,
                    format!(
                        "{}: the module `{source}` requires provider `{local}` (named at {named_at}), and {here}; declare it, or map the module's `{name}` to another with `providers: {{{name}: NAME}}`",
                        call_name(&what, &entry.key, base)
                    ),
                    diags,
                );
                ok = false;
            }
        }
    }
    if !ok {
        made.rejected.push(full);
        return nothing;
    }

    let ev = {
        let mut shared = def.ev.borrow_mut();
        let proto = shared.get_or_insert_with(|| {
            let ev = Evaluator::new(&BTreeMap::new(), Some(&dir), ctx.facts, ctx.data);
            match ctx.snapshot.and_then(|s| s.templates.clone()) {
                Some(recorded) => ev.recorded(recorded, &format!("{}/", ctx.relative(&dir))),
                None => ev,
            }
        });
        proto.with_vars(&vars)
    };
    let secret = |n: &str| secret_inputs.contains(n);
    let mut chain = level.chain.clone();
    chain.push(dir.clone());
    let inner = Level {
        prefix: format!("{full}."),
        dir: dir.clone(),
        shown: shown.clone(),
        ev: &ev,
        secret: &secret,
        providers: Some(&mapping),
        chain,
    };
    // A problem in the module's files is the same in every instance: reported once
    // (naming the first instance), not once per instance.
    let mut found = Diagnostics::new();
    let mut sub = resources(&inner, &def.docs, ctx, &mut found);
    for d in found.iter() {
        match &d.location {
            Some(at) if at.file.starts_with(&shown) => {
                let key = d.message.replace(&inner.prefix, "");
                if ctx.reported.borrow_mut().insert((at.clone(), key)) {
                    diags.error(Some(at.clone()), d.message.clone());
                }
            }
            _ => diags.error(d.location.clone(), d.message.clone()),
        }
    }
    // The call's `depends_on`: every resource of the instance waits for those.
    let deps = load::id_list(map, "depends_on", pointer, spans, &what, diags);
    for (r, _) in &mut sub.parsed {
        r.depends_on.extend(deps.iter().map(|d| Dependency {
            id: format!("{}{}", level.prefix, d.id),
            location: d.location.clone(),
        }));
    }
    // Outputs, evaluated in the instance (its resources' fields stay references).
    let scope = Scope::none().with_modules(&sub.outputs, &sub.failed);
    let mut outputs = Map::new();
    let mut sensitive = false;
    for (d, name, raw) in &def.outputs {
        let out_doc = &def.docs[*d];
        let at = format!("/outputs/{}", yaml::escape(name));
        let (mut value, declared_secret) = match raw {
            Value::Object(m) if m.contains_key("value") => {
                for key in m.keys() {
                    if !["value", "description", "sensitive"].contains(&key.as_str()) {
                        ctx.once(
                            &out_doc.spans.key(&format!("{at}/{}", yaml::escape(key))),
                            format!("unknown field `{key}` in output `{name}` (expected `value`, `description`, `sensitive`)"),
                            diags,
                        );
                    }
                }
                (
                    m["value"].clone(),
                    m.get("sensitive") == Some(&Value::Bool(true)),
                )
            }
            other => (other.clone(), false),
        };
        let value_at = if matches!(raw, Value::Object(m) if m.contains_key("value")) {
            format!("{at}/value")
        } else {
            at.clone()
        };
        prefix_references(&mut value, &inner.prefix);
        let mut read_secret = Vec::new();
        let mut found = Diagnostics::new();
        super::vars::interpolate(
            &mut value,
            &value_at,
            &out_doc.spans,
            (&ev, &scope),
            &secret,
            &mut read_secret,
            &mut found,
        );
        for p in found.iter() {
            diags.error(
                p.location.clone(),
                format!("output `{name}` of {what}: {}", p.message),
            );
        }
        sensitive |= declared_secret || !read_secret.is_empty();
        outputs.insert(name.clone(), value);
    }
    made.parsed.append(&mut sub.parsed);
    made.rejected.append(&mut sub.rejected);
    Some((Value::Object(outputs), sensitive))
}

/// How messages about a call name it: `module `site`` even for its instances (a
/// problem of the call is the same for every instance, and reported once).
fn call_name(what: &str, key: &Option<String>, base: &str) -> String {
    match key {
        Some(_) => format!("module call `{base}`"),
        None => what.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_types_admit_what_they_say() {
        let t = |s: &str| Type::parse(s).expect(s);
        assert!(t("string").admits(&json!("x")));
        assert!(!t("string").admits(&json!(1)));
        assert!(t("list(string)").admits(&json!(["a", "b"])));
        assert!(!t("list(string)").admits(&json!(["a", 2])));
        assert!(t("map(list(number))").admits(&json!({"a": [1, 2]})));
        assert!(!t("map(number)").admits(&json!({"a": "1"})));
        assert!(t("any").admits(&json!(null)));
        assert_eq!(t(" map( list(bool) ) ").to_string(), "map(list(bool))");
        for bad in ["strin", "list(", "list(x)", "map()", ""] {
            assert!(Type::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn references_inside_a_module_name_its_own_resources() {
        let mut v = json!({
            "a": "${resources.conf.path}/x and ${ resources.dir.path }",
            "b": ["$${resources.literal.x}", "${ var.x }"],
        });
        prefix_references(&mut v, "site[a].");
        assert_eq!(
            v,
            json!({
                "a": "${resources.site[a].conf.path}/x and ${ resources.site[a].dir.path }",
                "b": ["$${resources.literal.x}", "${ var.x }"],
            })
        );
    }

    #[test]
    fn calls_are_ordered_by_the_outputs_they_read_and_cycles_are_named() {
        let call = |id: &str, reads: &[&str]| Call {
            doc: 0,
            index: 0,
            id: id.to_owned(),
            reads: reads.iter().map(|r| r.to_string()).collect(),
            at: Location::new("m.yaml", 1, 1),
        };
        let mut diags = Diagnostics::new();
        let calls = [
            call("app", &["db", "net"]),
            call("db", &["net"]),
            call("net", &[]),
        ];
        let order = call_order(&calls, &mut diags);
        assert!(diags.is_empty());
        assert_eq!(order, vec![2, 1, 0]);
        let calls = [
            call("a", &["b"]),
            call("b", &["a"]),
            call("c", &["a"]),
            call("d", &[]),
        ];
        let order = call_order(&calls, &mut diags);
        assert_eq!(order, vec![3], "a cycle and what reads it are left out");
        let msg = diags
            .iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(msg.contains("`a` → `b` → `a`"), "{msg}");
        assert_eq!(diags.len(), 1);
    }
}
