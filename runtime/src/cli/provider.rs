//! `tenet provider build`: build a provider from source, whatever its language — Rust
//! (cargo, wasm32-wasip2), Python (componentize-py) or JavaScript (jco with the QuickJS
//! backend) — against the WIT this `tenet` speaks (the project's own `wit/` if it has
//! one, else the copy embedded in the binary).

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

pub fn execute(args: ProviderArgs) -> anyhow::Result<u8> {
    match args.command {
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
            c.current_dir(dir).args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
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
                .context("cargo built no .wasm: is the crate type `cdylib`?")?;
            std::fs::copy(&built, &out)
                .with_context(|| format!("cannot copy {} to {}", built.display(), out.display()))?;
        }
    }
    Ok(lang)
}
