//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The misbehaving test provider, built from tests/guests/misbehave by the build script.
pub const MISBEHAVE_WASM: &str = env!("TENET_TEST_GUEST_MISBEHAVE_WASM");

/// The grants the misbehaving provider needs to load at all (it imports `tenet:host/exec`
/// and `wasi:http`), as YAML lines under `grants:` (6 spaces in).
pub const MISBEHAVE_GRANTS: &str = "      exec: [{program: /bin/echo, args: [[\"**\"]], mode: probe}]\n      net: [\"http://127.0.0.1:*\"]\n";

/// A compile cache shared by the tests of one run (compiling once keeps them fast).
pub fn cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tenet-compile-cache");
    std::fs::create_dir_all(&dir).expect("cache dir");
    dir
}

/// `tenet args` in `cwd`, stdin closed, with the test compile cache and no colour: for
/// tests that spawn it themselves (to interrupt it, kill it, or watch its memory).
pub fn tenet_command(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tenet"));
    c.args(args)
        .current_dir(cwd)
        .env("TENET_CACHE_DIR", cache_dir())
        .env("NO_COLOR", "1")
        .env_remove("TENET_LOG")
        .stdin(Stdio::null());
    c
}

/// Run `tenet` with `args` in `cwd` to completion.
pub fn tenet(cwd: &Path, args: &[&str]) -> Output {
    tenet_command(cwd, args).output().expect("run tenet")
}

/// Assert exit code 0, showing the output otherwise.
pub fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(o), stderr(o));
}

/// Assert exit code 1 with `text` on stderr.
pub fn fails_with(o: &Output, text: &str) {
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(o), stderr(o));
    assert!(
        stderr(o).contains(text),
        "expected {text:?} in:\n{}",
        stderr(o)
    );
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Everything observable about a tree: per path, kind, mode, mtime and content (or link
/// target). Used to prove a plan changes nothing.
/// (kind, mode, mtime seconds, mtime nanoseconds, content or link target).
pub type Entry = (String, u32, i64, i64, Vec<u8>);

pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let m = std::fs::symlink_metadata(p).expect("metadata");
        let (kind, data) = if m.file_type().is_symlink() {
            (
                "symlink",
                std::fs::read_link(p)
                    .expect("readlink")
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if m.is_dir() {
            ("dir", Vec::new())
        } else {
            ("file", std::fs::read(p).expect("read"))
        };
        out.insert(
            p.to_path_buf(),
            (kind.to_owned(), m.mode(), m.mtime(), m.mtime_nsec(), data),
        );
        if m.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .expect("readdir")
                .map(|e| e.expect("entry").path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

/// Write `body` as `dir/tenet.yaml`.
pub fn write_manifest(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("tenet.yaml");
    std::fs::write(&path, body).expect("write manifest");
    path
}
