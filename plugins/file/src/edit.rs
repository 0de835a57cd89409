//! `file.line` and `file.block`: one line, or one marked block, in a file whose other
//! lines are someone else's — the rest of the file, its mode and its owner are kept, and
//! the file is replaced atomically.
//!
//! A line with a `match` regex converges: the regex must match the line itself (Puppet's
//! rule — otherwise every run would add the line again, Ansible's most reported
//! `lineinfile` bug), the first line it matches is replaced, further matches are removed.
//! Without `match`, the exact line is added once if it is not there. A block sits between
//! two marker lines made from `marker` (`{mark}` becomes `BEGIN` and `END`), replaced in
//! place when its text changes. New lines and blocks go after the last line matching
//! `after`, or at the end. The file's line ending (`\n` or `\r\n`) is kept.
//!
//! The observed state names the resource absent (`read` finds nothing) when the line —
//! or a line `match` matches — is not in the file, or the block's markers are not.

use super::{Error, Observed, apply_file, observe};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenet_sdk::Ensure;

/// Largest file `file.line` and `file.block` edit: they hold it in memory twice.
pub const MAX_EDIT_BYTES: usize = 16 * 1024 * 1024;
/// Longest regex accepted in `match` and `after` (the compiled program is bounded too).
pub const MAX_PATTERN_BYTES: usize = 1024;
/// The default block marker: `{mark}` is `BEGIN` or `END`.
pub const DEFAULT_MARKER: &str = "# {mark} TENET MANAGED BLOCK";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineProps {
    path: String,
    line: String,
    #[serde(rename = "match")]
    matches: Option<String>,
    after: Option<String>,
    #[serde(default)]
    create: bool,
    #[serde(default)]
    ensure: Ensure,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlockProps {
    path: String,
    block: String,
    marker: Option<String>,
    after: Option<String>,
    #[serde(default)]
    create: bool,
    #[serde(default)]
    ensure: Ensure,
}

/// What `read` finds of a line: the line at the place `match` points to (or the exact
/// line), and how many further lines match.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct LineState {
    path: String,
    line: String,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    matches: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    create: bool,
    ensure: Ensure,
    /// Further lines `match` matches (removed on apply).
    extra: u64,
}

/// What `read` finds of a block: the text between its markers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct BlockState {
    path: String,
    block: String,
    marker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    create: bool,
    ensure: Ensure,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The JSON Schema of `file.line` (`kind == "line"`) or `file.block`.
pub(crate) fn schema(kind: &str) -> Value {
    let path = json!({"type": "string", "minLength": 1,
        "description": "the file; relative paths are relative to the manifest"});
    let ensure = json!({"enum": ["present", "absent"], "default": "present",
        "description": "whether the line (block) is in the file"});
    let after = json!({"type": "string", "maxLength": MAX_PATTERN_BYTES,
        "description": "a regex: a new line (block) goes after the last line it matches, else at the end"});
    let create = json!({"type": "boolean", "default": false,
        "description": "create the file if it does not exist (else that is an error)"});
    let props = if kind == "line" {
        json!({
            "path": path, "ensure": ensure, "after": after, "create": create,
            "line": {"type": "string", "pattern": "^[^\\n\\r]*$",
                "description": "the whole line, without its line ending"},
            "match": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN_BYTES,
                "description": "a regex that finds the line to replace; it must match `line` itself"},
            "extra": {"type": "integer", "readOnly": true,
                "description": "further lines `match` matches, as observed (removed on apply)"},
        })
    } else {
        json!({
            "path": path, "ensure": ensure, "after": after, "create": create,
            "block": {"type": "string",
                "description": "the lines between the markers (a final newline is implied)"},
            "marker": {"type": "string", "pattern": "\\{mark\\}", "default": DEFAULT_MARKER,
                "description": "the marker lines' text; `{mark}` becomes BEGIN and END"},
        })
    };
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": props,
        "required": if kind == "line" { json!(["path", "line"]) } else { json!(["path", "block"]) },
        "additionalProperties": false,
    })
}

fn regex(field: &str, pattern: &str) -> Result<regex_lite::Regex, Error> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(Error::InvalidInput(format!(
            "`{field}` is longer than {MAX_PATTERN_BYTES} bytes"
        )));
    }
    regex_lite::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::InvalidInput(format!("`{field}` is not a valid regex: {e}")))
}

/// Problems `validate` reports for a line or block, with the property they are about.
pub(crate) fn problems(kind: &str, properties: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let text = |k: &str| properties.get(k).and_then(Value::as_str);
    for field in ["match", "after"] {
        if let Some(p) = text(field)
            && let Err(e) = regex(field, p)
        {
            out.push((
                if field == "match" { "/match" } else { "/after" },
                e.to_string(),
            ));
        }
    }
    if kind == "line"
        && text("ensure") != Some("absent")
        && let (Some(line), Some(m)) = (text("line"), text("match"))
        && let Ok(re) = regex("match", m)
        && !re.is_match(line)
    {
        out.push((
            "/match",
            format!(
                "`{m}` does not match the line `{line}` itself: the line would be added again on every run; make `match` match the line"
            ),
        ));
    }
    if kind == "block" {
        let marker = text("marker").unwrap_or(DEFAULT_MARKER);
        if !marker.contains("{mark}") {
            out.push((
                "/marker",
                "the marker must contain `{mark}` (BEGIN and END tell the two lines apart)".into(),
            ));
        } else if let Some(block) = text("block") {
            let (begin, end) = markers(marker);
            if block.lines().any(|l| l == begin || l == end) {
                out.push((
                    "/block",
                    "the block contains one of its own marker lines".into(),
                ));
            }
        }
    }
    out
}

fn markers(marker: &str) -> (String, String) {
    (
        marker.replace("{mark}", "BEGIN"),
        marker.replace("{mark}", "END"),
    )
}

/// A text file as lines, with its line ending and whether it ended with one.
struct Text {
    lines: Vec<String>,
    eol: &'static str,
}

impl Text {
    fn parse(content: &str) -> Text {
        let eol = if content.contains("\r\n") {
            "\r\n"
        } else {
            "\n"
        };
        let mut lines: Vec<String> = content.split(eol).map(str::to_owned).collect();
        // "a\nb\n" splits into ["a", "b", ""]: the last element is the final newline.
        if lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        Text { lines, eol }
    }

    /// Every line ends with the file's line ending (a last line without one gains it).
    fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(l);
            out.push_str(self.eol);
        }
        out
    }

    /// Where a new line goes: after the last line `after` matches, else at the end.
    fn insertion_point(&self, after: Option<&regex_lite::Regex>) -> usize {
        after
            .and_then(|re| self.lines.iter().rposition(|l| re.is_match(l)))
            .map_or(self.lines.len(), |i| i + 1)
    }
}

/// The file's text, or `None` if there is no file. Refuses what is not a regular UTF-8
/// file of at most [`MAX_EDIT_BYTES`].
fn read_text(path: &str) -> Result<Option<(Text, Observed)>, Error> {
    let Some(o) = observe(path)? else {
        return Ok(None);
    };
    if o.kind != "file" {
        return Err(Error::Conflict(format!(
            "`{path}` is a {}, not a file",
            o.kind
        )));
    }
    if o.size.unwrap_or(0) > MAX_EDIT_BYTES as u64 {
        return Err(Error::InvalidInput(format!(
            "`{path}` is larger than {MAX_EDIT_BYTES} bytes: too large to edit line by line"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| super::io_error(path, &e))?;
    let content = String::from_utf8(bytes)
        .map_err(|_| Error::InvalidInput(format!("`{path}` is not UTF-8 text")))?;
    Ok(Some((Text::parse(&content), o)))
}

/// Where the line is: the index of the exact line, else of the first line `match`
/// matches; and the indices of the further lines `match` matches.
fn locate_line(text: &Text, want: &LineProps) -> Result<Option<(usize, Vec<usize>)>, Error> {
    let re = want
        .matches
        .as_deref()
        .map(|m| regex("match", m))
        .transpose()?;
    let matching: Vec<usize> = match &re {
        Some(re) => (0..text.lines.len())
            .filter(|&i| re.is_match(&text.lines[i]) || text.lines[i] == want.line)
            .collect(),
        None => text
            .lines
            .iter()
            .position(|l| *l == want.line)
            .into_iter()
            .collect(),
    };
    let Some(&first) = matching
        .iter()
        .find(|&&i| text.lines[i] == want.line)
        .or(matching.first())
    else {
        return Ok(None);
    };
    let extra = matching.into_iter().filter(|&i| i != first).collect();
    Ok(Some((first, extra)))
}

/// The block's marker lines' indices.
fn locate_block(text: &Text, marker: &str) -> Option<(usize, usize)> {
    let (begin, end) = markers(marker);
    let b = text.lines.iter().position(|l| *l == begin)?;
    let e = text.lines[b + 1..].iter().position(|l| *l == end)? + b + 1;
    Some((b, e))
}

fn block_lines(block: &str) -> Vec<String> {
    Text::parse(block).lines
}

pub(crate) fn read(kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
    if kind == "line" {
        let want: LineProps = tenet_sdk::from_value(properties)?;
        let Some((text, _)) = read_text(&want.path)? else {
            return Ok(None);
        };
        let Some((at, extra)) = locate_line(&text, &want)? else {
            return Ok(None);
        };
        return tenet_sdk::to_value(&LineState {
            path: want.path,
            line: text.lines[at].clone(),
            matches: want.matches,
            after: want.after,
            create: want.create,
            ensure: Ensure::Present,
            extra: extra.len() as u64,
        })
        .map(Some);
    }
    let want: BlockProps = tenet_sdk::from_value(properties)?;
    let marker = want.marker.unwrap_or_else(|| DEFAULT_MARKER.to_owned());
    let Some((text, _)) = read_text(&want.path)? else {
        return Ok(None);
    };
    let Some((b, e)) = locate_block(&text, &marker) else {
        return Ok(None);
    };
    let mut block = String::new();
    for l in &text.lines[b + 1..e] {
        block.push_str(l);
        block.push('\n');
    }
    tenet_sdk::to_value(&BlockState {
        path: want.path,
        block,
        marker,
        after: want.after,
        create: want.create,
        ensure: Ensure::Present,
    })
    .map(Some)
}

/// The desired `ensure` of a line or block.
pub(crate) fn ensure(kind: &str, desired: &Value) -> Result<Ensure, Error> {
    Ok(if kind == "line" {
        tenet_sdk::from_value::<LineProps>(desired)?.ensure
    } else {
        tenet_sdk::from_value::<BlockProps>(desired)?.ensure
    })
}

/// The field changes from `current` (present) to `desired` (present).
pub(crate) fn changes(
    kind: &str,
    desired: &Value,
    current: &Value,
) -> Result<Vec<tenet_sdk::FieldChange>, Error> {
    let mut out = Vec::new();
    if kind == "line" {
        let want: LineProps = tenet_sdk::from_value(desired)?;
        let now: LineState = tenet_sdk::from_value(current)?;
        if now.line != want.line {
            out.push(tenet_sdk::FieldChange::new(
                "line",
                Some(json!(now.line)),
                Some(json!(want.line)),
            ));
        }
        if now.extra > 0 {
            out.push(tenet_sdk::FieldChange::new(
                "extra",
                Some(json!(now.extra)),
                Some(json!(0)),
            ));
        }
    } else {
        let want: BlockProps = tenet_sdk::from_value(desired)?;
        let now: BlockState = tenet_sdk::from_value(current)?;
        let block = normalized_block(&want.block);
        if now.block != block {
            out.push(tenet_sdk::FieldChange::new(
                "block",
                Some(json!(now.block)),
                Some(json!(block)),
            ));
        }
    }
    Ok(out)
}

/// A block as read back: its lines, each ending with `\n`.
fn normalized_block(block: &str) -> String {
    let mut out = String::new();
    for l in block_lines(block) {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Write `text` to `path`, keeping the mode and owner of the file it replaces.
fn write(path: &str, text: &Text, existing: Option<&Observed>) -> Result<(), Error> {
    apply_file(
        &super::FileProps {
            path: path.to_owned(),
            content: Some(text.render()),
            source: None,
            mode: None,
            ensure: Ensure::Present,
        },
        existing,
    )
}

fn missing(path: &str) -> Error {
    Error::NotFound(format!(
        "`{path}` does not exist: declare it as a file.file resource, or set `create: true`"
    ))
}

/// The `path` of a line's or block's properties or state.
fn path_of(v: &Value) -> Result<String, Error> {
    v.get("path")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidInput("`path` is required".into()))
}

pub(crate) fn apply(kind: &str, desired: &Value) -> Result<Value, Error> {
    let path = path_of(desired)?;
    let (mut text, existing, create) = match read_text(&path)? {
        Some((t, o)) => (t, Some(o), false),
        None => (Text::parse(""), None, true),
    };
    if kind == "line" {
        let want: LineProps = tenet_sdk::from_value(desired)?;
        if create && !want.create {
            return Err(missing(&path));
        }
        match locate_line(&text, &want)? {
            Some((at, extra)) => {
                text.lines[at] = want.line.clone();
                for i in extra.into_iter().rev() {
                    text.lines.remove(i);
                }
            }
            None => {
                let after = want
                    .after
                    .as_deref()
                    .map(|a| regex("after", a))
                    .transpose()?;
                let at = text.insertion_point(after.as_ref());
                text.lines.insert(at, want.line.clone());
            }
        }
    } else {
        let want: BlockProps = tenet_sdk::from_value(desired)?;
        if create && !want.create {
            return Err(missing(&path));
        }
        let marker = want.marker.as_deref().unwrap_or(DEFAULT_MARKER);
        let (begin, end) = markers(marker);
        let mut lines = vec![begin];
        lines.extend(block_lines(&want.block));
        lines.push(end);
        match locate_block(&text, marker) {
            Some((b, e)) => {
                text.lines.splice(b..=e, lines);
            }
            None => {
                let after = want
                    .after
                    .as_deref()
                    .map(|a| regex("after", a))
                    .transpose()?;
                let at = text.insertion_point(after.as_ref());
                text.lines.splice(at..at, lines);
            }
        }
    }
    write(&path, &text, existing.as_ref())?;
    read(kind, desired)?.ok_or_else(|| {
        Error::Internal(format!(
            "the {kind} is missing from `{path}` right after it was written"
        ))
    })
}

/// Remove the line (every line equal to it, and every line `match` matches) or the
/// block with its markers; the rest of the file stays.
pub(crate) fn delete(kind: &str, current: &Value) -> Result<(), Error> {
    let path = path_of(current)?;
    let Some((mut text, existing)) = read_text(&path)? else {
        return Ok(());
    };
    let before = text.lines.len();
    if kind == "line" {
        let now: LineState = tenet_sdk::from_value(current)?;
        let re = now
            .matches
            .as_deref()
            .map(|m| regex("match", m))
            .transpose()?;
        text.lines
            .retain(|l| *l != now.line && !re.as_ref().is_some_and(|re| re.is_match(l)));
    } else {
        let now: BlockState = tenet_sdk::from_value(current)?;
        if let Some((b, e)) = locate_block(&text, &now.marker) {
            text.lines.drain(b..=e);
        }
    }
    if text.lines.len() == before {
        return Ok(());
    }
    write(&path, &text, Some(&existing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileProvider;
    use std::os::unix::fs::PermissionsExt;
    use tenet_sdk::{Action, Provider};

    fn file(dir: &tempfile::TempDir, text: &str) -> String {
        let p = dir.path().join("conf");
        std::fs::write(&p, text).expect("write");
        p.to_string_lossy().into_owned()
    }

    /// Plan and apply once; returns the plan's action.
    fn converge(kind: &str, desired: &Value) -> Action {
        let current = FileProvider::read(kind, desired).expect("read");
        let diff = FileProvider::diff(kind, desired, current.as_ref()).expect("diff");
        match diff.action {
            Action::None => {}
            Action::Delete => {
                FileProvider::delete(kind, current.as_ref().expect("current")).expect("delete")
            }
            _ => {
                FileProvider::apply(kind, desired, current.as_ref()).expect("apply");
            }
        }
        diff.action
    }

    #[test]
    fn a_line_with_match_replaces_in_place_and_never_duplicates() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = file(&dir, "# sshd\nPermitRootLogin yes\nPort 22\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let want =
            json!({"path": path, "line": "PermitRootLogin no", "match": "^PermitRootLogin "});
        let current = FileProvider::read("line", &want)
            .expect("read")
            .expect("found");
        let diff = FileProvider::diff("line", &want, Some(&current)).expect("diff");
        assert_eq!(diff.action, Action::Update);
        assert_eq!(diff.changes[0].path, "/line");
        assert_eq!(diff.changes[0].before, Some(json!("PermitRootLogin yes")));
        for _ in 0..5 {
            converge("line", &want);
        }
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "# sshd\nPermitRootLogin no\nPort 22\n"
        );
        assert_eq!(converge("line", &want), Action::None);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "the file's mode is kept");
    }

    #[test]
    fn further_matches_are_removed_and_a_missing_line_goes_after_its_anchor() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = file(&dir, "[a]\nx=1\nx=2\n[b]\n");
        let want = json!({"path": path, "line": "x=3", "match": "^x="});
        let current = FileProvider::read("line", &want)
            .expect("read")
            .expect("found");
        assert_eq!(current["extra"], 1);
        converge("line", &want);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "[a]\nx=3\n[b]\n"
        );

        let want = json!({"path": path, "line": "y=1", "after": "^\\[a\\]$"});
        assert!(FileProvider::read("line", &want).expect("read").is_none());
        assert_eq!(converge("line", &want), Action::Create);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "[a]\ny=1\nx=3\n[b]\n"
        );
        assert_eq!(converge("line", &want), Action::None);
    }

    #[test]
    fn absent_removes_the_line_and_keeps_the_rest_and_its_line_endings() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = file(&dir, "one\r\ntwo\r\nthree");
        let want = json!({"path": path, "line": "two", "ensure": "absent"});
        assert_eq!(converge("line", &want), Action::Delete);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\r\nthree\r\n"
        );
        assert_eq!(converge("line", &want), Action::None);
    }

    #[test]
    fn a_match_that_does_not_match_its_own_line_is_refused() {
        let v = FileProvider::validate(
            "line",
            &json!({"path": "/x", "line": "PermitRootLogin no", "match": "^Port "}),
        );
        assert!(
            v.iter()
                .any(|d| d.path == "/match" && d.message.contains("does not match the line")),
            "{v:?}"
        );
        let v = FileProvider::validate("line", &json!({"path": "/x", "line": "a", "match": "("}));
        assert!(
            v.iter()
                .any(|d| d.path == "/match" && d.message.contains("not a valid regex"))
        );
        let v = FileProvider::validate(
            "block",
            &json!({"path": "/x", "block": "a\n", "marker": "# managed"}),
        );
        assert!(v.iter().any(|d| d.path == "/marker"), "{v:?}");
    }

    #[test]
    fn a_missing_file_is_created_only_when_asked() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("new.conf").to_string_lossy().into_owned();
        let want = json!({"path": path, "line": "a=1"});
        let err = FileProvider::apply("line", &want, None).expect_err("no file");
        assert!(err.to_string().contains("set `create: true`"), "{err}");
        let want = json!({"path": path, "line": "a=1", "create": true});
        assert_eq!(converge("line", &want), Action::Create);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a=1\n");
    }

    #[test]
    fn a_block_is_inserted_replaced_in_place_and_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = file(&dir, "user www;\nhttp {\n}\n");
        let want =
            json!({"path": path, "block": "gzip on;\ngzip_types text/css;", "after": "^user "});
        assert_eq!(converge("block", &want), Action::Create);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "user www;\n# BEGIN TENET MANAGED BLOCK\ngzip on;\ngzip_types text/css;\n# END TENET MANAGED BLOCK\nhttp {\n}\n"
        );
        assert_eq!(converge("block", &want), Action::None);

        let changed = json!({"path": path, "block": "gzip off;\n", "after": "^user "});
        let current = FileProvider::read("block", &changed)
            .expect("read")
            .expect("found");
        let diff = FileProvider::diff("block", &changed, Some(&current)).expect("diff");
        assert_eq!(diff.action, Action::Update);
        converge("block", &changed);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "user www;\n# BEGIN TENET MANAGED BLOCK\ngzip off;\n# END TENET MANAGED BLOCK\nhttp {\n}\n"
        );
        let gone = json!({"path": path, "block": "", "ensure": "absent"});
        assert_eq!(converge("block", &gone), Action::Delete);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "user www;\nhttp {\n}\n"
        );
    }
}
