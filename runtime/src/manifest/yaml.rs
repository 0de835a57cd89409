//! YAML → JSON with positions. Manifests are YAML; everything after parsing works on JSON
//! values, and this module remembers where each value came from (by JSON pointer) so any
//! later problem can be reported at `file:line:col`.

use crate::diag::Location;
use marked_yaml::{LoaderOptions, Node};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where each value of one document came from.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    pub file: PathBuf,
    /// JSON pointer → where the value starts.
    values: BTreeMap<String, Location>,
    /// JSON pointer → where the key of that value starts (mapping entries only).
    keys: BTreeMap<String, Location>,
    /// JSON pointer → the character index in the text where the value starts.
    offsets: BTreeMap<String, usize>,
}

impl Spans {
    /// The place of the value at `pointer`, falling back to the nearest enclosing value.
    pub fn value(&self, pointer: &str) -> Location {
        let mut p = pointer;
        loop {
            if let Some(loc) = self.values.get(p) {
                return loc.clone();
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Location::file(&self.file),
            }
        }
    }

    /// The character index where the value at exactly `pointer` starts in the text.
    pub fn offset(&self, pointer: &str) -> Option<usize> {
        self.offsets.get(pointer).copied()
    }

    /// The place of the key whose value is at `pointer`, or the value's place.
    pub fn key(&self, pointer: &str) -> Location {
        self.keys
            .get(pointer)
            .cloned()
            .unwrap_or_else(|| self.value(pointer))
    }

    /// A view of the spans under `prefix`, re-rooted so `prefix` becomes `""`.
    pub fn subtree(&self, prefix: &str) -> Spans {
        fn cut<T: Clone>(m: &BTreeMap<String, T>, prefix: &str) -> BTreeMap<String, T> {
            m.range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(k, _)| k.len() == prefix.len() || k[prefix.len()..].starts_with('/'))
                .map(|(k, v)| (k[prefix.len()..].to_owned(), v.clone()))
                .collect()
        }
        Spans {
            file: self.file.clone(),
            values: cut(&self.values, prefix),
            keys: cut(&self.keys, prefix),
            offsets: cut(&self.offsets, prefix),
        }
    }
}

/// A YAML document could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub location: Location,
    pub message: String,
}

/// Parse one YAML document (a mapping at the top) into JSON plus spans. Duplicate keys
/// are errors: a silently ignored duplicate is a classic source of surprise.
pub fn parse(file: &Path, text: &str) -> Result<(Value, Spans), YamlError> {
    let mut spans = Spans {
        file: file.to_path_buf(),
        ..Spans::default()
    };
    if text.trim().is_empty() {
        return Ok((Value::Object(Map::new()), spans));
    }
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        // Quoted scalars must stay strings: `mode: "0644"` is not the number 644.
        .prevent_coercion(true)
        .toplevel_mapping();
    let node =
        marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| load_error(file, e))?;
    let value = convert(&node, String::new(), &mut spans);
    Ok((value, spans))
}

fn marker_loc(file: &Path, m: Option<&marked_yaml::Marker>) -> Location {
    match m {
        Some(m) => Location::new(file, m.line().max(1), m.column().max(1)),
        None => Location::file(file),
    }
}

fn load_error(file: &Path, e: marked_yaml::LoadError) -> YamlError {
    use marked_yaml::LoadError as E;
    let (location, message) = match e {
        E::TopLevelMustBeMapping(m) => (
            marker_loc(file, Some(&m)),
            "a manifest must be a mapping with `vars`, `providers` and `resources`".to_owned(),
        ),
        E::TopLevelMustBeSequence(m) => (
            marker_loc(file, Some(&m)),
            "expected a sequence at the top".to_owned(),
        ),
        E::UnexpectedAnchor(m) => (
            marker_loc(file, Some(&m)),
            "YAML anchors and aliases are not supported in manifests".to_owned(),
        ),
        E::MappingKeyMustBeScalar(m) => (
            marker_loc(file, Some(&m)),
            "mapping keys must be plain strings".to_owned(),
        ),
        E::UnexpectedTag(m) => (
            marker_loc(file, Some(&m)),
            "YAML tags are not supported in manifests".to_owned(),
        ),
        E::ScanError(m, se) => (
            marker_loc(file, Some(&m)),
            format!("invalid YAML: {}", se.info()),
        ),
        E::DuplicateKey(inner) => {
            let first = marker_loc(file, inner.prev_key.span().start());
            (
                marker_loc(file, inner.key.span().start()),
                format!(
                    "duplicate key `{}` (first defined at {first})",
                    inner.key.as_str()
                ),
            )
        }
    };
    YamlError { location, message }
}

/// `key` as one JSON-pointer segment (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The key one JSON-pointer segment names (the inverse of [`escape`]).
pub fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

fn convert(node: &Node, pointer: String, spans: &mut Spans) -> Value {
    let file = spans.file.clone();
    spans
        .values
        .insert(pointer.clone(), marker_loc(&file, node.span().start()));
    if let Some(m) = node.span().start() {
        spans.offsets.insert(pointer.clone(), m.character());
    }
    match node {
        Node::Scalar(s) => scalar(s),
        Node::Sequence(seq) => Value::Array(
            seq.iter()
                .enumerate()
                .map(|(i, n)| convert(n, format!("{pointer}/{i}"), spans))
                .collect(),
        ),
        Node::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map.iter() {
                let child = format!("{pointer}/{}", escape(k.as_str()));
                spans
                    .keys
                    .insert(child.clone(), marker_loc(&file, k.span().start()));
                out.insert(k.as_str().to_owned(), convert(v, child, spans));
            }
            Value::Object(out)
        }
    }
}

/// YAML 1.2 core-schema typing for plain scalars; quoted scalars stay strings.
fn scalar(s: &marked_yaml::types::MarkedScalarNode) -> Value {
    let text = s.as_str();
    if !s.may_coerce() {
        return Value::String(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Number(i.into());
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(i.into());
    }
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && text.chars().any(|c| c.is_ascii_digit());
    if looks_numeric
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_with_positions() {
        let text = "a: 1\nb:\n  - x\n  - 'true'\n  - true\nc: {d: 0644, e: \"0644\"}\n";
        let (v, spans) = parse(Path::new("m.yaml"), text).expect("parse");
        assert_eq!(
            v,
            json!({"a": 1, "b": ["x", "true", true], "c": {"d": 644, "e": "0644"}})
        );
        assert_eq!(spans.value("/b/1").to_string(), "m.yaml:4:5");
        assert_eq!(spans.key("/c").to_string(), "m.yaml:6:1");
        assert_eq!(spans.value("/c/e/deeper").to_string(), "m.yaml:6:17");
        let sub = spans.subtree("/c");
        assert_eq!(sub.value("/d").to_string(), "m.yaml:6:8");
    }

    #[test]
    fn duplicate_keys_are_errors_naming_both_places() {
        let err = parse(Path::new("m.yaml"), "a: 1\nb: 2\na: 3\n").expect_err("dup");
        assert_eq!(err.location.to_string(), "m.yaml:3:1");
        assert!(
            err.message.contains("first defined at m.yaml:1:1"),
            "{}",
            err.message
        );
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let err = parse(Path::new("m.yaml"), "a: [1, 2\nb: 3\n").expect_err("bad");
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert_eq!(err.location.file, Path::new("m.yaml"));
    }
}
