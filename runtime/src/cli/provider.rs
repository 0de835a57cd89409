//! `tenet provider build`: build a provider from source, whatever its language — Rust
//! (cargo, wasm32-wasip2), Python (componentize-py) or JavaScript (jco with the QuickJS
//! backend) — against the WIT this `tenet` speaks (the project's own `wit/` if it has
//! one, else the copy embedded in the binary). `tenet provider test`: the conformance
//! kit ([`crate::provider::conformance`]) against any provider, with fixtures from its
//! directory.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The WIT this binary implements, written out for guest toolchains:
/// (path inside a WIT directory, text).
pub const WIT_FILES: &[(&str, &str)] = &[
    (
        "provider.wit",
        include_str!("../../../wit/provider/provider.wit"),
    ),
    (
        "deps/host/host.wit",
        include_str!("../../../wit/host/host.wit"),
    ),
    (
        "deps/wasi-io.wit",
        include_str!("../../../wit/provider/deps/wasi-io.wit"),
    ),
    (
        "deps/wasi-clocks.wit",
        include_str!("../../../wit/provider/deps/wasi-clocks.wit"),
    ),
    (
        "deps/wasi-filesystem.wit",
        include_str!("../../../wit/provider/deps/wasi-filesystem.wit"),
    ),
];

/// The world interpreted languages build against: everything but `exec`, whose import
/// would need a grant (their toolchains import every interface of the world).
pub const CORE_WORLD: &str = "provider-core";
/// Versions the build commands were tested with (see `.ci/run`).
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
pub const JCO: &str = "@bytecodealliance/jco@1.35.0";

#[derive(Debug, Args)]
pub struct ProviderArgs {
    #[command(subcommand)]
    command: ProviderCommand,
}

#[derive(Debug, Subcommand)]
enum ProviderCommand {
    /// Build the provider in DIR (language found from its files: Cargo.toml, app.py or
    /// provider.js) into a component.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Component to write (default: DIR/<directory name>.wasm).
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
    },
    /// Write a working, buildable provider skeleton (one example kind `note`, its
    /// fixtures and — in Rust — a unit test) into a new directory NAME.
    New {
        name: String,
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: path to the tenet-sdk crate (default: the SDK this tenet was built
        /// from, when it is still there).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run the provider contract against a provider: a component or bundle, or
    /// builtin:NAME. Prints a pass/fail table; exits 1 if a check fails.
    Test {
        provider: String,
        /// Fixtures: KIND.yaml files, each mapping fixture names to `{properties, update,
        /// delete: keeps}` (`delete: keeps` for kinds whose delete leaves things as they
        /// are) (default: the provider's directory's `fixtures/`).
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Extra grants for the provider (a YAML mapping like a manifest's `grants:`), on
        /// top of the scratch directory. Never taken implicitly: grants are the operator's
        /// decision, and the kit only watches the scratch directory for changes.
        #[arg(long, value_name = "FILE")]
        grants: Option<PathBuf>,
        /// Deadline per call (a provider call that runs longer fails its check).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// The languages `tenet provider build` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    /// The language of the provider in `dir`, from the file each toolchain starts at.
    pub fn of(dir: &Path) -> anyhow::Result<Lang> {
        let found: Vec<Lang> = [
            ("Cargo.toml", Lang::Rust),
            ("app.py", Lang::Python),
            ("provider.js", Lang::Js),
        ]
        .into_iter()
        .filter(|(f, _)| dir.join(f).is_file())
        .map(|(_, l)| l)
        .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => bail!(
                "{}: no provider source found (expected Cargo.toml for Rust, app.py for Python or provider.js for JavaScript)",
                dir.display()
            ),
            _ => bail!(
                "{}: more than one of Cargo.toml, app.py, provider.js; keep one language per directory",
                dir.display()
            ),
        }
    }
}

pub async fn execute(args: ProviderArgs) -> anyhow::Result<u8> {
    match args.command {
        ProviderCommand::Test {
            provider,
            fixtures,
            grants,
            timeout,
        } => test(&provider, fixtures, grants, timeout).await,
        ProviderCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold(&name, lang, &dir, sdk)?;
            println!(
                "Created {} ({lang:?} provider `{name}`, kind `note`). Next: `tenet provider build {}` then `tenet provider test {}`.",
                dir.display(),
                dir.display(),
                dir.join(format!("{name}.wasm")).display()
            );
            Ok(0)
        }
        ProviderCommand::Build { dir, out } => {
            let out = match out {
                Some(o) => o,
                None => {
                    let name = std::fs::canonicalize(&dir)
                        .with_context(|| format!("cannot read {}", dir.display()))?
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "provider".into());
                    dir.join(format!("{name}.wasm"))
                }
            };
            let started = std::time::Instant::now();
            let lang = build(&dir, &out)?;
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            println!(
                "Built {} ({lang:?}, {}) in {:.1} s.",
                out.display(),
                bytesize::ByteSize::b(size),
                started.elapsed().as_secs_f64()
            );
            Ok(0)
        }
    }
}

/// Write the embedded WIT into `dir` (a `wit/` directory for guest toolchains).
pub fn write_wit(dir: &Path) -> anyhow::Result<()> {
    for (name, text) in WIT_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A tool: `$ENV` if set, else `name` on PATH.
fn tool(name: &str, env: &str, install: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| anyhow::anyhow!("`{name}` is not installed: {install} (or set {env})"))
}

fn run(mut c: Command, what: &str) -> anyhow::Result<std::process::Output> {
    let o = c.output().with_context(|| format!("cannot run {what}"))?;
    if !o.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(o)
}

/// Build the provider in `dir` into the component `out`; returns its language.
pub fn build(dir: &Path, out: &Path) -> anyhow::Result<Lang> {
    let lang = Lang::of(dir)?;
    let out = std::path::absolute(out).with_context(|| format!("bad path {}", out.display()))?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // The project's own WIT if it has one, else the one this binary speaks.
    let embedded;
    let wit = if dir.join("wit").join("provider.wit").is_file() {
        std::path::absolute(dir.join("wit"))?
    } else {
        embedded = tempfile::tempdir()?;
        write_wit(embedded.path())?;
        embedded.path().to_path_buf()
    };
    match lang {
        Lang::Python => {
            let py = tool(
                "componentize-py",
                "TENET_COMPONENTIZE_PY",
                &format!("pip install {COMPONENTIZE_PY}"),
            )?;
            let mut c = Command::new(py);
            c.current_dir(dir)
                .arg("-d")
                .arg(&wit)
                .args(["-w", CORE_WORLD, "componentize", "app", "-o"])
                .arg(&out);
            run(c, "componentize-py")?;
        }
        Lang::Js => {
            let jco = tool("jco", "TENET_JCO", &format!("npm install {JCO}"))?;
            let mut c = Command::new(jco);
            c.current_dir(dir)
                .args(["componentize", "provider.js", "--wit"])
                .arg(&wit)
                .args(["--world-name", CORE_WORLD, "--backend", "quickjs", "-o"])
                .arg(&out);
            run(c, "jco componentize")?;
        }
        Lang::Rust => {
            let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            // A plain library natively (so `cargo test` links); a `cdylib` — a component —
            // only for wasm32-wasip2.
            c.current_dir(dir).args([
                "rustc",
                "--lib",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--crate-type",
                "cdylib",
                "--message-format=json-render-diagnostics",
            ]);
            let o = run(c, "cargo build")?;
            // The last .wasm artifact cargo reports is the provider's.
            let built = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|m| m["reason"] == "compiler-artifact")
                .flat_map(|m| {
                    m["filenames"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|f| f.as_str().map(PathBuf::from))
                        .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
                        .collect::<Vec<_>>()
                })
                .next_back()
                .context("cargo built no .wasm: is there a library target (src/lib.rs)?")?;
            std::fs::copy(&built, &out)
                .with_context(|| format!("cannot copy {} to {}", built.display(), out.display()))?;
        }
    }
    Ok(lang)
}

/// The fixtures in `dir`: kind → cases, and extra grants (`grants.yaml`). Every problem
/// is reported with its file and line.
fn read_fixtures(
    dir: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<crate::provider::conformance::Case>>> {
    use crate::manifest::yaml;
    let mut kinds = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the fixtures directory {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let (value, spans) = match yaml::parse(&file, &text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{}: {}", e.location, e.message));
                continue;
            }
        };
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(items) = value.as_object() else {
            problems.push(format!(
                "{}: a fixtures file maps fixture names to {{properties, update}}",
                spans.value("")
            ));
            continue;
        };
        let mut cases = Vec::new();
        for (name, item) in items {
            let at = spans.value(&format!("/{name}"));
            let Some(properties) = item.get("properties").filter(|p| p.is_object()) else {
                problems.push(format!(
                    "{at}: fixture `{name}` needs `properties` (a mapping)"
                ));
                continue;
            };
            cases.push(crate::provider::conformance::Case {
                name: name.clone(),
                properties: properties.clone(),
                update: item.get("update").cloned(),
                delete_keeps: item.get("delete") == Some(&serde_json::json!("keeps")),
            });
        }
        kinds.insert(stem, cases);
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(kinds)
}

/// Make the kind's relative path properties absolute under `dir` (what the host does for
/// manifests).
fn resolve_paths(kind: &crate::provider::KindInfo, doc: &mut serde_json::Value, dir: &Path) {
    for prop in &kind.path_properties {
        if let Some(serde_json::Value::String(p)) = doc.get_mut(prop)
            && !Path::new(p.as_str()).is_absolute()
        {
            *p = crate::manifest::load::absolute(dir, Path::new(p.as_str()))
                .display()
                .to_string();
        }
    }
}

/// Everything observable under `dir` (paths, kinds, modes, contents, link targets; not
/// times), as one string.
fn fingerprint(dir: &Path) -> String {
    fn walk(p: &Path, out: &mut String) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        let mode = m.permissions().mode();
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(p).unwrap_or_default();
            out.push_str(&format!("{} link {}\n", p.display(), target.display()));
        } else if m.is_dir() {
            out.push_str(&format!("{} dir {mode:o}\n", p.display()));
            let mut children: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|e| e.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            children.sort();
            for c in children {
                walk(&c, out);
            }
        } else {
            let digest = std::fs::read(p)
                .map(|b| crate::distribution::bundle::digest(&b))
                .unwrap_or_default();
            out.push_str(&format!("{} file {mode:o} {digest}\n", p.display()));
        }
    }
    let mut out = String::new();
    walk(dir, &mut out);
    out
}

async fn test(
    provider: &str,
    fixtures: Option<PathBuf>,
    grants: Option<PathBuf>,
    timeout: std::time::Duration,
) -> anyhow::Result<u8> {
    use crate::provider::Provider as _;
    let (source, unsigned, default_fixtures) = match provider.strip_prefix("builtin:") {
        Some(_) => (provider.to_owned(), false, None),
        None => {
            let p = std::fs::canonicalize(provider)
                .with_context(|| format!("cannot read {provider}"))?;
            let dir = p.parent().map(|d| d.join("fixtures"));
            (p.display().to_string(), true, dir)
        }
    };
    let fixtures = fixtures
        .or(default_fixtures)
        .context("pass --fixtures DIR (a built-in provider has no directory of its own)")?;
    let cases = read_fixtures(&fixtures)?;
    let extra_grants = match &grants {
        None => serde_json::json!({}),
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            crate::manifest::yaml::parse(file, &text)
                .map_err(|e| anyhow::anyhow!("{}: {}", e.location, e.message))?
                .0
        }
    };

    // A scratch manifest granting the provider a scratch directory (plus the fixtures'
    // grants), so every call runs in the real sandbox with the real limits.
    let scratch = tempfile::tempdir()?;
    let root = std::fs::canonicalize(scratch.path())?;
    let work = root.join("work");
    std::fs::create_dir_all(&work)?;
    let mut grants = match extra_grants {
        serde_json::Value::Object(m) => serde_json::Value::Object(m),
        _ => serde_json::json!({}),
    };
    let fs = grants
        .as_object_mut()
        .map(|g| g.entry("fs").or_insert_with(|| serde_json::json!([])));
    if let Some(serde_json::Value::Array(list)) = fs {
        list.push(serde_json::json!({"path": work.display().to_string(), "access": "rw"}));
    }
    // Named after the component (or the built-in), so messages name it.
    let stem = provider
        .strip_prefix("builtin:")
        .map(str::to_owned)
        .or_else(|| {
            Path::new(provider)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        name = "provider".into();
    }
    let manifest = serde_json::json!({
        "providers": {&name: {
            "source": source,
            "unsigned": unsigned,
            "grants": grants,
            "limits": {"timeout": humantime::format_duration(timeout).to_string()},
        }}
    });
    let manifest_path = root.join("tenet.yaml");
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)?)?;
    let session = crate::session::Session::open(&crate::session::SessionOptions {
        path: manifest_path,
        ..crate::session::SessionOptions::default()
    })
    .await?;
    let p = session
        .providers
        .get(&name)
        .context("the provider did not load")?;
    let info = p.info().clone();
    println!(
        "Testing {} {} ({provider}) with fixtures from {}",
        info.name,
        info.version,
        fixtures.display()
    );

    let mut checks = Vec::new();
    let mut missing = Vec::new();
    for kind in info.kinds.values() {
        let Some(kind_cases) = cases.get(&kind.name).filter(|c| !c.is_empty()) else {
            missing.push(kind.name.clone());
            continue;
        };
        for case in kind_cases {
            let mut case = case.clone();
            resolve_paths(kind, &mut case.properties, &work);
            if let Some(u) = case.update.as_mut() {
                resolve_paths(kind, u, &work);
            }
            let observe = || fingerprint(&work);
            checks.extend(
                crate::provider::conformance::check_case(p.as_ref(), kind, &case, &observe).await,
            );
        }
    }
    for name in cases.keys().filter(|k| !info.kinds.contains_key(*k)) {
        missing.push(format!(
            "{name} (fixtures for a kind the provider does not describe)"
        ));
    }

    let width = |f: &dyn Fn(&crate::provider::conformance::Check) -> usize, min: usize| {
        checks.iter().map(f).max().unwrap_or(0).max(min)
    };
    let (wk, wc, wn) = (
        width(&|c| c.kind.len(), 4),
        width(&|c| c.case.len(), 7),
        width(&|c| c.name.len(), 5),
    );
    println!(
        "{:wk$}  {:wc$}  {:wn$}  {:6}  {:>9}",
        "KIND", "FIXTURE", "CHECK", "RESULT", "TIME"
    );
    for c in &checks {
        println!(
            "{:wk$}  {:wc$}  {:wn$}  {:6}  {:>7.1}ms",
            c.kind,
            c.case,
            c.name,
            if c.outcome.is_ok() { "ok" } else { "FAILED" },
            c.elapsed.as_secs_f64() * 1000.0
        );
    }
    let failed: Vec<_> = checks.iter().filter(|c| c.outcome.is_err()).collect();
    for c in &failed {
        if let Err(e) = &c.outcome {
            println!("\nFAILED {} / {} / {}:\n  {e}", c.kind, c.case, c.name);
        }
    }
    for m in &missing {
        println!("\nFAILED: no fixtures for kind {m}");
    }
    let slowest = checks.iter().map(|c| c.elapsed).max().unwrap_or_default();
    println!(
        "\n{} checks: {} passed, {} failed{}; slowest check {:.1} ms (limit per call {}).",
        checks.len(),
        checks.len() - failed.len(),
        failed.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!("; {} kinds without fixtures", missing.len())
        },
        slowest.as_secs_f64() * 1000.0,
        humantime::format_duration(session.manifest.providers[&name].limits.call_timeout)
    );
    Ok(
        if failed.is_empty() && missing.is_empty() && !checks.is_empty() {
            0
        } else {
            super::EXIT_ERROR
        },
    )
}

/// Where the SDK this binary was built with lives, if the checkout is still there.
fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| std::fs::canonicalize(&sdk).ok())
        .flatten()
}

/// Write a provider skeleton for `lang` into `dir` (which must not exist or be empty).
pub fn scaffold(name: &str, lang: Lang, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        bail!(
            "`{name}` is not a provider name: use lowercase letters, digits, `-` and `_`, starting with a letter"
        );
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty; not overwriting", dir.display());
    }
    let fill = |t: &str, sdk: &str| {
        t.replace("{{name}}", name)
            .replace("{{lang}}", &format!("{lang:?}"))
            .replace("{{sdk}}", sdk)
    };
    let mut files: Vec<(&str, String)> = vec![
        (
            "README.md",
            fill(include_str!("../../templates/README.md"), ""),
        ),
        (
            "fixtures/note.yaml",
            fill(include_str!("../../templates/fixtures_note.yaml"), ""),
        ),
    ];
    match lang {
        Lang::Rust => {
            let sdk = sdk.or_else(default_sdk).context(
                "pass --sdk PATH to the tenet-sdk crate (the one this tenet was built from is gone)",
            )?;
            let sdk = std::fs::canonicalize(&sdk)
                .with_context(|| format!("no tenet-sdk at {}", sdk.display()))?;
            // A TOML basic string.
            let sdk = sdk
                .display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            files.push((
                "Cargo.toml",
                fill(include_str!("../../templates/rust/Cargo.toml"), &sdk),
            ));
            files.push((
                "src/lib.rs",
                fill(include_str!("../../templates/rust/src_lib.rs"), &sdk),
            ));
        }
        Lang::Python => files.push((
            "app.py",
            fill(include_str!("../../templates/python/app.py"), ""),
        )),
        Lang::Js => files.push((
            "provider.js",
            fill(include_str!("../../templates/js/provider.js"), ""),
        )),
    }
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if lang != Lang::Rust {
        // Rust builds against the SDK's own WIT; the others need it beside them.
        write_wit(&dir.join("wit"))?;
    }
    Ok(())
}
