//! Builds the built-in providers (`plugins/*`) for `wasm32-wasip2` from source, so that
//! `cargo build` / `cargo run` / `cargo test` need no extra step. The guests are built by
//! a nested cargo with its own target directory (`target/guests`, shared by every profile
//! so debug, test, clippy and release builds reuse one guest build) and embedded into the
//! `tenet` binary with `include_bytes!`.

use anyhow::{Context, bail};
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guests to build: (cargo package, env var the runtime reads the component path from).
/// The built-in providers are embedded in the binary; the test guests (hostile or
/// misbehaving providers) are only referenced by path from the integration tests.
const GUESTS: &[(&str, &str)] = &[
    ("tenet-plugin-file", "TENET_PLUGIN_FILE_WASM"),
    ("tenet-plugin-exec", "TENET_PLUGIN_EXEC_WASM"),
    ("tenet-plugin-cron", "TENET_PLUGIN_CRON_WASM"),
    ("tenet-plugin-account", "TENET_PLUGIN_ACCOUNT_WASM"),
    ("tenet-plugin-apt", "TENET_PLUGIN_APT_WASM"),
    ("tenet-plugin-service", "TENET_PLUGIN_SERVICE_WASM"),
    ("tenet-plugin-http", "TENET_PLUGIN_HTTP_WASM"),
    (
        "tenet-test-guest-misbehave",
        "TENET_TEST_GUEST_MISBEHAVE_WASM",
    ),
    (
        "tenet-test-guest-future-abi",
        "TENET_TEST_GUEST_FUTURE_ABI_WASM",
    ),
    (
        "tenet-test-guest-abi-0-1-0",
        "TENET_TEST_GUEST_ABI_0_1_0_WASM",
    ),
];

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("runtime/ has no parent directory")?
        .to_path_buf();
    for input in [
        "plugins",
        "tests/guests",
        "sdk/src",
        "sdk/Cargo.toml",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=TENET_GUEST_TARGET_DIR");

    let target_dir = match env::var_os("TENET_GUEST_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("guests"),
    };
    ensure_wasm_target()?;
    build_guests(&root, &target_dir)?;
    for (package, var) in GUESTS {
        let wasm = target_dir
            .join("wasm32-wasip2")
            .join("guest")
            .join(format!("{}.wasm", package.replace('-', "_")));
        if !wasm.is_file() {
            bail!("guest build succeeded but {} is missing", wasm.display());
        }
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
    Ok(())
}

/// rustup installs the targets of rust-toolchain.toml only when it installs the
/// toolchain; on a machine that already had the toolchain, add the target here so a
/// fresh checkout needs no manual step.
fn ensure_wasm_target() -> anyhow::Result<()> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .context("cannot run rustc")?;
    let dir = String::from_utf8_lossy(&libdir.stdout).trim().to_owned();
    if libdir.status.success() && Path::new(&dir).is_dir() {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", "wasm32-wasip2"]);
    if let Some(toolchain) = env::var_os("RUSTUP_TOOLCHAIN") {
        cmd.arg("--toolchain").arg(toolchain);
    }
    let status = cmd
        .status()
        .context("the wasm32-wasip2 target is missing and rustup is not available to add it")?;
    if !status.success() {
        bail!("`rustup target add wasm32-wasip2` failed ({status})");
    }
    Ok(())
}

fn build_guests(root: &Path, target_dir: &Path) -> anyhow::Result<()> {
    for (package, _) in GUESTS {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // `cargo rustc --crate-type cdylib`: the crate stays an rlib for native builds
        // (a native cdylib cannot export component symbol names).
        cmd.current_dir(root)
            .args([
                "rustc",
                "--locked",
                "--lib",
                "--crate-type",
                "cdylib",
                "--profile",
                "guest",
                "--target",
                "wasm32-wasip2",
                "-p",
                package,
            ])
            .arg("--target-dir")
            .arg(target_dir);
        // The outer build's flags and wrappers (clippy-driver, coverage, sanitizers) are
        // for the host; they must not leak into the guest build.
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_LLVM_COV",
        ] {
            cmd.env_remove(var);
        }
        let status = cmd
            .status()
            .with_context(|| format!("cannot run cargo to build {package}"))?;
        if !status.success() {
            bail!(
                "building {package} for wasm32-wasip2 failed ({status}); the target comes from \
                 rust-toolchain.toml (`rustup target add wasm32-wasip2`)"
            );
        }
    }
    Ok(())
}
