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
    (
        "tenet-test-guest-misbehave",
        "TENET_TEST_GUEST_MISBEHAVE_WASM",
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
