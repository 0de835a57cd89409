//! Manifests: parse the operator's YAML into typed declarations, resolve variables, and
//! validate everything that can be checked without a provider — then, given the
//! providers' descriptions, everything else ([`check`]). No I/O beyond reading the
//! manifest and values files; nothing here knows about Wasm.
//!
//! A manifest is a YAML file, or a directory whose `*.yaml` / `*.yml` files are merged
//! (in name order). Top-level keys: `vars`, `providers`, `resources`. Every problem is
//! collected and reported at once with `file:line:col`.

pub mod check;
pub(crate) mod credentials;
pub mod data;
pub mod expr;
pub(crate) mod load;
mod module;
pub mod orchestrate;
pub mod policy;
pub mod protect;
pub mod refs;
pub mod scrub;
pub mod trust;
mod vars;
pub mod yaml;

use crate::diag::Location;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

pub use load::{LoadOptions, Snapshot, load};

/// Default memory cap per provider instance: generous for a JSON-and-files provider,
/// small enough that a runaway guest cannot hurt the host.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;
/// Default budget of one provider's instances together: four at the default cap, far
/// under any machine Tenet runs on. With `--parallelism 10` and nothing but the
/// per-instance cap, one provider could hold 2.5 GiB.
pub const DEFAULT_MEMORY_TOTAL: u64 = 1024 * 1024 * 1024;

fn default_memory_total() -> u64 {
    DEFAULT_MEMORY_TOTAL
}

/// Default deadline for one provider call (describe, read, diff, apply or delete).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The lock file's name, beside the manifest (its format is
/// [`crate::distribution::lockfile`]'s).
pub const LOCK_FILE: &str = "tenet.lock";

/// Where the lock file of a manifest (a file or a directory) is.
pub fn lock_path(manifest: &std::path::Path) -> PathBuf {
    dir_of(manifest).join(LOCK_FILE)
}

/// The directory of a manifest named as a file or a directory: where its state, lock file
/// and relative paths live.
pub fn dir_of(manifest: &std::path::Path) -> PathBuf {
    if manifest.is_dir() {
        manifest.to_path_buf()
    } else {
        manifest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf)
    }
}

/// Why `path` cannot be a path: it holds a control character (shown escaped, with its
/// position), which no terminal shows and no operator means.
pub(crate) fn control_characters(path: &str) -> Option<String> {
    let (at, c) = path.char_indices().find(|(_, c)| c.is_control())?;
    Some(format!(
        "the path `{}` contains the control character `{}` at byte {at}; paths may not contain NUL or control characters",
        path.escape_debug(),
        c.escape_unicode()
    ))
}

/// A loaded manifest: every declaration, variables already substituted.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// What the operator named (a file or a directory), made absolute.
    pub path: PathBuf,
    /// Directory that relative paths are resolved against.
    pub base_dir: PathBuf,
    /// The YAML files read, in merge order.
    pub files: Vec<PathBuf>,
    /// Their text as loaded (what the run records, even if the files change later).
    pub sources: BTreeMap<PathBuf, String>,
    /// sha256 over the files' names and contents and the resolved variables.
    pub sha256: String,
    pub vars: BTreeMap<String, Value>,
    /// Variables declared `sensitive: true`.
    pub sensitive_vars: BTreeSet<String>,
    /// `trust:`: the public keys whose signatures this project accepts.
    pub trusted_keys: Vec<TrustedKey>,
    pub providers: BTreeMap<String, ProviderDecl>,
    pub resources: Vec<ResourceDecl>,
    /// Ids of resources that were declared but left out because of errors already
    /// reported; references to them are not reported again.
    pub rejected_ids: BTreeSet<String>,
    /// Resources whose `when:` is false, with where the condition is: left out of the
    /// graph and the plan; a reference to one is an error naming both.
    pub excluded: BTreeMap<String, Location>,
    /// Those resources as declared (without their properties, which are not evaluated):
    /// what the manifest says of them still decides what is scrubbed from its record.
    pub excluded_resources: Vec<ResourceDecl>,
    /// The facts its expressions saw (`None`: it uses none), recorded with each run.
    pub facts: Option<Value>,
    /// Its layered data (`data:`), when it declares some.
    pub data: Option<data::Data>,
    /// The files of the modules it calls, named relative to `base_dir` (recorded with
    /// each run beside the manifest's own files).
    pub module_files: BTreeMap<String, String>,
    /// The templates its expressions rendered, named relative to `base_dir` (recorded
    /// with each run, so a rollback renders what that run rendered).
    pub template_files: BTreeMap<String, String>,
    /// `policy:`, when the manifest configures its policies.
    pub policy: Option<policy::PolicyConfig>,
    /// The signed desired-state artifact its files came from (`tenet agent --source`),
    /// recorded with every run.
    pub artifact: Option<Artifact>,
}

/// Where a manifest came from when a registry delivered it: the reference asked for
/// (a channel tag, or a pinned digest) and the artifact's manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Artifact {
    pub reference: String,
    pub digest: String,
}

/// Where a provider's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderSource {
    /// Embedded in the `tenet` binary (`builtin:file`, or no `source` at all).
    Builtin(String),
    /// A component on disk (absolute after loading): a `.wasm` file (signed by
    /// `FILE.minisig` beside it), a bundle file or a bundle directory.
    Path(PathBuf),
    /// A bundle in an OCI registry, `oci://host[:port]/repo:tag` or `…@sha256:…`, run
    /// from the local plugin store (`tenet init` / `tenet plugin install` put it there).
    Oci(String),
}

impl std::fmt::Display for ProviderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderSource::Builtin(n) => write!(f, "builtin:{n}"),
            ProviderSource::Path(p) => write!(f, "{}", p.display()),
            ProviderSource::Oci(r) => f.write_str(r),
        }
    }
}

/// File-system access granted to a provider for one directory tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    #[serde(rename = "ro")]
    ReadOnly,
    #[serde(rename = "rw")]
    ReadWrite,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::ReadOnly => "ro",
            Access::ReadWrite => "rw",
        })
    }
}

/// `fs: [{path: ./out, access: rw}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsGrant {
    /// Absolute, lexically normalised.
    pub path: PathBuf,
    pub access: Access,
    /// Where the manifest grants it (not part of what the grant means).
    #[serde(skip)]
    pub location: Option<Location>,
}

/// A program the provider may run through `tenet:host/exec`.
///
/// `exec: [{program: /usr/bin/systemctl, args: [[is-active, "*"]], mode: probe}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecGrant {
    /// Absolute path as written (symlinks are resolved by the host when checking).
    pub program: PathBuf,
    /// Allowed argument lists: each is a list of glob patterns matched one-to-one against
    /// the arguments; a final `**` matches any remaining arguments. Empty: the program
    /// may only be run without arguments.
    pub args: Vec<Vec<String>>,
    /// `mode: probe`: also allowed during `read` and `diff` (plans, drift checks). The
    /// operator vouches that these invocations change nothing.
    pub probe: bool,
}

/// An origin the provider may send HTTP requests to: `scheme://host[:port]`, where the
/// host may start with `*.` and the port may be `*`. Without a port, the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetGrant {
    /// As written, for messages and plans.
    pub pattern: String,
    pub scheme: String,
    pub host: String,
    /// `None`: any port.
    pub port: Option<u16>,
    /// Credentials the host adds to every request to this (exact) origin; the provider
    /// never sees them. Never serialised.
    #[serde(skip)]
    pub credentials: Option<Credentials>,
    /// `ca:`: the only roots trusted for this origin's TLS (a private CA), instead of
    /// the public web's.
    #[serde(skip)]
    pub ca: Option<CaBundle>,
}

/// The certificates of a `ca:` bundle (PEM on disk, DER here), read when the manifest
/// loads.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// Absolute.
    pub path: PathBuf,
    pub certificates: Vec<Vec<u8>>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CaBundle({}, {} certificates)",
            self.path.display(),
            self.certificates.len()
        )
    }
}

/// A header the host adds to a granted origin's requests (`credentials:` on a net grant).
/// Its value never reaches the provider, a plan, the state or a log: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Lowercase header name (`authorization`, `x-api-key`, …).
    pub header: String,
    /// The header's value.
    pub value: String,
    /// Every form of the secret a server could echo back: the value, its token, a basic
    /// password. The host removes them from responses before the provider reads them.
    pub forms: Vec<String>,
    /// Where the value comes from, for plans: `var api_token`, `env API_TOKEN`.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({}: (sensitive) from {})",
            self.header, self.source
        )
    }
}

impl NetGrant {
    /// Parse `scheme://host[:port]`; the message says what is wrong.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (scheme, rest) = pattern
            .split_once("://")
            .ok_or_else(|| format!("`{pattern}` needs a scheme, like `https://api.example.com`"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => {
                return Err(format!(
                    "unsupported scheme `{other}` in `{pattern}` (use http or https)"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "`{pattern}` must be an origin `scheme://host[:port]`, without path, query or user"
            ));
        }
        // `[::1]:8080`: an IPv6 literal keeps its brackets (as request URIs show it).
        let (host, port_text) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("unclosed `[` in `{pattern}`"))?;
                (&rest[..addr.len() + 2], after.strip_prefix(':'))
            }
            None => match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            },
        };
        let port = match port_text {
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("invalid port `{p}` in `{pattern}`"))?,
            ),
            None => Some(default_port),
        };
        let wildcard_ok = host.strip_prefix("*.").unwrap_or(host);
        if host.is_empty() || wildcard_ok.contains('*') {
            return Err(format!(
                "invalid host `{host}` in `{pattern}` (a wildcard may only be a leading `*.`)"
            ));
        }
        Ok(NetGrant {
            pattern: pattern.to_owned(),
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            credentials: None,
            ca: None,
        })
    }

    /// Whether it names one origin exactly (no `*.` host, no `*` port).
    pub fn is_exact(&self) -> bool {
        self.port.is_some() && !self.host.starts_with("*.")
    }

    /// Whether a request to `scheme://host:port` is allowed by this grant.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        };
        scheme.eq_ignore_ascii_case(&self.scheme) && host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// Everything an operator grants to one provider. Nothing is granted by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub fs: Vec<FsGrant>,
    pub exec: Vec<ExecGrant>,
    pub net: Vec<NetGrant>,
    /// Names of environment variables copied from Tenet's environment into the
    /// provider's (and offered to the programs it runs).
    pub env: Vec<String>,
}

/// Default cap on a provider's captured stdout/stderr per instance, and on each of a
/// child program's stdout and stderr per `exec` call.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 1024 * 1024;
/// Largest `output` limit accepted: the host holds this much per stream in memory.
pub const MAX_OUTPUT_LIMIT: u64 = 64 * 1024 * 1024;
/// Default cap on log messages per call (`tenet:host/log` and captured output lines).
pub const DEFAULT_LOG_LINES: u32 = 1_000;
/// Largest `log_lines` limit accepted.
pub const MAX_LOG_LINES: u32 = 1_000_000;

/// Resource limits per provider instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: u64,
    /// `memory_total`: linear memory of all the provider's instances together (pooled
    /// instances keep theirs between calls), see [`DEFAULT_MEMORY_TOTAL`].
    #[serde(default = "default_memory_total")]
    pub memory_total_bytes: u64,
    #[serde(with = "humantime_serde_compat")]
    pub call_timeout: Duration,
    /// `output`: captured stdout/stderr bytes (see [`DEFAULT_OUTPUT_LIMIT`]).
    pub output_bytes: u64,
    /// `log_lines`: log messages kept per call.
    pub log_lines: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: DEFAULT_MEMORY_LIMIT,
            memory_total_bytes: DEFAULT_MEMORY_TOTAL,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            output_bytes: DEFAULT_OUTPUT_LIMIT,
            log_lines: DEFAULT_LOG_LINES,
        }
    }
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// One entry of `providers:`.
#[derive(Debug, Clone)]
pub struct ProviderDecl {
    pub name: String,
    pub source: ProviderSource,
    pub grants: Grants,
    pub limits: Limits,
    /// Most calls in flight to this provider at once (`max_concurrency`); `None` leaves
    /// it to the run's `--parallelism`.
    pub max_concurrency: Option<usize>,
    /// Re-read each resource after apply and fail it when the provider's result does not
    /// match (`consistency_check`, default true).
    pub consistency_check: bool,
    /// `unsigned: true`: run this provider without a signature (local paths only).
    pub unsigned: bool,
    /// `retry:`: the default retry of its resources (a resource's own wins).
    pub retry: Option<orchestrate::Retry>,
    pub location: Location,
    /// Where `source:` is written (none when it is left to the default built-in): an
    /// `oci://` reference's syntax is checked by the session, and reported here.
    pub source_location: Option<Location>,
}

/// One entry of `trust:`: a minisign public key (`key: RWQ…`, or `file: keys/x.pub`).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// minisign key id (16 hex digits, as `minisign` prints it).
    pub id: String,
    /// The public key, base64 (the second line of a `.pub` file).
    pub public_key: String,
    /// `name:` if given, else the key file or the key id.
    pub name: String,
    pub location: Location,
    /// The `.pub` file it was read from (`file:`), absolute.
    pub file: Option<PathBuf>,
}

/// One `depends_on` entry.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub id: String,
    pub location: Location,
}

/// One entry of `resources:`.
#[derive(Debug, Clone)]
pub struct ResourceDecl {
    pub id: String,
    /// `provider.kind` as written.
    pub type_name: String,
    pub provider: String,
    pub kind: String,
    /// Desired properties (variables substituted; relative paths resolved by [`check`]).
    pub properties: Value,
    pub depends_on: Vec<Dependency>,
    /// `notify: [id, …]`: when this resource changes in a run, those resources are
    /// refreshed (their provider's `apply` runs again) after it — Puppet's notify.
    pub notify: Vec<Dependency>,
    /// `lifecycle: {prevent_destroy: true}`: never delete or replace it; remembered in
    /// the state, so removing it from the manifest does not delete it either.
    pub prevent_destroy: bool,
    /// `on_remove: forget`: when it leaves the manifest, drop it from the state and leave
    /// the system as it is (default `delete`). Remembered in the state.
    pub forget_on_remove: bool,
    /// `sensitive: [field, …]` (or `sensitive: true`, stored as `["*"]`): properties whose
    /// values are never shown or stored in clear.
    pub sensitive: Vec<String>,
    /// Top-level properties whose `${ … }` expressions read a sensitive variable: their
    /// values are sensitive whatever the expression did to it (`upper`, `replace`, …).
    pub sensitive_from_vars: Vec<String>,
    /// `locks: [name, …]`: named locks it holds while planned or changed; no two
    /// resources holding the same lock run at once (e.g. an `exec` running apt and the
    /// `apt` provider, which holds `dpkg`).
    pub locks: Vec<String>,
    /// `labels: {owner: team-db}`: metadata for policies, never sent to providers.
    pub labels: BTreeMap<String, String>,
    /// `retry:`: how a failure its provider marks transient is tried again.
    pub retry: Option<orchestrate::Retry>,
    /// `timeout:`: one deadline for all its attempts.
    pub timeout: Option<Duration>,
    /// `on_failure: [id, …]`: a failure handler — it runs only when one of these fails
    /// in the same run, and is never run otherwise.
    pub on_failure: Vec<Dependency>,
    /// `serial:` on a `for_each`/`count`: its place in the rolling group.
    pub rolling: Option<orchestrate::Rolling>,
    pub location: Location,
    /// Where `type` was written.
    pub type_location: Option<Location>,
    /// Places of the properties, by JSON pointer relative to `properties`.
    pub spans: yaml::Spans,
    /// Where its relative paths start: the manifest's directory (also for a module's
    /// resources, so a module's `path: out/site` lands in the project).
    pub base_dir: PathBuf,
    /// Directory of the file that declared it (a module's own, inside a module): a
    /// `source` path, a file shipped with the manifest, starts there.
    pub declared_in: PathBuf,
}

/// Most named locks one resource (or provider) holds.
pub const MAX_LOCKS: usize = 8;

/// Why `name` cannot name a lock (`None` when it can): 1–64 of lowercase letters, digits,
/// `_ . -`, starting with a letter or digit.
pub fn lock_name_problem(name: &str) -> Option<String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    (!ok).then(|| {
        format!(
            "`{}` is not a lock name: 1–64 lowercase letters, digits, `_`, `.` or `-`, starting with a letter or digit",
            name.chars().take(64).collect::<String>()
        )
    })
}

impl ResourceDecl {
    /// Where the property at `pointer` (relative to `properties`) was written.
    pub fn property_location(&self, pointer: &str) -> Location {
        self.spans.value(pointer)
    }
}
