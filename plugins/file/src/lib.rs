//! Tenet's built-in `file` provider: files, directories and symlinks.
//!
//! Kinds (addressed as `file.<kind>` in manifests):
//! - `file`: `path`, `content` or `source`, `mode`, `ensure`. Content is compared by
//!   sha256; writes are atomic (a temporary file in the same directory, then a rename),
//!   so a crash never leaves a half-written file at `path`. `source` is a file shipped
//!   with the manifest (binary-safe, streamed, never held whole in memory), which the
//!   provider reads through an fs grant like any other path; plans show its text only
//!   when it is UTF-8 and small enough to inline, otherwise its sha256 and size.
//! - `directory`: `path`, `mode`, `ensure`. Never removed when not empty.
//! - `symlink`: `path`, `target`, `ensure`. A changed target forces replacement (the
//!   engine deletes the old link, then creates the new one through an atomic rename).
//! - `line`: `path`, `line`, `match`, `after`, `create`, `ensure` — one line in a file
//!   whose other lines are someone else's ([`edit`]).
//! - `block`: `path`, `block`, `marker`, `after`, `create`, `ensure` — a marked block of
//!   lines in such a file ([`edit`]).
//!
//! Parent directories are never created implicitly: declare them as `file.directory`
//! resources (Tenet orders them first). Everything the provider touches goes through WASI
//! and the host's `fs-ext` interface, so it can only reach the directories the operator
//! granted, and only read them outside `apply`/`delete`.

pub mod edit;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use tenet_sdk::fs::{self as fsx, FileKind};
use tenet_sdk::{Diagnostic, Diff, Ensure, Error, FieldChange, KindInfo, Provider, ProviderInfo};

/// Largest file content returned inline in the observed state (and so shown as a unified
/// diff in plans). Larger or binary files are compared by sha256 only: the state must stay
/// small enough to store and print.
pub const MAX_INLINE_CONTENT: u64 = 64 * 1024;

/// The provider.
pub struct FileProvider;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProps {
    path: String,
    content: Option<String>,
    source: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    ensure: Ensure,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryProps {
    path: String,
    mode: Option<String>,
    #[serde(default)]
    ensure: Ensure,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SymlinkProps {
    path: String,
    target: Option<String>,
    #[serde(default)]
    ensure: Ensure,
}

/// What `read` returns for any kind: what is at the path, whatever it is.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
struct Observed {
    path: String,
    ensure: Ensure,
    /// `file`, `directory`, `symlink` or `other`.
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_sha256: Option<String>,
    /// Present only for UTF-8 files up to [`MAX_INLINE_CONTENT`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

const MODE_PATTERN: &str = "^0?[0-7]{3,4}$";

fn schema(kind: &str) -> Value {
    let ensure = json!({"enum": ["present", "absent"], "default": "present",
        "description": "whether the object exists"});
    let path = json!({"type": "string", "minLength": 1,
        "description": "where the object lives; relative paths are relative to the manifest"});
    let mode = json!({"type": "string", "pattern": MODE_PATTERN,
        "description": "permission bits in octal, as a quoted string such as \"0644\""});
    // `read` reports what is at the path whatever the kind (so a plan can show "a file
    // where a directory should be"); every observed field is in every kind's schema, the
    // ones a manifest may not set marked readOnly, so observed states match the schema.
    let observed = |about: &str| json!({"readOnly": true, "description": about});
    let mut props = json!({
        "path": path,
        "ensure": ensure,
        "kind": {"enum": ["file", "directory", "symlink", "other"], "readOnly": true,
            "description": "what is at the path, as observed"},
        "mode": observed("permission bits, as observed"),
        "content": observed("the file's content, as observed"),
        "content_sha256": {"type": "string", "readOnly": true,
            "description": "sha256 of the content, as observed (known after apply)"},
        "size": {"type": "integer", "readOnly": true,
            "description": "size in bytes, as observed (known after apply)"},
        "target": observed("the link's target, as observed"),
    });
    match kind {
        "file" => {
            props["mode"] = mode;
            props["content"] = json!({"type": "string", "description": "the file's full content"});
            props["source"] = json!({"type": "string", "minLength": 1,
                "description": "a file whose bytes the file gets (instead of `content`), relative to the manifest file that declares it"});
        }
        "directory" => props["mode"] = mode,
        _ => {
            props["target"] = json!({"type": "string", "minLength": 1,
                "description": "what the link points to, stored as written"});
        }
    }
    let required = json!(["path"]);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

impl Provider for FileProvider {
    fn describe() -> ProviderInfo {
        ProviderInfo::new(
            "file",
            env!("CARGO_PKG_VERSION"),
            "files, directories and symlinks on the local file system",
        )
        .kind(
            KindInfo::new(
                "file",
                "a regular file with content and mode",
                schema("file"),
                "path",
            )
            .path_properties(&["path", "source"]),
        )
        .kind(
            KindInfo::new(
                "directory",
                "a directory with mode",
                schema("directory"),
                "path",
            )
            .path_properties(&["path"]),
        )
        .kind(
            KindInfo::new("symlink", "a symbolic link", schema("symlink"), "path")
                .force_new(&["target"])
                .path_properties(&["path"]),
        )
        // Many lines and blocks share one file (and a file.file may hold them): the path
        // is granted and checked, but not the identity, so they do not conflict.
        .kind(
            KindInfo::new(
                "line",
                "one line in a file, the rest of the file kept",
                edit::schema("line"),
                "line",
            )
            .path_properties(&["path"]),
        )
        .kind(
            KindInfo::new(
                "block",
                "a block of lines between marker lines in a file, the rest kept",
                edit::schema("block"),
                "marker",
            )
            .path_properties(&["path"]),
        )
    }

    fn validate(kind: &str, properties: &Value) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = edit::problems(kind, properties)
            .into_iter()
            .map(|(path, message)| Diagnostic::error(path, message))
            .collect();
        let ensure = properties.get("ensure").and_then(Value::as_str);
        if kind == "file"
            && properties.get("content").is_some()
            && properties.get("source").is_some()
        {
            out.push(Diagnostic::error(
                "/source",
                "give a file either `content` or `source`, not both",
            ));
        }
        if kind == "symlink" && ensure != Some("absent") && properties.get("target").is_none() {
            out.push(Diagnostic::error(
                "",
                "a symlink that should be present needs a `target`",
            ));
        }
        if let Some(p) = properties.get("path").and_then(Value::as_str)
            && Path::new(p).file_name().is_none()
        {
            out.push(Diagnostic::error(
                "/path",
                format!("`{p}` does not name a file system object"),
            ));
        }
        out
    }

    fn read(kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        check_kind(kind)?;
        if is_edit(kind) {
            return edit::read(kind, properties);
        }
        let path = properties
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::InvalidInput("`path` is required".into()))?;
        observe(path)?.map(|o| tenet_sdk::to_value(&o)).transpose()
    }

    fn diff(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
        check_kind(kind)?;
        if is_edit(kind) {
            return Ok(match (edit::ensure(kind, desired)?, current) {
                (Ensure::Absent, None) => Diff::none(),
                (Ensure::Absent, Some(c)) => Diff::delete(c),
                (Ensure::Present, None) => Diff::create(desired),
                (Ensure::Present, Some(c)) => Diff::from_changes(edit::changes(kind, desired, c)?),
            });
        }
        let current: Option<Observed> = current.map(tenet_sdk::from_value).transpose()?;
        let (ensure, want_kind) = match kind {
            "file" => (tenet_sdk::from_value::<FileProps>(desired)?.ensure, "file"),
            "directory" => (
                tenet_sdk::from_value::<DirectoryProps>(desired)?.ensure,
                "directory",
            ),
            _ => (
                tenet_sdk::from_value::<SymlinkProps>(desired)?.ensure,
                "symlink",
            ),
        };
        let Some(current) = current else {
            return Ok(match ensure {
                Ensure::Absent => Diff::none(),
                Ensure::Present => Diff::create(desired),
            });
        };
        if ensure == Ensure::Absent {
            if current.kind != want_kind {
                return Err(Error::Conflict(format!(
                    "`{}` is a {}, not a {want_kind}; refusing to delete it as a {kind}",
                    current.path, current.kind
                )));
            }
            return Ok(Diff::delete(&tenet_sdk::to_value(&current)?));
        }
        if current.kind != want_kind {
            return Ok(Diff::from_changes(vec![
                FieldChange::new("kind", Some(json!(current.kind)), Some(json!(want_kind)))
                    .forcing_replacement(),
            ]));
        }
        let mut changes = Vec::new();
        match kind {
            "file" => {
                let want: FileProps = tenet_sdk::from_value(desired)?;
                if let Some(wanted) = wanted_content(&want)?
                    && current.content_sha256.as_deref() != Some(wanted.sha256.as_str())
                {
                    let before = match &current.content {
                        Some(text) => json!(text),
                        None => json!({"sha256": current.content_sha256, "size": current.size}),
                    };
                    changes.push(FieldChange::new(
                        "content",
                        Some(before),
                        Some(wanted.shown),
                    ));
                }
                mode_change(&mut changes, want.mode.as_deref(), &current)?;
            }
            "directory" => {
                let want: DirectoryProps = tenet_sdk::from_value(desired)?;
                mode_change(&mut changes, want.mode.as_deref(), &current)?;
            }
            _ => {
                let want: SymlinkProps = tenet_sdk::from_value(desired)?;
                if want.target != current.target {
                    changes.push(
                        FieldChange::new(
                            "target",
                            current.target.as_ref().map(|t| json!(t)),
                            want.target.as_ref().map(|t| json!(t)),
                        )
                        .forcing_replacement(),
                    );
                }
            }
        }
        Ok(Diff::from_changes(changes))
    }

    fn apply(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Value, Error> {
        check_kind(kind)?;
        if is_edit(kind) {
            return edit::apply(kind, desired);
        }
        let current: Option<Observed> = current.map(tenet_sdk::from_value).transpose()?;
        let path = match kind {
            "file" => {
                let want: FileProps = tenet_sdk::from_value(desired)?;
                apply_file(&want, current.as_ref())?;
                want.path
            }
            "directory" => {
                let want: DirectoryProps = tenet_sdk::from_value(desired)?;
                apply_directory(&want, current.as_ref())?;
                want.path
            }
            _ => {
                let want: SymlinkProps = tenet_sdk::from_value(desired)?;
                apply_symlink(&want)?;
                want.path
            }
        };
        let observed = observe(&path)?.ok_or_else(|| {
            Error::Internal(format!("`{path}` is missing right after it was written"))
        })?;
        tenet_sdk::to_value(&observed)
    }

    fn delete(kind: &str, current: &Value) -> Result<(), Error> {
        check_kind(kind)?;
        if is_edit(kind) {
            return edit::delete(kind, current);
        }
        let current: Observed = tenet_sdk::from_value(current)?;
        let path = current.path.as_str();
        if current.kind != "directory" {
            remove_leftover(path);
        }
        let result = match fsx::stat(path)? {
            None => return Ok(()),
            Some(s) if kind_name(s.kind) != current.kind => {
                return Err(Error::Conflict(format!(
                    "`{path}` is now a {}, not the {} that was planned; refusing to delete it",
                    kind_name(s.kind),
                    current.kind
                )));
            }
            Some(s) if s.kind == FileKind::Directory => std::fs::remove_dir(path),
            Some(_) => std::fs::remove_file(path),
        };
        result.map_err(|e| match e.kind() {
            ErrorKind::DirectoryNotEmpty => Error::Conflict(format!(
                "directory `{path}` is not empty; Tenet removes only empty directories"
            )),
            _ => io_error(path, &e),
        })
    }
}

tenet_sdk::export_provider!(FileProvider);

fn check_kind(kind: &str) -> Result<(), Error> {
    match kind {
        "file" | "directory" | "symlink" | "line" | "block" => Ok(()),
        other => Err(Error::unknown_kind(other)),
    }
}

/// `line` and `block`: parts of a file ([`edit`]).
fn is_edit(kind: &str) -> bool {
    matches!(kind, "line" | "block")
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Other => "other",
    }
}

fn io_error(path: &str, e: &std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::NotFound => Error::NotFound(format!("`{path}`: {e}")),
        ErrorKind::AlreadyExists | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
            Error::Conflict(format!("`{path}`: {e}"))
        }
        ErrorKind::PermissionDenied => Error::CapabilityDenied(format!("`{path}`: {e}")),
        _ => Error::Internal(format!("`{path}`: {e}")),
    }
}

/// `"644"`, `"0644"` → `0o644`.
fn parse_mode(text: &str) -> Result<u32, Error> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| Error::InvalidInput(format!("mode `{text}` is not an octal mode")))
}

fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

fn mode_change(
    changes: &mut Vec<FieldChange>,
    want: Option<&str>,
    current: &Observed,
) -> Result<(), Error> {
    if let Some(want) = want {
        let want = format_mode(parse_mode(want)?);
        if current.mode.as_deref() != Some(want.as_str()) {
            changes.push(FieldChange::new(
                "mode",
                current.mode.as_ref().map(|m| json!(m)),
                Some(json!(want)),
            ));
        }
    }
    Ok(())
}

fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(bytes.as_ref()))
}

/// The content a file should have: its digest, and how a plan shows it (the text when
/// it is inline-sized UTF-8, else its digest, size and source).
struct Wanted {
    sha256: String,
    shown: Value,
}

fn wanted_content(want: &FileProps) -> Result<Option<Wanted>, Error> {
    Ok(match (&want.content, &want.source) {
        (Some(c), _) => Some(Wanted {
            sha256: sha256_hex(c),
            shown: json!(c),
        }),
        (None, Some(source)) => {
            let d = digest(source)?;
            Some(Wanted {
                shown: match d.text {
                    Some(text) => json!(text),
                    None => json!({"sha256": d.sha256, "size": d.size, "source": source}),
                },
                sha256: d.sha256,
            })
        }
        (None, None) => None,
    })
}

/// A regular file's sha256 and size, streamed (a file may be far larger than the
/// provider's memory), with its text when it is UTF-8 of at most [`MAX_INLINE_CONTENT`].
struct Digested {
    sha256: String,
    size: u64,
    text: Option<String>,
}

fn digest(path: &str) -> Result<Digested, Error> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
    let mut hasher = Sha256::new();
    let mut inline = Vec::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_error(path, &e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        if size <= MAX_INLINE_CONTENT {
            inline.extend_from_slice(&buf[..n]);
        }
    }
    Ok(Digested {
        sha256: hex::encode(hasher.finalize()),
        size,
        text: (size <= MAX_INLINE_CONTENT)
            .then(|| String::from_utf8(inline).ok())
            .flatten(),
    })
}

/// What is at `path`, or `None`.
fn observe(path: &str) -> Result<Option<Observed>, Error> {
    let Some(stat) = fsx::stat(path)? else {
        return Ok(None);
    };
    let mut o = Observed {
        path: path.to_owned(),
        ensure: Ensure::Present,
        kind: kind_name(stat.kind).to_owned(),
        ..Observed::default()
    };
    match stat.kind {
        FileKind::File => {
            let d = digest(path)?;
            o.mode = Some(format_mode(stat.mode));
            o.size = Some(d.size);
            o.content_sha256 = Some(d.sha256);
            o.content = d.text;
        }
        FileKind::Directory => o.mode = Some(format_mode(stat.mode)),
        FileKind::Symlink => {
            let target = std::fs::read_link(path).map_err(|e| io_error(path, &e))?;
            o.target = Some(target.to_string_lossy().into_owned());
        }
        FileKind::Other => {}
    }
    Ok(Some(o))
}

fn parent_of(path: &str) -> Result<&Path, Error> {
    let parent = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| Error::InvalidInput(format!("`{path}` has no parent directory")))?;
    match fsx::stat(&parent.to_string_lossy())? {
        Some(s) if s.kind == FileKind::Directory => Ok(parent),
        Some(s) => Err(Error::Conflict(format!(
            "parent of `{path}` is a {}, not a directory",
            s.kind.name()
        ))),
        None => Err(Error::NotFound(format!(
            "parent directory `{}` does not exist; declare it as a file.directory resource",
            parent.display()
        ))),
    }
}

/// The name beside `path` for an atomic write: first always the same one, so a write
/// interrupted by a killed run leaves at most one temporary per file, which the next write
/// of that file (or its deletion) removes; then, only if that name is taken by something
/// this write did not leave, fresh ones.
fn temp_path(path: &str, attempt: u32) -> PathBuf {
    let p = Path::new(path);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if attempt == 0 {
        return p.with_file_name(format!(".{name}.tenet.tmp"));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    p.with_file_name(format!(".{name}.tenet-{nanos:x}-{attempt}.tmp"))
}

/// Remove what an interrupted write of `path` left beside it. Unlinking never follows a
/// symlink, so something planted at that name is removed, not written through.
fn remove_leftover(path: &str) {
    let _ = std::fs::remove_file(temp_path(path, 0));
}

/// Run `create` on a fresh temporary path beside `path`, then rename it over `path`.
/// On any failure the temporary is removed and `path` is untouched.
fn atomically(
    path: &str,
    create: impl Fn(&Path) -> std::io::Result<()>,
    finish: impl Fn(&str) -> Result<(), Error>,
) -> Result<(), Error> {
    parent_of(path)?;
    remove_leftover(path);
    let mut attempt = 0;
    let tmp = loop {
        let tmp = temp_path(path, attempt);
        // `create` makes the file exclusively (never through what is already there).
        match create(&tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(io_error(path, &e)),
        }
    };
    let tmp_str = tmp.to_string_lossy().into_owned();
    let result =
        finish(&tmp_str).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| io_error(path, &e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn apply_file(want: &FileProps, current: Option<&Observed>) -> Result<(), Error> {
    let path = want.path.as_str();
    let mode = want.mode.as_deref().map(parse_mode).transpose()?;
    let existing_file = current.filter(|c| c.kind == "file");
    let wanted = wanted_content(want)?;
    let content_ok = match (&wanted, existing_file) {
        (None, Some(_)) => true,
        (Some(w), Some(cur)) => cur.content_sha256.as_deref() == Some(w.sha256.as_str()),
        (_, None) => false,
    };
    if content_ok {
        if let Some(mode) = mode {
            fsx::chmod(path, mode)?;
        }
        return Ok(());
    }
    // Keep the mode and owner of a file we overwrite unless a new mode is asked for.
    let keep_mode = existing_file
        .and_then(|c| c.mode.as_deref())
        .map(parse_mode)
        .transpose()?;
    let owner = match existing_file {
        Some(_) => fsx::stat(path)?.map(|s| (s.uid, s.gid)),
        None => None,
    };
    let content = want.content.as_deref().unwrap_or("");
    atomically(
        path,
        |tmp| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp)
                .map(drop)
        },
        |tmp| {
            // Permissions and owner first, so the content is never readable under a
            // looser mode; then the content, synced before the rename.
            if let Some(m) = mode.or(keep_mode) {
                fsx::chmod(tmp, m)?;
            }
            if let (Some((uid, gid)), Some(now)) = (owner, fsx::stat(tmp)?)
                && (now.uid, now.gid) != (uid, gid)
                && let Err(e) = fsx::chown(tmp, Some(uid), Some(gid))
            {
                tenet_sdk::log::warn(&format!("cannot keep the owner of `{path}`: {e}"));
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(tmp)
                .map_err(|e| io_error(path, &e))?;
            match &want.source {
                // Streamed: a source may be larger than the provider's memory.
                Some(source) if want.content.is_none() => {
                    let mut from = std::fs::File::open(source).map_err(|e| io_error(source, &e))?;
                    std::io::copy(&mut from, &mut f).map_err(|e| io_error(path, &e))?;
                    f.sync_all().map_err(|e| io_error(path, &e))
                }
                _ => f
                    .write_all(content.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| io_error(path, &e)),
            }
        },
    )
}

fn apply_directory(want: &DirectoryProps, current: Option<&Observed>) -> Result<(), Error> {
    let path = want.path.as_str();
    if current.is_none_or(|c| c.kind != "directory") {
        parent_of(path)?;
        match std::fs::create_dir(path) {
            Ok(()) => {}
            // Already there (e.g. the host created a granted directory): converge its mode.
            Err(e)
                if e.kind() == ErrorKind::AlreadyExists
                    && fsx::stat(path)?.is_some_and(|s| s.kind == FileKind::Directory) => {}
            Err(e) => return Err(io_error(path, &e)),
        }
    }
    if let Some(mode) = want.mode.as_deref() {
        fsx::chmod(path, parse_mode(mode)?)?;
    }
    Ok(())
}

fn apply_symlink(want: &SymlinkProps) -> Result<(), Error> {
    let path = want.path.as_str();
    let target = want
        .target
        .as_deref()
        .ok_or_else(|| Error::InvalidInput("a symlink needs a `target`".into()))?;
    atomically(path, |tmp| tenet_sdk::fs::symlink(target, tmp), |_| Ok(()))
}

#[cfg(test)]
mod tests {
    //! The provider's logic, natively against a temporary directory.
    use super::*;
    use tenet_sdk::Action;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    fn p(dir: &tempfile::TempDir, name: &str) -> String {
        dir.path().join(name).to_string_lossy().into_owned()
    }

    fn plan_apply(kind: &str, desired: &Value) -> (Diff, Option<Value>) {
        let current = FileProvider::read(kind, desired).expect("read");
        let diff = FileProvider::diff(kind, desired, current.as_ref()).expect("diff");
        let after = match diff.action {
            Action::None => current,
            Action::Delete => {
                FileProvider::delete(kind, current.as_ref().expect("current")).expect("delete");
                None
            }
            Action::Replace => {
                FileProvider::delete(kind, current.as_ref().expect("current")).expect("delete");
                Some(FileProvider::apply(kind, desired, None).expect("apply"))
            }
            _ => Some(FileProvider::apply(kind, desired, current.as_ref()).expect("apply")),
        };
        (diff, after)
    }

    #[test]
    fn file_create_update_converge_delete() {
        let d = tmp();
        let path = p(&d, "a.txt");
        let want = json!({"path": path, "content": "hello\n", "mode": "0640"});
        let (diff, state) = plan_apply("file", &want);
        assert_eq!(diff.action, Action::Create);
        let state = state.expect("state");
        assert_eq!(state["content"], "hello\n");
        assert_eq!(state["mode"], "0640");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "hello\n");

        let (diff, _) = plan_apply("file", &want);
        assert_eq!(diff, Diff::none(), "second run must change nothing");

        let want2 = json!({"path": path, "content": "bye\n", "mode": "0600"});
        let (diff, _) = plan_apply("file", &want2);
        assert_eq!(diff.action, Action::Update);
        let paths: Vec<_> = diff.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/content", "/mode"]);
        assert_eq!(diff.changes[0].before, Some(json!("hello\n")));
        assert_eq!(diff.changes[1].after, Some(json!("0600")));

        let gone = json!({"path": path, "ensure": "absent"});
        let (diff, _) = plan_apply("file", &gone);
        assert_eq!(diff.action, Action::Delete);
        assert!(!Path::new(&path).exists());
        let (diff, _) = plan_apply("file", &gone);
        assert_eq!(diff.action, Action::None);
    }

    #[test]
    fn overwrite_keeps_mode_and_leaves_no_temporaries() {
        let d = tmp();
        let path = p(&d, "b");
        plan_apply(
            "file",
            &json!({"path": path, "content": "1", "mode": "0600"}),
        );
        plan_apply("file", &json!({"path": path, "content": "2"}));
        let state = FileProvider::read("file", &json!({"path": path}))
            .expect("read")
            .expect("present");
        assert_eq!(state["mode"], "0600");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "only the file itself: {names:?}");
    }

    #[test]
    fn missing_parent_is_a_clear_error() {
        let d = tmp();
        let path = p(&d, "no/such/file");
        let err = FileProvider::apply("file", &json!({"path": path, "content": "x"}), None)
            .expect_err("must fail");
        assert!(matches!(&err, Error::NotFound(m) if m.contains("declare it as a file.directory")));
    }

    #[test]
    fn directory_over_file_is_a_replacement() {
        let d = tmp();
        let path = p(&d, "x");
        std::fs::write(&path, "data").expect("write");
        let want = json!({"path": path});
        let current = FileProvider::read("directory", &want).expect("read");
        let diff = FileProvider::diff("directory", &want, current.as_ref()).expect("diff");
        assert_eq!(diff.action, Action::Replace);
        assert_eq!(diff.changes[0].path, "/kind");
    }

    #[test]
    fn non_empty_directory_is_not_deleted() {
        let d = tmp();
        let dir = p(&d, "dir");
        plan_apply("directory", &json!({"path": dir}));
        std::fs::write(Path::new(&dir).join("keep"), "x").expect("write");
        let current = FileProvider::read("directory", &json!({"path": dir}))
            .expect("read")
            .expect("present");
        let err = FileProvider::delete("directory", &current).expect_err("conflict");
        assert!(matches!(err, Error::Conflict(_)));
        assert!(Path::new(&dir).join("keep").exists());
    }

    #[test]
    fn symlink_target_change_forces_replacement() {
        let d = tmp();
        let link = p(&d, "link");
        let (diff, _) = plan_apply("symlink", &json!({"path": link, "target": "a"}));
        assert_eq!(diff.action, Action::Create);
        let (diff, state) = plan_apply("symlink", &json!({"path": link, "target": "b"}));
        assert_eq!(diff.action, Action::Replace);
        assert_eq!(state.expect("state")["target"], "b");
        assert_eq!(std::fs::read_link(&link).expect("link"), Path::new("b"));
    }

    #[test]
    fn validate_reports_missing_symlink_target() {
        let diags = FileProvider::validate("symlink", &json!({"path": "/x"}));
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("target"));
    }

    #[test]
    fn binary_content_is_compared_by_digest() {
        let d = tmp();
        let path = p(&d, "bin");
        std::fs::write(&path, [0xff_u8, 0xfe, 0x00]).expect("write");
        let want = json!({"path": path, "content": "text"});
        let current = FileProvider::read("file", &want)
            .expect("read")
            .expect("present");
        assert!(current.get("content").is_none());
        let diff = FileProvider::diff("file", &want, Some(&current)).expect("diff");
        assert_eq!(diff.action, Action::Update);
        assert_eq!(
            diff.changes[0].before.as_ref().and_then(|b| b.get("size")),
            Some(&json!(3))
        );
    }

    #[test]
    fn a_source_file_is_copied_byte_for_byte_and_shown_by_digest_unless_small_text() {
        let d = tmp();
        // Binary, and larger than what is inlined: never shown, compared by sha256.
        let big: Vec<u8> = (0..(MAX_INLINE_CONTENT as usize + 10))
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        let src = p(&d, "blob.src");
        std::fs::write(&src, &big).expect("write");
        let path = p(&d, "blob");
        let want = json!({"path": path, "source": src});
        let diff = FileProvider::diff("file", &want, None).expect("diff");
        assert_eq!(diff.action, Action::Create);
        FileProvider::apply("file", &want, None).expect("apply");
        assert_eq!(std::fs::read(&path).expect("copied"), big);
        let current = FileProvider::read("file", &want)
            .expect("read")
            .expect("present");
        let diff = FileProvider::diff("file", &want, Some(&current)).expect("diff");
        assert_eq!(diff.action, Action::None, "converged: {diff:?}");
        // The source changes: an update showing digests and size, not bytes.
        let mut changed = big.clone();
        changed[5] ^= 1;
        std::fs::write(&src, &changed).expect("write");
        let diff = FileProvider::diff("file", &want, Some(&current)).expect("diff");
        assert_eq!(diff.action, Action::Update);
        let after = diff.changes[0].after.clone().expect("after");
        assert_eq!(after["sha256"], json!(sha256_hex(&changed)));
        assert_eq!(after["size"], json!(changed.len()));
        assert!(after.get("content").is_none());
        // Small UTF-8 text is shown as text, for a readable diff.
        std::fs::write(&src, "listen 80\n").expect("write");
        let diff = FileProvider::diff("file", &want, Some(&current)).expect("diff");
        assert_eq!(diff.changes[0].after, Some(json!("listen 80\n")));
        // Both, or a missing source, is an error naming it.
        let both = json!({"path": path, "source": src, "content": "x"});
        assert!(!FileProvider::validate("file", &both).is_empty());
        let missing = json!({"path": path, "source": p(&d, "nope")});
        let err = FileProvider::diff("file", &missing, Some(&current)).expect_err("missing");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn unknown_kind_is_invalid_input() {
        assert!(matches!(
            FileProvider::read("socket", &json!({"path": "/x"})),
            Err(Error::InvalidInput(_))
        ));
    }
}
