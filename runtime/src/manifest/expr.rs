//! The expression language of `${ … }` in manifests: Jinja expressions (minijinja, by
//! Jinja's author) — arithmetic, comparisons, `and`/`or`/`not`, `x if c else y`, list
//! and map literals and access, filters (`upper`, `replace`, `join`, `default`,
//! `length`, …) — over `var` (the manifest's variables). One language for every place
//! an expression may stand.
//!
//! Evaluated on the host, before any provider runs, with no file, environment or clock
//! access, undefined names an error (never an empty string), and a fuel limit. A string
//! that is exactly one `${ … }` takes the value's type (number, bool, list, map); inside
//! a longer string the value is written as text (strings as they are, anything else as
//! JSON). `$${` writes a literal `${`. `${resources.ID.FIELD}` is a reference to another
//! resource, resolved later by the engine, and stays as written.
//!
//! `template("templates/app.conf.j2", {"port": 8080})` renders a Jinja template file at
//! plan time with the map passed plus `var` (and `each`/`count` in a loop): names are
//! relative to the manifest's directory and may not leave it (`..`, absolute paths and
//! symlinks that lead out are refused); `{% include %}` and `{% import %}` of macros work
//! within it; undefined names are errors; nothing is escaped (configuration is not HTML);
//! a file's trailing newline is kept. An error inside a template names its file, line and
//! column, and the manifest names the resource and property that use it.

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What [`Evaluator::eval`] answers for an expression that reads the outputs of a
/// module call whose failure was reported: no further problem to report.
const SUPPRESSED: &str = "\u{0}suppressed";

/// Largest template file read (a configuration template is kilobytes).
pub const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// The template files the loader read (name → text): they are part of what the manifest
/// says.
type Seen = BTreeMap<String, String>;

/// Instructions one expression may execute: far above any real expression, low enough
/// that a runaway one (`range(10**9) | join`) fails at once instead of hanging a plan.
pub const EXPR_FUEL: u64 = 100_000;
/// Longest expression text accepted between `${` and `}`.
pub const MAX_EXPR_BYTES: usize = 16 * 1024;
/// Largest value one expression may produce (as JSON): fuel counts instructions, not
/// the work inside one built-in (`"x" * 10**8`, `range(…) | join`), so the result is
/// bounded too, after minijinja's own caps.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Names an expression may always start from; `each` and `count` only where a
/// [`Scope`] defines them.
const ROOTS: &[&str] = &["var"];
// (`facts` is a root too when the manifest uses facts: see `Evaluator::eval`.)

/// Names one resource instance adds to what its expressions see: `each.key` and
/// `each.value` under `for_each`, `count.index` under `count`.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    entries: Vec<(&'static str, minijinja::Value)>,
    failed_modules: BTreeSet<String>,
}

impl Scope {
    /// Nothing beyond `var`.
    pub fn none() -> Scope {
        Scope::default()
    }

    /// One `for_each` instance.
    pub fn each(key: &str, value: &Value) -> Scope {
        Scope {
            failed_modules: BTreeSet::new(),
            entries: vec![(
                "each",
                minijinja::Value::from(minijinja::value::Serde(
                    serde_json::json!({"key": key, "value": value}),
                )),
            )],
        }
    }

    /// One `count` instance.
    pub fn count(index: u64) -> Scope {
        Scope {
            failed_modules: BTreeSet::new(),
            entries: vec![(
                "count",
                minijinja::Value::from(minijinja::value::Serde(
                    serde_json::json!({ "index": index }),
                )),
            )],
        }
    }

    /// This scope with the outputs of the modules called so far: `module.ID.OUTPUT`
    /// (`module.ID[KEY].OUTPUT` for a module called with `for_each` / `count`).
    /// `failed`: calls whose instances failed (already reported), whose outputs an
    /// expression reads without a further error.
    pub fn with_modules(
        mut self,
        outputs: &serde_json::Map<String, Value>,
        failed: &BTreeSet<String>,
    ) -> Scope {
        self.entries.push((
            "module",
            minijinja::Value::from(minijinja::value::Serde(outputs)),
        ));
        self.failed_modules = failed.clone();
        self
    }

    /// This scope with the names `base` adds too (an instance inside a level that
    /// sees modules' outputs).
    pub fn and(mut self, base: &Scope) -> Scope {
        self.entries.extend(base.entries.iter().cloned());
        self.failed_modules
            .extend(base.failed_modules.iter().cloned());
        self
    }

    fn has(&self, root: &str) -> bool {
        self.entries.iter().any(|(n, _)| *n == root)
    }

    fn get(&self, root: &str) -> Option<&minijinja::Value> {
        self.entries
            .iter()
            .find(|(n, _)| *n == root)
            .map(|(_, v)| v)
    }
}

/// The modules whose outputs the `${ … }` expressions of `text` read (`module.ID…`):
/// what a module call must wait for. Text that does not scan or compile reads none
/// (evaluating it reports the problem).
pub fn modules_read(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if !text.contains("module") {
        return out;
    }
    let Ok(pieces) = scan(text) else {
        return out;
    };
    let env = Environment::new();
    for piece in pieces {
        let Piece::Expr(src) = piece else { continue };
        let Ok(expr) = env.compile_expression(src) else {
            continue;
        };
        for name in expr.undeclared_variables(true) {
            if let Some(rest) = name.strip_prefix("module.") {
                out.insert(rest.split('.').next().unwrap_or(rest).to_owned());
            }
        }
        // `module['web-1']`: an id that is not a Jinja name is written as a subscript.
        let mut rest = src;
        while let Some(i) = rest.find("module") {
            let after = rest[i + 6..].trim_start();
            rest = &rest[i + 6..];
            let Some(quoted) = after.strip_prefix('[').map(str::trim_start) else {
                continue;
            };
            let Some(q) = quoted.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            if let Some(end) = quoted[1..].find(q) {
                out.insert(quoted[1..1 + end].to_owned());
            }
        }
    }
    out
}

/// One part of a string: literal text, or an expression with its byte offset.
#[derive(Debug, Clone, PartialEq)]
enum Piece<'a> {
    Text(String),
    Expr(&'a str),
}

/// What a string evaluated to.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    pub value: Value,
    /// The variables its expressions used (`var.NAME` → `NAME`).
    pub vars: BTreeSet<String>,
}

/// Evaluates the `${ … }` of manifest strings against one context.
pub struct Evaluator {
    /// Shared by the evaluators of one module's instances ([`Evaluator::with_vars`]):
    /// its templates are loaded and compiled once.
    env: Arc<Environment<'static>>,
    seen: Arc<Mutex<Seen>>,
    /// `var`, converted once.
    var: minijinja::Value,
    /// The declared variables' names (their values are in `var`).
    vars: BTreeSet<String>,
    /// `facts`, when the manifest uses them.
    facts: Option<minijinja::Value>,
    /// `data`, when the manifest declares layered data.
    data: Option<minijinja::Value>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator").finish_non_exhaustive()
    }
}

impl Evaluator {
    /// An evaluator over the manifest's variables, with templates under `base` (the
    /// manifest's directory; `None`: no `template()`), and the `facts` and layered
    /// `data` the manifest uses, if any.
    pub fn new(
        vars: &BTreeMap<String, Value>,
        base: Option<&Path>,
        facts: Option<&Value>,
        data: Option<&Value>,
    ) -> Evaluator {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(EXPR_FUEL));
        // Errors carry the template's source, so they can say the column (release too).
        env.set_debug(true);
        // Configuration is not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        if let Some(base) = base {
            let root = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
            let files = seen.clone();
            env.set_loader(move |name| load_template(&root, name, &files));
            env.add_function("template", render_template);
        }
        Evaluator {
            env: Arc::new(env),
            seen,
            var: minijinja::Value::from(minijinja::value::Serde(vars)),
            vars: vars.keys().cloned().collect(),
            facts: facts.map(|f| minijinja::Value::from(minijinja::value::Serde(f))),
            data: data.map(|d| minijinja::Value::from(minijinja::value::Serde(d))),
        }
    }

    /// Read templates from `recorded` (what a run recorded, by name relative to the
    /// manifest's directory; `prefix` is this evaluator's directory within it, e.g.
    /// `modules/web/`) instead of the files on disk: a rollback renders what that run
    /// rendered. A template it did not record does not exist.
    pub fn recorded(mut self, recorded: Arc<BTreeMap<String, String>>, prefix: &str) -> Self {
        let files = self.seen.clone();
        let prefix = prefix.to_owned();
        Arc::make_mut(&mut self.env).set_loader(move |name| {
            if let Some(why) = bad_template_name(name) {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("template `{name}`: {why}"),
                ));
            }
            let text = recorded.get(&format!("{prefix}{name}")).cloned();
            if let (Some(t), Ok(mut s)) = (&text, files.lock()) {
                s.insert(name.to_owned(), t.clone());
            }
            Ok(text)
        });
        self
    }

    /// An evaluator like this one (the same templates, facts and data) over other
    /// variables: one module's instances share everything but their inputs.
    pub fn with_vars(&self, vars: &BTreeMap<String, Value>) -> Evaluator {
        Evaluator {
            env: self.env.clone(),
            seen: self.seen.clone(),
            var: minijinja::Value::from(minijinja::value::Serde(vars)),
            vars: vars.keys().cloned().collect(),
            facts: self.facts.clone(),
            data: self.data.clone(),
        }
    }

    /// The template files read so far (name → text), in name order.
    pub fn templates(&self) -> BTreeMap<String, String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Evaluate every `${ … }` in `text`; `Ok(None)` when there is none. Errors name the
    /// expression and say what is wrong, every problem of the string at once.
    pub fn eval_text(&self, text: &str) -> Result<Option<Evaluated>, Vec<String>> {
        self.eval_in(text, &Scope::none())
    }

    /// [`Evaluator::eval_text`] with the names `scope` adds (`each`, `count`).
    pub fn eval_in(&self, text: &str, scope: &Scope) -> Result<Option<Evaluated>, Vec<String>> {
        if !text.contains("${") {
            return Ok(None);
        }
        let pieces = scan(text).map_err(|e| vec![e])?;
        // Exactly one expression and nothing else (not even white space, which a
        // file's content keeps): typed.
        let whole = matches!(pieces.as_slice(), [Piece::Expr(_)]);
        let mut out = String::new();
        let mut problems = Vec::new();
        let mut used = BTreeSet::new();
        let mut typed = None;
        let mut suppressed = false;
        for piece in &pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Expr(src) if src.trim_start().starts_with("resources.") => {
                    // Another resource's field: the engine resolves it (it reads the
                    // reference without the spaces the manifest may put around it).
                    out.push_str(&format!("${{{}}}", src.trim()));
                }
                Piece::Expr(src) => match self.eval(src, scope) {
                    Ok((value, vars)) => {
                        used.extend(vars);
                        match &value {
                            Value::String(s) => out.push_str(s),
                            other => out.push_str(&other.to_string()),
                        }
                        if whole {
                            typed = Some(value);
                        }
                    }
                    Err(e) if e == SUPPRESSED => suppressed = true,
                    Err(e) => problems.push(e),
                },
            }
        }
        if !problems.is_empty() || suppressed {
            return Err(problems);
        }
        Ok(Some(Evaluated {
            value: typed.unwrap_or(Value::String(out)),
            vars: used,
        }))
    }

    /// One expression: its value and the variables it read.
    fn eval(&self, src: &str, scope: &Scope) -> Result<(Value, BTreeSet<String>), String> {
        TEMPLATE_VARS.with(|t| t.borrow_mut().clear());
        let shown = || format!("`${{{}}}`", one_line(src));
        if src.len() > MAX_EXPR_BYTES {
            return Err(format!(
                "the expression is {} bytes, over the limit of {MAX_EXPR_BYTES}",
                src.len()
            ));
        }
        let expr = self
            .env
            .compile_expression(src)
            .map_err(|e| format!("in {}: {}", shown(), describe(&e)))?;
        let mut used = BTreeSet::new();
        let mut problems = Vec::new();
        let mut names: Vec<String> = expr.undeclared_variables(true).into_iter().collect();
        names.sort();
        for name in names {
            let mut parts = name.splitn(3, '.');
            let root = parts.next().unwrap_or_default();
            let member = parts.next();
            // `var['x']`, `var | items`: which variable is read is not known, so every one
            // is (a sensitive one makes the result sensitive).
            if root == "var" && member.is_none() {
                used.extend(self.vars.iter().cloned());
                continue;
            }
            if root == "module"
                && let Some(outputs) = scope.get("module")
            {
                let Some(id) = member else {
                    // `module["x"]`: which module is read is not known.
                    used.insert("module".to_owned());
                    continue;
                };
                if scope.failed_modules.contains(id) {
                    return Err(SUPPRESSED.to_owned());
                }
                if outputs.get_attr(id).map_or(true, |v| v.is_undefined()) {
                    let known: Vec<String> = outputs
                        .try_iter()
                        .map(|keys| keys.map(|k| k.to_string()).collect())
                        .unwrap_or_default();
                    problems.push(format!(
                        "unknown module `{id}` in {} (modules here: {})",
                        shown(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                } else {
                    used.insert(format!("module.{id}"));
                }
                continue;
            }
            if scope.has(root)
                || (root == "facts" && self.facts.is_some())
                || (root == "data" && self.data.is_some())
            {
                continue;
            }
            if matches!(root, "each" | "count") {
                problems.push(format!(
                    "`{root}` in {} is defined only in a resource with `{}`",
                    shown(),
                    if root == "each" { "for_each" } else { "count" }
                ));
                continue;
            }
            // Built-in functions (`range`, `dict`) are globals of the environment.
            if member.is_none() && self.env.globals().any(|(g, _)| g == root) {
                continue;
            }
            if !ROOTS.contains(&root) {
                problems.push(format!(
                    "unknown name `{root}` in {} (expressions read `var.NAME`, `facts.…`, `data.…` and `module.ID.OUTPUT`; another resource's field is `${{resources.ID.FIELD}}` on its own)",
                    shown()
                ));
                continue;
            }
            if let Some(var) = member {
                if self.vars.contains(var) {
                    used.insert(var.to_owned());
                } else {
                    let known: Vec<&str> = self.vars.iter().map(String::as_str).collect();
                    problems.push(format!(
                        "unknown variable `{var}` (declared: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let context = minijinja::Value::from_pairs(
            std::iter::once(("var", self.var.clone()))
                .chain(self.facts.iter().map(|f| ("facts", f.clone())))
                .chain(self.data.iter().map(|d| ("data", d.clone())))
                .chain(scope.entries.iter().map(|(n, v)| (*n, v.clone()))),
        );
        let value = expr
            .eval(context)
            .map_err(|e| format!("in {}: {}", shown(), describe(&e)))?;
        // What the templates it rendered read (a sensitive variable makes it sensitive).
        TEMPLATE_VARS.with(|t| {
            let t = t.borrow();
            if t.contains(ALL_VARS) {
                used.extend(self.vars.iter().cloned());
            } else {
                used.extend(t.iter().filter(|v| self.vars.contains(*v)).cloned());
            }
        });
        if value.is_undefined() {
            return Err(format!("in {}: the value is undefined", shown()));
        }
        let json = serde_json::to_value(&value)
            .map_err(|e| format!("in {}: the value cannot be used: {e}", shown()))?;
        let size = match &json {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        if size > MAX_VALUE_BYTES {
            return Err(format!(
                "in {}: the value is {size} bytes, over the limit of {MAX_VALUE_BYTES} (MAX_VALUE_BYTES)",
                shown()
            ));
        }
        Ok((json, used))
    }
}

/// A minijinja error as one sentence, naming the limit when fuel ran out.
fn describe(e: &minijinja::Error) -> String {
    let detail = e
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| e.to_string());
    match e.kind() {
        ErrorKind::OutOfFuel => format!(
            "it ran out of fuel (EXPR_FUEL: {EXPR_FUEL} instructions): an expression this long-running is a mistake"
        ),
        ErrorKind::UnknownFilter => format!("unknown filter: {detail}"),
        ErrorKind::UnknownFunction => format!("unknown function: {detail}"),
        ErrorKind::UnknownTest => format!("unknown test: {detail}"),
        ErrorKind::UndefinedError => format!("undefined value: {detail}"),
        ErrorKind::SyntaxError => format!("syntax error: {detail}"),
        _ => detail,
    }
}

/// Why `name` cannot name a template (`None` when it can): a path relative to the
/// manifest's directory, without `..`.
fn bad_template_name(name: &str) -> Option<&'static str> {
    let relative = Path::new(name);
    (relative.is_absolute()
        || name.contains('\\')
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_))))
    .then_some("a template is named by a path relative to the manifest's directory, without `..`")
}

/// The loader: `name` relative to `root`, never outside it.
fn load_template(
    root: &Path,
    name: &str,
    seen: &Mutex<Seen>,
) -> Result<Option<String>, minijinja::Error> {
    let refuse = |why: &str| {
        Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("template `{name}`: {why}"),
        ))
    };
    let relative = Path::new(name);
    if let Some(why) = bad_template_name(name) {
        return refuse(why);
    }
    let path: PathBuf = root.join(relative);
    let real = match path.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return refuse(&e.to_string()),
    };
    if !real.starts_with(root) {
        return refuse(&format!(
            "it leads out of the manifest's directory (to {})",
            real.display()
        ));
    }
    let meta = match std::fs::metadata(&real) {
        Ok(m) => m,
        Err(e) => return refuse(&e.to_string()),
    };
    if !meta.is_file() {
        return refuse("not a regular file");
    }
    let size = meta.len();
    if size > MAX_TEMPLATE_BYTES {
        return refuse(&format!(
            "{size} bytes, over the limit of {MAX_TEMPLATE_BYTES} (MAX_TEMPLATE_BYTES)"
        ));
    }
    let text = match std::fs::read_to_string(&real) {
        Ok(t) => t,
        Err(e) => return refuse(&e.to_string()),
    };
    if let Ok(mut s) = seen.lock() {
        s.insert(name.to_owned(), text.clone());
    }
    Ok(Some(text))
}

/// `template(name, args)`: render the template `name` with `args` (a map) plus `var`,
/// `each` and `count` as the calling expression sees them.
fn render_template(
    state: &minijinja::State<'_, '_>,
    name: String,
    args: Option<minijinja::Value>,
) -> Result<String, minijinja::Error> {
    if TEMPLATE_DEPTH.with(|d| *d.borrow()) > 0 {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "template(\"{name}\") inside a template: use {{% include %}} or {{% import %}} there"
            ),
        ));
    }
    let env = state.env();
    let tmpl = env.get_template(&name).map_err(|e| located(&name, &e))?;
    let mut pairs: Vec<(String, minijinja::Value)> = Vec::new();
    if let Some(args) = &args {
        if args.kind() != minijinja::value::ValueKind::Map {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "template(\"{name}\", …): the second argument must be a map of names to values"
                ),
            ));
        }
        for key in args.try_iter()? {
            let value = args.get_item(&key)?;
            pairs.push((key.to_string(), value));
        }
    }
    for root in ["var", "facts", "data", "each", "count"] {
        if let Some(v) = state.lookup(root) {
            pairs.push((root.to_owned(), v));
        }
    }
    // Which variables it reads, with the templates it includes or imports: a sensitive one
    // makes the result sensitive. Reading `var` as a whole, or a template whose name is
    // not written out, counts as reading every variable.
    let read = template_reads(env, &name);
    TEMPLATE_DEPTH.with(|d| *d.borrow_mut() += 1);
    let rendered = tmpl.render(minijinja::Value::from_pairs(pairs));
    TEMPLATE_DEPTH.with(|d| *d.borrow_mut() -= 1);
    let rendered = rendered.map_err(|e| located(&name, &e))?;
    TEMPLATE_VARS.with(|t| t.borrow_mut().extend(read));
    Ok(rendered)
}

/// The variables (`var.NAME` → `NAME`) template `name` reads, with every template it
/// includes, imports or extends by a written-out name; [`ALL_VARS`] when that cannot be
/// known.
fn template_reads(env: &Environment<'_>, name: &str) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) || seen.len() > 64 {
            continue;
        }
        let Ok(t) = env.get_template(&n) else {
            continue;
        };
        let names = t.undeclared_variables(true);
        if names.contains("var") {
            return vec![ALL_VARS.to_owned()];
        }
        out.extend(names.iter().filter_map(|v| {
            v.strip_prefix("var.")
                .map(|v| v.split('.').next().unwrap_or(v).to_owned())
        }));
        match referenced(t.source()) {
            Some(names) => todo.extend(names),
            None => return vec![ALL_VARS.to_owned()],
        }
    }
    out.into_iter().collect()
}

/// The template names `{% include %}`, `{% import %}`, `{% from %}` and `{% extends %}`
/// tags of `source` name; `None` when one names it by an expression.
fn referenced(source: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find("{%") {
        rest = &rest[i + 2..];
        let tag = rest.trim_start_matches(['-', '+']).trim_start();
        let Some(word) = ["include", "import", "from", "extends"]
            .into_iter()
            .find(|w| tag.starts_with(w))
        else {
            continue;
        };
        let arg = tag[word.len()..].trim_start();
        let quote = arg.chars().next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let end = arg[1..].find(quote)?;
        out.push(arg[1..1 + end].to_owned());
    }
    Some(out)
}

/// What `TEMPLATE_VARS` holds when a template read variables it cannot name.
const ALL_VARS: &str = "*";

thread_local! {
    /// Templates being rendered on this thread (`template()` is refused inside one: each
    /// rendering would start with fresh fuel and recursion depth).
    static TEMPLATE_DEPTH: std::cell::RefCell<usize> = const { std::cell::RefCell::new(0) };
    /// Variables read by templates rendered on this thread since the last expression.
    static TEMPLATE_VARS: std::cell::RefCell<BTreeSet<String>> = const { std::cell::RefCell::new(BTreeSet::new()) };
}

/// An error inside a template, as `template NAME:LINE:COL: what`.
fn located(name: &str, e: &minijinja::Error) -> minijinja::Error {
    let file = e.name().unwrap_or(name);
    let line = e.line().unwrap_or(0);
    let col = match (e.template_source(), e.range()) {
        (Some(src), Some(r)) => src
            .get(..r.start)
            .and_then(|before| before.rsplit('\n').next())
            .map_or(1, |l| l.chars().count() + 1),
        _ => 1,
    };
    let what = describe(e);
    // A nested template's error already says where it is.
    if what.starts_with("template ") {
        return minijinja::Error::new(ErrorKind::InvalidOperation, what);
    }
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("template {file}:{line}:{col}: {what}"),
    )
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Split `text` into literal text and `${ … }` expressions. An expression ends at the
/// `}` that closes its `${`, skipping braces inside brackets and string literals; `$${`
/// is a literal `${` (kept escaped before `resources.`, for the engine to unescape).
fn scan(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("$${") {
            let after = &text[i + 3..];
            let trimmed = after.trim_start();
            if trimmed.starts_with("resources.") {
                // Kept escaped for the engine, which unescapes `$${resources.`.
                lit.push_str("$${");
                i += 3 + (after.len() - trimmed.len());
            } else {
                lit.push_str("${");
                i += 3;
            }
            continue;
        }
        if !text[i..].starts_with("${") {
            let c = text[i..].chars().next().unwrap_or_default();
            lit.push(c);
            i += c.len_utf8();
            continue;
        }
        let start = i + 2;
        let mut depth = 0usize;
        let mut quote: Option<u8> = None;
        let mut j = start;
        let end = loop {
            let Some(&b) = bytes.get(j) else {
                return Err(format!("unterminated `${{` in `{}`", one_line(text)));
            };
            match (quote, b) {
                (Some(q), b'\\') if q != 0 => j += 1,
                (Some(q), b) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(b),
                (None, b'{' | b'[' | b'(') => depth += 1,
                (None, b']' | b')') => depth = depth.saturating_sub(1),
                (None, b'}') if depth == 0 => break j,
                (None, b'}') => depth -= 1,
                _ => {}
            }
            j += 1;
        };
        if !lit.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut lit)));
        }
        let src = &text[start..end];
        if src.trim().is_empty() {
            return Err(format!("empty `${{}}` in `{}`", one_line(text)));
        }
        out.push(Piece::Expr(src));
        i = end + 1;
    }
    if !lit.is_empty() {
        out.push(Piece::Text(lit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev() -> Evaluator {
        Evaluator::new(
            &BTreeMap::from([
                ("env".to_owned(), json!("prod")),
                ("port".to_owned(), json!(8080)),
                ("sites".to_owned(), json!(["a.example", "b.example"])),
                ("limits".to_owned(), json!({"cpu": 2, "mem": "1G"})),
            ]),
            None,
            None,
            None,
        )
    }

    fn value(text: &str) -> Value {
        ev().eval_text(text)
            .expect("evaluates")
            .expect("has expressions")
            .value
    }

    #[test]
    fn expressions_keep_their_type_when_they_are_the_whole_string() {
        assert_eq!(value("${ var.port + 1 }"), json!(8081));
        assert_eq!(value("${var.port > 1024}"), json!(true));
        assert_eq!(value("${ var.sites }"), json!(["a.example", "b.example"]));
        assert_eq!(value("${ var.limits.cpu * 2 }"), json!(4));
        assert_eq!(value("${ var.limits[\"mem\"] }"), json!("1G"));
        assert_eq!(value("${ {\"a\": var.port}[\"a\"] }"), json!(8080));
        assert_eq!(value("${ var.sites | length }"), json!(2));
    }

    #[test]
    fn inside_text_values_are_written_out() {
        assert_eq!(
            value("/srv/${ var.env | upper }/${var.port}"),
            json!("/srv/PROD/8080")
        );
        assert_eq!(
            value("${ var.sites | join(\",\") }!"),
            json!("a.example,b.example!")
        );
        assert_eq!(value("${ var.env | replace(\"o\", \"0\") }"), json!("pr0d"));
        assert_eq!(
            value("${ var.limits.gpu | default(\"none\") }"),
            json!("none")
        );
        assert_eq!(
            value("${ \"dev\" if var.env != \"prod\" else \"live\" }"),
            json!("live")
        );
        assert_eq!(
            value("cost: $${x} and ${ \"}\" }"),
            json!("cost: ${x} and }")
        );
    }

    #[test]
    fn references_to_resources_stay_for_the_engine() {
        assert_eq!(
            value("${var.env}/${resources.x-y.path}"),
            json!("prod/${resources.x-y.path}")
        );
        assert_eq!(value("a $${resources.x.y}"), json!("a $${resources.x.y}"));
    }

    #[test]
    fn every_problem_is_named() {
        let errs = |t: &str| ev().eval_text(t).expect_err("an error").join(" | ");
        let e = errs("${ var.a }-${ var.b }");
        assert!(
            e.contains("unknown variable `a`") && e.contains("`b`"),
            "{e}"
        );
        assert!(e.contains("declared: env, limits, port, sites"), "{e}");
        assert!(errs("${ env.HOME }").contains("unknown name `env`"));
        assert!(
            errs("${ var.env | shout }").contains("unknown filter"),
            "{}",
            errs("${ var.env | shout }")
        );
        assert!(
            errs("${ now() }").contains("unknown name `now`")
                || errs("${ now() }").contains("unknown function")
        );
        let e = errs("${ \"a\" + 1 }");
        assert!(
            e.contains("in `${\"a\" + 1}`") && e.contains("unsupported types"),
            "{e}"
        );
        assert!(errs("${ var.port + }").contains("syntax error"));
        assert!(
            errs("${ var.limits.gpu }").contains("undefined"),
            "{}",
            errs("${ var.limits.gpu }")
        );
        let e = errs("${ \"x\" * 2000000 }");
        assert!(e.contains("over the limit of 1048576"), "{e}");
        assert!(errs("${ var.env").contains("unterminated"));
        assert!(errs("${ }").contains("empty"));
    }

    #[test]
    fn instances_see_each_and_count_and_others_do_not() {
        let scope = Scope::each("a.example", &json!({"port": 81}));
        let v = ev()
            .eval_in("${ each.key }:${ each.value.port + 1 }", &scope)
            .expect("ok")
            .expect("some");
        assert_eq!(v.value, json!("a.example:82"));
        let v = ev()
            .eval_in("${ count.index * 10 }", &Scope::count(3))
            .expect("ok")
            .expect("some");
        assert_eq!(v.value, json!(30));
        let e = ev()
            .eval_text("${ each.key }")
            .expect_err("no each")
            .join("");
        assert!(
            e.contains("defined only in a resource with `for_each`"),
            "{e}"
        );
    }

    /// A manifest directory with templates: `app.j2` includes `part.j2` and imports a
    /// macro; `bad.j2` reads an undefined name on line 2; `secret.j2` reads var.token.
    fn templates() -> (tempfile::TempDir, Evaluator) {
        let dir = tempfile::tempdir().expect("tmp");
        let t = dir.path().join("templates");
        std::fs::create_dir(&t).expect("dir");
        std::fs::write(
            t.join("app.j2"),
            "{% import 'templates/macros.j2' as m %}port {{ port }}\n{{ m.upper(var.env) }}\n{% include 'templates/part.j2' %}",
        )
        .expect("app");
        std::fs::write(
            t.join("part.j2"),
            "{% for s in sites %}site {{ s }}\n{% endfor %}",
        )
        .expect("part");
        std::fs::write(
            t.join("macros.j2"),
            "{% macro upper(x) %}{{ x | upper }}{% endmacro %}",
        )
        .expect("m");
        std::fs::write(t.join("bad.j2"), "line one\nport {{ nope }}\n").expect("bad");
        std::fs::write(t.join("secret.j2"), "token={{ var.token }}\n").expect("secret");
        std::fs::write(
            t.join("loop.j2"),
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        )
        .expect("loop");
        let ev = Evaluator::new(
            &BTreeMap::from([
                ("env".to_owned(), json!("prod")),
                ("token".to_owned(), json!("s3cret")),
            ]),
            Some(dir.path()),
            None,
            None,
        );
        (dir, ev)
    }

    #[test]
    fn templates_render_with_includes_macros_and_their_arguments() {
        let (_dir, ev) = templates();
        let v = ev
            .eval_text("${ template('templates/app.j2', {'port': 8080, 'sites': ['a', 'b']}) }")
            .expect("renders")
            .expect("some");
        assert_eq!(v.value, json!("port 8080\nPROD\nsite a\nsite b\n"));
        assert!(v.vars.contains("env"));
        assert_eq!(
            ev.templates().keys().collect::<Vec<_>>(),
            [
                "templates/app.j2",
                "templates/macros.j2",
                "templates/part.j2"
            ]
        );
        // A template that reads a variable reports it (a sensitive one makes it sensitive).
        let v = ev
            .eval_text("${ template('templates/secret.j2') }")
            .expect("ok")
            .expect("some");
        assert!(v.vars.contains("token"), "{:?}", v.vars);
    }

    #[test]
    fn template_errors_name_the_file_line_and_column_and_nothing_leaves_the_directory() {
        let (dir, ev) = templates();
        let e = ev
            .eval_text("${ template('templates/bad.j2') }")
            .expect_err("undefined")
            .join("");
        assert!(
            e.contains("template templates/bad.j2:2:9: undefined value"),
            "{e}"
        );
        let e = ev
            .eval_text("${ template('templates/none.j2') }")
            .expect_err("missing")
            .join("");
        assert!(
            e.contains("templates/none.j2") && e.contains("does not exist"),
            "{e}"
        );
        for escape in ["../etc/passwd", "/etc/passwd", "templates/../../x"] {
            let e = ev
                .eval_text(&format!("${{ template('{escape}') }}"))
                .expect_err("refused")
                .join("");
            assert!(
                e.contains("relative to the manifest's directory"),
                "{escape}: {e}"
            );
        }
        // A symlink inside the directory that leads out of it.
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("templates/out.j2"))
            .expect("link");
        let e = ev
            .eval_text("${ template('templates/out.j2') }")
            .expect_err("refused")
            .join("");
        assert!(e.contains("leads out of the manifest's directory"), "{e}");
        // A runaway template runs out of fuel, naming the limit.
        let e = ev
            .eval_text("${ template('templates/loop.j2') }")
            .expect_err("fuel")
            .join("");
        assert!(e.contains("fuel"), "{e}");
        // Without a directory, there are no templates.
        let e = super::tests::ev()
            .eval_text("${ template('x.j2') }")
            .expect_err("none")
            .join("");
        assert!(e.contains("unknown"), "{e}");
    }

    #[test]
    fn reading_var_whole_or_through_other_templates_counts_as_reading_every_variable() {
        let (dir, ev) = templates();
        let v = ev
            .eval_text("${ var['token'] }")
            .expect("ok")
            .expect("some");
        assert!(v.vars.contains("token"), "{:?}", v.vars);
        // app.j2 imports and includes by name: those are read too, and they read no secret.
        let v = ev
            .eval_text("${ template('templates/app.j2', {'port': 1, 'sites': []}) }")
            .expect("ok")
            .expect("some");
        assert!(
            v.vars.contains("env") && !v.vars.contains("token"),
            "{:?}",
            v.vars
        );
        // One that includes by an expression could read anything.
        std::fs::write(dir.path().join("templates/dyn.j2"), "{% include which %}").expect("dyn");
        std::fs::write(
            dir.path().join("templates/inc.j2"),
            "{% include 'templates/secret.j2' %}",
        )
        .expect("inc");
        let v = ev
            .eval_text("${ template('templates/inc.j2') }")
            .expect("ok")
            .expect("some");
        assert!(
            v.vars.contains("token"),
            "an included template's secret counts: {:?}",
            v.vars
        );
        let v = ev
            .eval_text(
                "${ template('templates/dyn.j2', {'which': 'templates/part.j2', 'sites': []}) }",
            )
            .expect("ok")
            .expect("some");
        assert!(v.vars.contains("token"), "{:?}", v.vars);
        // template() inside a template is refused (fresh fuel and depth each time).
        std::fs::write(
            dir.path().join("templates/self.j2"),
            "{{ template('templates/self.j2') }}",
        )
        .expect("self");
        let e = ev
            .eval_text("${ template('templates/self.j2') }")
            .expect_err("refused")
            .join("");
        assert!(e.contains("inside a template"), "{e}");
        // A FIFO is not read (it would block).
        let fifo = dir.path().join("templates/pipe.j2");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = ev
                .eval_text("${ template('templates/pipe.j2') }")
                .expect_err("fifo")
                .join("");
            assert!(e.contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn references_keep_working_with_spaces() {
        assert_eq!(
            value("${ resources.db.port }"),
            json!("${resources.db.port}")
        );
        assert_eq!(
            value("$${ resources.db.port }"),
            json!("$${resources.db.port }")
        );
    }

    #[test]
    fn the_variables_used_are_reported() {
        let e = ev()
            .eval_text("${ var.env | upper }-${ var.port }")
            .expect("ok")
            .expect("some");
        assert_eq!(
            e.vars,
            BTreeSet::from(["env".to_owned(), "port".to_owned()])
        );
    }
}
