//! Desired-state artifacts: a manifest directory (manifests, templates, modules, data,
//! policies, `tenet.lock`) as one signed OCI artifact, so a fleet pulls what to be from
//! a registry (`tenet config push`, `tenet agent --source`).
//!
//! The directory is packed into a deterministic tar (paths sorted, times, owners and
//! modes normalised: the same files always give the same bytes and digest). The artifact
//! is an OCI image manifest with its own media types — config
//! [`CONFIG_MEDIA_TYPE`] (what the content is), layer [`CONTENT_MEDIA_TYPE`] (the tar)
//! and, when signed, [`SIGNATURE_MEDIA_TYPE`]: a detached minisign signature over the
//! tar's bytes (so `minisign -Vm content.tar` checks it too), with the same keys and
//! trust lists as provider bundles. The signature travels inside the artifact: no
//! dependence on a registry's referrers support.
//!
//! Nothing pulled is trusted before it is checked: the blobs against their digests and
//! limits ([`super::oci`]), the config's statement of the content against the tar, the
//! signature against the trusted keys, and then every tar entry as it is unpacked (only
//! regular files under plain relative names, within [`MAX_FILES`] and
//! [`MAX_CONTENT_BYTES`]) into a fresh directory that is renamed into place whole.

use super::bundle::{self, BundleError};
use super::oci::{self, Blob, LayerSpec, OciError, OciRef};
use crate::manifest::TrustedKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The config blob: what the content is.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.tenet.config.v1+json";
/// The manifest directory, as a tar.
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.tenet.config.content.v1.tar";
/// The detached minisign signature over the tar.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.tenet.config.signature.v1+minisign";
/// Version of the config blob's format.
pub const FORMAT_VERSION: u32 = 1;
/// Most files an artifact may hold.
pub const MAX_FILES: usize = 10_000;
/// Largest tar accepted (packed or pulled).
pub const MAX_CONTENT_BYTES: u64 = 64 * 1024 * 1024;
/// Longest path inside an artifact.
pub const MAX_PATH_BYTES: usize = 1024;
/// Deepest directory nesting inside an artifact.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Everything wrong with a directory to pack, all at once.
    #[error("{dir}: cannot be packed:\n  {}", .problems.join("\n  "))]
    Pack { dir: String, problems: Vec<String> },
    #[error("{reference}: the content is refused: {message}")]
    Content { reference: String, message: String },
    #[error("{reference}: not signed; refusing to apply unsigned desired state")]
    Unsigned { reference: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

impl ArtifactError {
    /// Whether the registry could not serve the artifact (ask again), rather than
    /// serving something refused (not pulled again until the reference moves).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ArtifactError::Oci(OciError::Unreachable { .. } | OciError::NotFound { .. })
                | ArtifactError::Io { .. }
        )
    }

    /// A short, fixed reason (a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            ArtifactError::Unsigned { .. } => "unsigned",
            ArtifactError::Bundle(BundleError::Untrusted { .. }) => "untrusted",
            ArtifactError::Bundle(BundleError::BadSignature { .. }) => "signature",
            ArtifactError::Oci(OciError::Unreachable { .. }) => "unreachable",
            ArtifactError::Oci(OciError::NotFound { .. }) => "not_found",
            ArtifactError::Oci(OciError::Digest { .. }) => "digest",
            ArtifactError::Io { .. } => "io",
            _ => "invalid",
        }
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ArtifactError {
    ArtifactError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What the config blob says: the content's digest and size (checked against the tar
/// pulled) and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub format_version: u32,
    /// `sha256:…` of the tar.
    pub content: String,
    pub files: usize,
    pub bytes: u64,
    /// The source revision it was built from (`--revision`, e.g. a git commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A directory packed.
#[derive(Debug, Clone)]
pub struct Packed {
    pub tar: Vec<u8>,
    /// Hex sha256 of `tar`.
    pub sha256: String,
    /// The files in it, by path.
    pub files: Vec<String>,
    pub bytes: u64,
}

impl Packed {
    pub fn statement(&self, revision: Option<String>) -> Statement {
        Statement {
            format_version: FORMAT_VERSION,
            content: format!("sha256:{}", self.sha256),
            files: self.files.len(),
            bytes: self.tar.len() as u64,
            revision,
        }
    }
}

/// Whether a name is left out of a pack: hidden files and directories (`.tenet` with
/// the state, `.git`, editors' files).
fn hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Pack `dir` (every regular file under it except hidden ones) into a deterministic tar.
/// Symbolic links, devices and the like are refused (a link could point anywhere on the
/// machine that applies it); so are too many files or bytes. Reports every problem.
pub fn pack(dir: &Path) -> Result<Packed, ArtifactError> {
    let mut files: Vec<(String, PathBuf, bool)> = Vec::new();
    let mut problems = Vec::new();
    walk(dir, dir, 0, &mut files, &mut problems);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    if files.len() > MAX_FILES {
        problems.push(format!("{} files (limit {MAX_FILES})", files.len()));
    }
    if files.is_empty() && problems.is_empty() {
        problems.push("no files to pack".into());
    }
    let pack_err = |problems: Vec<String>| ArtifactError::Pack {
        dir: dir.display().to_string(),
        problems,
    };
    if !problems.is_empty() {
        return Err(pack_err(problems));
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    for (name, path, exec) in &files {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        total += data.len() as u64;
        if total > MAX_CONTENT_BYTES {
            return Err(pack_err(vec![format!(
                "more than {MAX_CONTENT_BYTES} bytes of files"
            )]));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(if *exec { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        if let Err(e) = builder.append_data(&mut header, name, data.as_slice()) {
            problems.push(format!("{name}: {e}"));
        }
    }
    if !problems.is_empty() {
        return Err(pack_err(problems));
    }
    let tar = builder
        .into_inner()
        .map_err(|e| pack_err(vec![e.to_string()]))?;
    if tar.len() as u64 > MAX_CONTENT_BYTES {
        return Err(pack_err(vec![format!(
            "the tar is {} bytes (limit {MAX_CONTENT_BYTES})",
            tar.len()
        )]));
    }
    Ok(Packed {
        sha256: crate::digest::sha256_hex(&tar),
        files: files.into_iter().map(|f| f.0).collect(),
        bytes: total,
        tar,
    })
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    files: &mut Vec<(String, PathBuf, bool)>,
    problems: &mut Vec<String>,
) {
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    if depth > MAX_DEPTH {
        problems.push(format!(
            "{}: nested deeper than {MAX_DEPTH} directories",
            rel(dir)
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!("{}: cannot read: {e}", dir.display()));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            problems.push(format!("{}: the name is not UTF-8", rel(&path)));
            continue;
        };
        if hidden(&name) {
            continue;
        }
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{}: {e}", rel(&path)));
                continue;
            }
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            walk(root, &path, depth + 1, files, problems);
        } else if kind.is_file() {
            let name = rel(&path);
            if name.len() > MAX_PATH_BYTES {
                problems.push(format!("{name}: path longer than {MAX_PATH_BYTES} bytes"));
                continue;
            }
            use std::os::unix::fs::PermissionsExt;
            files.push((name, path, meta.permissions().mode() & 0o111 != 0));
        } else if kind.is_symlink() {
            problems.push(format!(
                "{}: a symbolic link (not packed: it could point anywhere on the machine that applies it; copy the file in)",
                rel(&path)
            ));
        } else {
            problems.push(format!("{}: not a regular file or directory", rel(&path)));
        }
    }
}

/// Unpack a tar made by [`pack`] into `dest`, which must not exist: into a fresh
/// directory beside it, each entry checked (a regular file, a plain relative path without
/// `..` or hidden parts, not twice, within the limits), flushed, then renamed into place.
/// `reference` names the artifact in errors. Returns the files written.
pub fn unpack(tar: &[u8], dest: &Path, reference: &str) -> Result<Vec<String>, ArtifactError> {
    let refused = |message: String| ArtifactError::Content {
        reference: reference.to_owned(),
        message,
    };
    if tar.len() as u64 > MAX_CONTENT_BYTES {
        return Err(refused(format!(
            "{} bytes (limit {MAX_CONTENT_BYTES})",
            tar.len()
        )));
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    let staged = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(|e| io_err(parent, e))?;
    let mut archive = tar::Archive::new(std::io::Cursor::new(tar));
    let mut written: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| refused(format!("not a tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| refused(format!("not a tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| refused(format!("an entry's name: {e}")))?
            .into_owned();
        let name = path.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(refused(format!(
                "`{name}` is a {kind:?} entry; only regular files are unpacked"
            )));
        }
        check_name(&path, &name).map_err(&refused)?;
        if !seen.insert(name.clone()) {
            return Err(refused(format!("`{name}` appears twice")));
        }
        if seen.len() > MAX_FILES {
            return Err(refused(format!("more than {MAX_FILES} files")));
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        total = total.saturating_add(size);
        if total > MAX_CONTENT_BYTES {
            return Err(refused(format!("more than {MAX_CONTENT_BYTES} bytes")));
        }
        let exec = entry.header().mode().unwrap_or(0) & 0o111 != 0;
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .by_ref()
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| refused(format!("`{name}`: {e}")))?;
        let target = staged.path().join(&path);
        if let Some(d) = target.parent() {
            std::fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
        }
        write_new(&target, &data, exec).map_err(|e| io_err(&target, e))?;
        written.push(name);
    }
    if written.is_empty() {
        return Err(refused("it holds no files".into()));
    }
    crate::atomic::sync_dir(staged.path());
    std::fs::rename(staged.keep(), dest).map_err(|e| io_err(dest, e))?;
    crate::atomic::sync_dir(parent);
    Ok(written)
}

/// A name an artifact may hold: relative, plain parts only, none hidden, bounded.
fn check_name(path: &Path, name: &str) -> Result<(), String> {
    if name.len() > MAX_PATH_BYTES {
        return Err(format!("a path longer than {MAX_PATH_BYTES} bytes"));
    }
    let mut depth = 0;
    for c in path.components() {
        match c {
            Component::Normal(part) => {
                depth += 1;
                if part.to_str().is_none_or(hidden) {
                    return Err(format!("`{name}` has a hidden or non-UTF-8 part"));
                }
            }
            _ => {
                return Err(format!(
                    "`{name}` is not a plain relative path (absolute, `..` or `.` parts)"
                ));
            }
        }
    }
    if depth == 0 || depth > MAX_DEPTH + 1 {
        return Err(format!("`{name}`: an empty or too deep path"));
    }
    Ok(())
}

/// Write a new file (never through an existing one), flushed; `0755` or `0644`.
fn write_new(path: &Path, data: &[u8], exec: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if exec { 0o755 } else { 0o644 })
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The trusted comment of an artifact's signature.
fn comment(sha256: &str) -> String {
    format!("tenet desired state sha256:{sha256}")
}

/// What `push` did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `sha256:…` of the image manifest: what nodes apply and runs record.
    pub digest: String,
    pub packed: Packed,
    pub signed: bool,
    /// The reference already named this content, signed with this key: nothing was
    /// pushed (a signature is new each time, so pushing again would move the tag).
    pub unchanged: bool,
}

/// Sign `packed` (see [`pack`]) with `key` (unless `None`: an unsigned artifact, which
/// agents refuse) and push it to `r`. When `r` already names the same content and revision
/// with a valid signature by the same key, nothing is pushed: minisign signatures are
/// randomised, so a second push would give a new digest and move the tag for nothing.
pub async fn push(
    packed: Packed,
    r: &OciRef,
    key: Option<&Path>,
    revision: Option<String>,
    options: &oci::Options,
) -> Result<Pushed, ArtifactError> {
    let statement = packed.statement(revision.clone());
    if let Some(key) = key {
        let public = bundle::public_of(key)?;
        // The same content is not downloaded again to find out.
        if let Ok(there) = pull_unless_held(r, options, Some(&packed)).await
            && there.statement == statement
            && there.verify(std::slice::from_ref(&public)).is_ok()
        {
            return Ok(Pushed {
                digest: there.digest,
                packed,
                signed: true,
                unchanged: true,
            });
        }
    }
    let config = serde_json::to_vec(&statement).map_err(|e| ArtifactError::Content {
        reference: r.text.clone(),
        message: e.to_string(),
    })?;
    let mut layers = vec![Blob {
        data: packed.tar.clone(),
        media_type: CONTENT_MEDIA_TYPE,
        title: Some("content.tar".into()),
    }];
    if let Some(key) = key {
        let sig = bundle::sign_bytes(&packed.tar, &comment(&packed.sha256), key)?;
        layers.push(Blob {
            data: sig.into_bytes(),
            media_type: SIGNATURE_MEDIA_TYPE,
            title: Some("content.tar.minisig".into()),
        });
    }
    let mut annotations = BTreeMap::new();
    if let Some(rev) = revision {
        annotations.insert("org.opencontainers.image.revision".to_owned(), rev);
    }
    let digest = oci::push_artifact(
        r,
        Blob {
            data: config,
            media_type: CONFIG_MEDIA_TYPE,
            title: None,
        },
        layers,
        annotations,
        options,
    )
    .await?;
    Ok(Pushed {
        digest,
        packed,
        signed: key.is_some(),
        unchanged: false,
    })
}

/// An artifact as pulled: its blobs match their digests and the statement matches the
/// tar; not yet checked against any key.
#[derive(Debug)]
pub struct Fetched {
    /// The reference pinned to what was pulled (`…@sha256:…`).
    pub reference: OciRef,
    pub digest: String,
    pub statement: Statement,
    pub tar: Vec<u8>,
    pub signature: Option<String>,
}

/// Pull the artifact `r` names (a tag is resolved once: everything after is pulled by
/// that digest, so a tag moving in between cannot mix two artifacts).
pub async fn pull(r: &OciRef, options: &oci::Options) -> Result<Fetched, ArtifactError> {
    pull_unless_held(r, options, None).await
}

/// [`pull`], except that when `held`'s tar is the artifact's content (same digest and
/// size in the manifest) it is not downloaded again.
async fn pull_unless_held(
    r: &OciRef,
    options: &oci::Options,
    held: Option<&Packed>,
) -> Result<Fetched, ArtifactError> {
    let digest = oci::resolve(r, options).await?;
    let pinned = r.at_digest(&digest);
    let mut pulled = oci::pull_artifact(
        &pinned,
        "a Tenet desired-state artifact",
        CONFIG_MEDIA_TYPE,
        &[
            LayerSpec {
                media_type: CONTENT_MEDIA_TYPE,
                limit: MAX_CONTENT_BYTES,
                required: true,
                fetch: held.is_none(),
            },
            LayerSpec {
                media_type: SIGNATURE_MEDIA_TYPE,
                limit: bundle::MAX_SIGNATURE_BYTES,
                required: false,
                fetch: true,
            },
        ],
        options,
    )
    .await?;
    let refused = |message: String| ArtifactError::Content {
        reference: r.text.clone(),
        message,
    };
    if pulled.manifest_digest != digest {
        return Err(refused(format!(
            "the registry served manifest {} for {digest}",
            pulled.manifest_digest
        )));
    }
    let statement: Statement = serde_json::from_slice(&pulled.config)
        .map_err(|e| refused(format!("its config is not a Tenet statement: {e}")))?;
    if statement.format_version != FORMAT_VERSION {
        return Err(refused(format!(
            "format version {} (this Tenet reads {FORMAT_VERSION})",
            statement.format_version
        )));
    }
    let tar = match held {
        Some(p) => {
            let there = pulled.descriptors.get(CONTENT_MEDIA_TYPE);
            if there != Some(&(format!("sha256:{}", p.sha256), p.tar.len() as u64)) {
                return Err(refused("its content is not the one held".into()));
            }
            p.tar.clone()
        }
        None => pulled.layers.remove(CONTENT_MEDIA_TYPE).unwrap_or_default(),
    };
    let actual = format!("sha256:{}", crate::digest::sha256_hex(&tar));
    if statement.content != actual || statement.bytes != tar.len() as u64 {
        return Err(refused(format!(
            "its config says the content is {} ({} bytes), the content is {actual} ({} bytes)",
            statement.content,
            statement.bytes,
            tar.len()
        )));
    }
    let signature = match pulled.layers.remove(SIGNATURE_MEDIA_TYPE) {
        Some(s) => {
            Some(String::from_utf8(s).map_err(|_| refused("its signature is not text".into()))?)
        }
        None => None,
    };
    Ok(Fetched {
        reference: pinned,
        digest,
        statement,
        tar,
        signature,
    })
}

impl Fetched {
    /// The trusted key that signed the content; unsigned, untrusted or a signature that
    /// does not match are refused.
    pub fn verify<'k>(&self, trusted: &'k [TrustedKey]) -> Result<&'k TrustedKey, ArtifactError> {
        let Some(sig) = &self.signature else {
            return Err(ArtifactError::Unsigned {
                reference: self.reference.text.clone(),
            });
        };
        Ok(bundle::verify(
            &self.tar,
            sig,
            &format!("{} (signature)", self.reference.text),
            trusted,
        )?)
    }
}

/// The artifacts a node pulled, unpacked under `root` (`.tenet/source` in the agent's
/// directory): one directory per manifest digest, and `current` naming the last one
/// verified (the last good, applied while the registry is away).
#[derive(Debug, Clone)]
pub struct Checkouts {
    pub root: PathBuf,
}

/// The artifact in force on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Current {
    /// The reference it came from (a tag, or a pinned digest).
    pub reference: String,
    pub digest: String,
    /// The key that signed it.
    pub signed_by: String,
}

/// How many unpacked artifacts a node keeps (the current one and those before it).
pub const KEEP_CHECKOUTS: usize = 3;

impl Checkouts {
    pub fn new(root: PathBuf) -> Checkouts {
        Checkouts { root }
    }

    /// The directory of the artifact with manifest digest `digest`.
    pub fn dir(&self, digest: &str) -> PathBuf {
        self.root.join(digest.replace(':', "-"))
    }

    fn current_file(&self) -> PathBuf {
        self.root.join("current.json")
    }

    /// The last artifact verified and unpacked here, if its directory is still there.
    pub fn current(&self) -> Option<Current> {
        let text = std::fs::read(self.current_file()).ok()?;
        let c: Current = serde_json::from_slice(&text).ok()?;
        self.dir(&c.digest).is_dir().then_some(c)
    }

    /// Verify `fetched` against `trusted`, unpack it (once per digest) and make it the
    /// current one. Nothing is unpacked unless the signature verifies.
    pub fn install(
        &self,
        fetched: &Fetched,
        reference: &str,
        trusted: &[TrustedKey],
    ) -> Result<(Current, PathBuf), ArtifactError> {
        let key = fetched.verify(trusted)?;
        let dir = self.dir(&fetched.digest);
        if !dir.is_dir() {
            unpack(&fetched.tar, &dir, &fetched.reference.text)?;
        }
        let current = Current {
            reference: reference.to_owned(),
            digest: fetched.digest.clone(),
            signed_by: format!("{} ({})", key.id, key.name),
        };
        let json = serde_json::to_vec_pretty(&current).map_err(|e| io_err(&self.root, e))?;
        crate::atomic::write(&self.current_file(), &json)
            .map_err(|e| io_err(&self.current_file(), e))?;
        self.prune(&fetched.digest);
        Ok((current, dir))
    }

    /// Remove unpacked artifacts beyond the newest [`KEEP_CHECKOUTS`] (never `keep`).
    fn prune(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("sha256-"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
        let keep = self.dir(keep);
        for (_, d) in dirs.into_iter().skip(KEEP_CHECKOUTS) {
            if d != keep
                && let Err(e) = std::fs::remove_dir_all(&d)
            {
                tracing::warn!(dir = %d.display(), "cannot remove an old artifact: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tmp");
        for (name, text) in files {
            let p = t.path().join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        t
    }

    #[test]
    fn packing_is_deterministic_and_leaves_out_hidden_files() {
        let files = [
            ("tenet.yaml", "resources: []\n"),
            ("templates/a.j2", "x"),
            ("modules/web/tenet.yaml", "y"),
            (".tenet/state.db", "state"),
            (".git/HEAD", "ref"),
        ];
        let a = tree(&files);
        let b = tree(&files);
        let pa = pack(a.path()).expect("pack");
        let pb = pack(b.path()).expect("pack");
        assert_eq!(pa.sha256, pb.sha256, "same files, same bytes");
        assert_eq!(
            pa.files,
            ["modules/web/tenet.yaml", "templates/a.j2", "tenet.yaml"]
        );
        std::fs::write(a.path().join("templates/a.j2"), "z").expect("edit");
        assert_ne!(pack(a.path()).expect("pack").sha256, pb.sha256);
        let out = tempfile::tempdir().expect("out");
        let dest = out.path().join("d");
        let written = unpack(&pb.tar, &dest, "test").expect("unpack");
        assert_eq!(written, pb.files);
        assert_eq!(
            std::fs::read_to_string(dest.join("templates/a.j2")).expect("read"),
            "x"
        );
        assert!(!dest.join(".tenet").exists());
    }

    #[test]
    fn links_and_empty_directories_are_refused_with_every_problem_named() {
        let t = tree(&[("tenet.yaml", "")]);
        std::os::unix::fs::symlink("/etc/shadow", t.path().join("shadow")).expect("link");
        std::os::unix::fs::symlink("/etc", t.path().join("etc")).expect("link");
        let e = pack(t.path()).expect_err("links").to_string();
        assert!(e.contains("shadow: a symbolic link"), "{e}");
        assert!(e.contains("etc: a symbolic link"), "{e}");
        let empty = tempfile::tempdir().expect("tmp");
        let e = pack(empty.path()).expect_err("empty").to_string();
        assert!(e.contains("no files to pack"), "{e}");
    }

    /// A tar built by hand, as an attacker holding a signing key (or a bug) might.
    type Entry<'a> = (&'a str, tar::EntryType, &'a [u8]);

    fn hostile(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o4755);
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name("/etc/passwd").expect("link");
            }
            // Bypass the builder's own path checks: write the raw name.
            let raw = &mut h.as_old_mut().name;
            raw.fill(0);
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn unpacking_refuses_escapes_links_devices_duplicates_and_leaves_nothing() {
        use tar::EntryType as T;
        let cases: Vec<(Vec<Entry<'_>>, &str)> = vec![
            (
                vec![("../evil", T::Regular, b"x")],
                "not a plain relative path",
            ),
            (
                vec![("/etc/cron.d/evil", T::Regular, b"x")],
                "not a plain relative path",
            ),
            (
                vec![("a/../../evil", T::Regular, b"x")],
                "not a plain relative path",
            ),
            (vec![("link", T::Symlink, b"")], "only regular files"),
            (vec![("hard", T::Link, b"")], "only regular files"),
            (vec![("dev", T::Char, b"")], "only regular files"),
            (vec![(".tenet/state.db", T::Regular, b"x")], "hidden"),
            (
                vec![("a", T::Regular, b"1"), ("a", T::Regular, b"2")],
                "appears twice",
            ),
        ];
        for (entries, why) in cases {
            let out = tempfile::tempdir().expect("out");
            let dest = out.path().join("d");
            let e = unpack(&hostile(&entries), &dest, "oci://r/x:1")
                .expect_err(why)
                .to_string();
            assert!(e.contains(why), "{entries:?}: {e}");
            assert!(!dest.exists(), "nothing in place");
            let left: Vec<_> = std::fs::read_dir(out.path()).expect("ls").collect();
            assert!(left.is_empty(), "no staging left: {left:?}");
            assert!(!Path::new("/evil").exists() && !out.path().join("evil").exists());
        }
        // Modes are normalised: no setuid bit survives.
        let out = tempfile::tempdir().expect("out");
        let dest = out.path().join("d");
        unpack(
            &hostile(&[("run.sh", T::Regular, b"#!/bin/sh")]),
            &dest,
            "r",
        )
        .expect("ok");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dest.join("run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn a_tar_bomb_is_stopped_at_the_limits() {
        let names: Vec<String> = (0..=MAX_FILES).map(|i| format!("f{i}")).collect();
        let entries: Vec<Entry<'_>> = names
            .iter()
            .map(|n| (n.as_str(), tar::EntryType::Regular, &b""[..]))
            .collect();
        let out = tempfile::tempdir().expect("out");
        let e = unpack(&hostile(&entries), &out.path().join("d"), "r")
            .expect_err("too many")
            .to_string();
        assert!(e.contains("more than 10000 files"), "{e}");
        let big = vec![0u8; (MAX_CONTENT_BYTES + 1) as usize];
        let e = unpack(&big, &out.path().join("d"), "r")
            .expect_err("too big")
            .to_string();
        assert!(e.contains("limit"), "{e}");
    }
}
