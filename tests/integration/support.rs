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

/// The key of the test compile cache (kept out of the user's data directory).
pub fn cache_key() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tenet-compile-cache.key")
}

/// The test compile cache, for tests that load providers in this process.
pub fn compile_cache() -> tenet::wasm::plugin::CompileCache {
    tenet::wasm::plugin::CompileCache::with_key_file(Some(cache_dir()), Some(cache_key()))
}

/// `tenet args` in `cwd`, stdin closed, with the test compile cache and no colour: for
/// tests that spawn it themselves (to interrupt it, kill it, or watch its memory).
pub fn tenet_command(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tenet"));
    c.args(args)
        .current_dir(cwd)
        .env("TENET_CACHE_DIR", cache_dir())
        .env("TENET_CACHE_KEY", cache_key())
        // Installed plugins go to the test's own directory, and no real registry
        // credentials are picked up.
        .env("TENET_STORE_DIR", cwd.join(".tenet-store"))
        .env("DOCKER_CONFIG", cwd.join(".docker"))
        .env_remove("TENET_REGISTRY_USERNAME")
        .env_remove("TENET_REGISTRY_PASSWORD")
        .env_remove("TENET_REGISTRY_HOST")
        .env("NO_COLOR", "1")
        .env_remove("TENET_LOG")
        .stdin(Stdio::null());
    c
}

/// Start `tenet args` in `cwd` and return once it printed its plan (`Plan: …`), so the
/// apply is about to start: the child and its stdout, read up to there. The caller
/// waits for the child.
#[allow(clippy::zombie_processes)]
pub fn started_applying(
    cwd: &Path,
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
    String,
) {
    use std::io::BufRead;
    let mut child = tenet_command(cwd, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tenet");
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            panic!("tenet ended before applying: {out}");
        }
        out.push_str(&line);
        if line.starts_with("Plan:") {
            return (child, reader, out);
        }
    }
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

/// Assert `text` contains `needle`, showing the text otherwise.
pub fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One path of a [`snapshot`]: (kind, mode, mtime seconds, mtime nanoseconds, content
/// or link target).
pub type Entry = (String, u32, i64, i64, Vec<u8>);

/// Everything observable about a tree: per path, kind, mode, mtime and content (or link
/// target). Used to prove a plan changes nothing.
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

/// A tool the tests need from Debian: its path, or `None` (with the reason printed) when
/// it is missing and this is not CI. In CI (`CI` set) a missing tool fails the test:
/// `.ci/run` installs it.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "`{name}` is not installed; scripts/test installs it"
        );
        skipped(&format!("`{name}` is not installed"));
    }
    found
}

/// Whether the test runs as root (it changes the machine: packages, users, services).
/// Not root: a failure in CI (which runs as root), a visible skip elsewhere, saying what
/// could not be done.
pub fn as_root(what: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test needs root in CI: {what}"
        );
        skipped(&format!("not root: cannot {what}"));
    }
    root
}

/// Tests that skipped, and why: printed as they happen and again when the test binary
/// exits, past the harness's output capture, so a plain `cargo test` that checked less
/// than everything says so.
static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Record that the current test skips (some or all of its checks) because of `reason`.
/// Only outside CI: `tool` fails the test there instead.
pub fn skipped(reason: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!("{test}: {reason}");
    // Straight to the file descriptor: the harness captures only `print!`/`eprint!`.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {line} (scripts/test installs it)"
    );
    if let Ok(mut all) = SKIPPED.lock() {
        all.push(line);
    }
}

extern "C" fn print_skipped() {
    use std::io::Write;
    let Ok(all) = SKIPPED.lock() else { return };
    if all.is_empty() {
        return;
    }
    let mut text = format!(
        "\n{} test(s) skipped checks because tools are missing; run scripts/test (installs them, then runs everything):\n",
        all.len()
    );
    for line in all.iter() {
        text.push_str(&format!("  SKIPPED {line}\n"));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Runs [`print_skipped`] when the process exits normally (after the harness's summary).
#[used]
#[unsafe(link_section = ".fini_array")]
static PRINT_SKIPPED_AT_EXIT: extern "C" fn() = print_skipped;

/// One HTTP/1.1 request to `addr` (`headers`: whole lines without their CRLF), on a
/// connection of its own: the status (0 if none came back) and the body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .ok();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// Read a spawned tenet's stderr until it says where it serves (the text after
/// `serving http://` up to the first space or `/`): that address, and its stderr so far
/// and from then on (collected by a thread).
pub fn serving_address(
    child: &mut std::process::Child,
) -> (String, std::sync::Arc<std::sync::Mutex<String>>) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut seen = String::new();
    let addr = loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            let _ = child.wait();
            panic!("it ended before serving: {seen}");
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("serving http://").nth(1) {
            let end = rest.find(['/', ' ', '\n']).unwrap_or(rest.len());
            break rest[..end].to_owned();
        }
    };
    let log = std::sync::Arc::new(std::sync::Mutex::new(seen));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    (addr, log)
}

/// A key pair in `d`: (name.pub, name.key) written by `tenet key generate`; the key id.
pub fn key(d: &Path, name: &str) -> String {
    let o = tenet(d, &["key", "generate", "--name", name]);
    ok(&o);
    stdout(&o)
        .split_whitespace()
        .nth(1)
        .expect("id")
        .trim_end_matches(':')
        .to_owned()
}

/// A schema of its own on the test PostgreSQL server (`TENET_TEST_PG_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards; `None` (with the
/// reason printed) when the server is unreachable outside CI.
pub struct PgSchema {
    pub base: String,
    pub name: String,
}

impl PgSchema {
    pub fn new(tag: &str) -> Option<PgSchema> {
        let base = std::env::var("TENET_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        if let Err(e) = postgres::Client::connect(&base, postgres::NoTls) {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is not reachable at {base}: {e}"
            );
            crate::support::skipped(&format!("PostgreSQL is not reachable at {base}"));
            return None;
        }
        let name = format!("tenet_it_{}_{tag}", std::process::id());
        Some(PgSchema { base, name })
    }

    pub fn url(&self) -> String {
        format!("{}?schema={}", self.base, self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.base, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

/// A real OCI registry (Debian's docker-registry, the CNCF distribution registry) on a
/// free loopback port, storing into its own temporary directory; stopped on drop.
pub struct Registry {
    pub addr: String,
    pub storage: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// User and password of [`Registry::start_with_auth`]; the htpasswd line holds the
/// bcrypt hash of the password (made once with Python's bcrypt, cost 5).
pub const REGISTRY_USER: &str = "tenet";
pub const REGISTRY_PASSWORD: &str = "tenet-secret";
const REGISTRY_HTPASSWD: &str =
    "tenet:$2y$05$WD2nIfVgj9rcmurK.fDlheLTkpGaUvw05eJS4bmXjYO./A1sHgzcm\n";

impl Registry {
    pub fn start() -> Option<Registry> {
        Self::start_inner(false)
    }

    /// A registry that requires basic auth ([`REGISTRY_USER`] / [`REGISTRY_PASSWORD`]).
    pub fn start_with_auth() -> Option<Registry> {
        Self::start_inner(true)
    }

    fn start_inner(auth: bool) -> Option<Registry> {
        let bin = tool("docker-registry")?;
        let dir = tempfile::tempdir().expect("registry dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("data");
        let config = dir.path().join("config.yml");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, REGISTRY_HTPASSWD).expect("htpasswd");
        let auth = if auth {
            format!(
                "auth:\n  htpasswd:\n    realm: tenet-test\n    path: {}\n",
                htpasswd.display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                storage.display()
            ),
        )
        .expect("config");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            addr,
            storage,
            child,
            _dir: dir,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return Some(registry);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not start listening on {}",
            registry.addr
        );
    }

    /// The file holding a blob (to tamper with it).
    pub fn blob(&self, sha256: &str) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&sha256[..2])
            .join(sha256)
            .join("data")
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Set by [`a_skip_is_visible_past_the_capture`] for the copy of this binary it runs.
const FORCE_SKIP: &str = "TENET_TEST_FORCE_SKIP";

/// Skips only when told to: the subject of the next test.
#[test]
fn skips_when_told_to() {
    if std::env::var_os(FORCE_SKIP).is_some() {
        skipped("told to skip");
    }
}

/// Regression (issue 12): a plain `cargo test` reported all green while tests skipped in
/// output nobody sees. A skip is printed past the harness's capture as it happens, and
/// again in a summary when the test binary exits.
#[test]
fn a_skip_is_visible_past_the_capture() {
    let o = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "support::skips_when_told_to",
            "--test-threads",
            "1",
        ])
        .env(FORCE_SKIP, "1")
        .env_remove("CI")
        .output()
        .expect("run the test binary");
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = "SKIPPED support::skips_when_told_to: told to skip";
    assert_eq!(
        err.matches(line).count(),
        2,
        "as it happens and in the summary:\n{err}"
    );
    has(&err, "1 test(s) skipped checks because tools are missing");
    has(&stdout(&o), "test result: ok. 1 passed");
}
