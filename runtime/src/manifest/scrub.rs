//! Cutting sensitive values out of manifest text before it is recorded. A run record
//! keeps the manifest's files so the run can be rolled back to; the files may hold
//! secrets written literally — a sensitive variable's `default:`, a property listed under
//! `sensitive:` — in any YAML spelling (quoted, escaped, folded, a block scalar). A
//! search-and-replace of the value misses every spelling but the plain one, so the
//! scrubber works on the parsed document: it finds where each sensitive value starts,
//! measures its extent in the text (quoted scalar, block scalar, plain scalar, flow
//! collection), replaces exactly that with `"(sensitive)"`, and then parses the result to
//! prove each sensitive value now reads `(sensitive)`. A file it cannot prove clean is
//! withheld whole.

use super::yaml;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// What a recorded file says in place of a sensitive value.
pub const PLACEHOLDER: &str = crate::plan::SENSITIVE;

/// What a recorded file says when it could not be proved clean.
pub const WITHHELD: &str =
    "# (withheld: this file holds sensitive values Tenet could not cut out safely)\n";

/// The text of one manifest file with every sensitive value replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scrubbed {
    pub text: String,
    /// A literal sensitive property was cut out: the recorded manifest no longer says
    /// what was applied (a rollback to it is refused). Sensitive variable defaults do not
    /// count: a rollback asks for those values again.
    pub literal_cut: bool,
    /// The file could not be proved clean and was replaced by [`WITHHELD`].
    pub withheld: bool,
}

/// One sensitive property of a resource, and whether the manifest says so itself
/// (`sensitive:`), rather than because it is built from a sensitive variable.
pub type SensitiveField = (String, bool);

/// The JSON pointers of the sensitive values in one parsed manifest document: defaults
/// of `sensitive_vars`, and the sensitive properties of each resource (by id) whose text
/// holds a literal: a property declared sensitive is cut unless it is exactly one
/// `${…}` reference; one sensitive only because a sensitive variable went into it, only
/// when it has no reference at all (its literal text around the variable is no secret,
/// and cutting it would forbid a rollback).
pub fn sensitive_pointers(
    doc: &Value,
    sensitive_vars: &BTreeSet<String>,
    sensitive_props: &dyn Fn(&str) -> Vec<SensitiveField>,
) -> (Vec<String>, Vec<String>) {
    let mut defaults = Vec::new();
    if let Some(vars) = doc.get("vars").and_then(Value::as_object) {
        for (name, v) in vars {
            if sensitive_vars.contains(name) && v.get("default").is_some() {
                defaults.push(format!("/vars/{}/default", yaml::escape(name)));
            }
        }
    }
    let mut props = Vec::new();
    if let Some(resources) = doc.get("resources").and_then(Value::as_array) {
        for (i, r) in resources.iter().enumerate() {
            let Some(id) = r.get("id").and_then(Value::as_str) else {
                continue;
            };
            let Some(properties) = r.get("properties").and_then(Value::as_object) else {
                continue;
            };
            let fields = sensitive_props(id);
            for (key, value) in properties {
                let Some((_, declared)) = fields.iter().find(|(f, _)| f == key || f == "*") else {
                    continue;
                };
                let text = value.as_str().unwrap_or("");
                // Sensitive by the schema, or declared: its literal parts are secret too.
                // Only a sensitive variable's own text is known to be the secret part.
                let through_variable = sensitive_vars
                    .iter()
                    .any(|v| text.contains(&format!("var.{v}")));
                let literal = if *declared || !through_variable {
                    !is_one_reference(text)
                } else {
                    !text.contains("${")
                };
                if literal {
                    props.push(format!("/resources/{i}/properties/{}", yaml::escape(key)));
                }
            }
        }
    }
    (defaults, props)
}

/// `${…}` and nothing else: the value comes from elsewhere, the text holds none of it.
fn is_one_reference(text: &str) -> bool {
    let t = text.trim();
    t.starts_with("${") && t.ends_with('}') && t[2..].find('}') == Some(t.len() - 3)
}

/// Scrub `text` (the file `file`): replace the values at `defaults` and `props`.
pub fn scrub(file: &Path, text: &str, defaults: &[String], props: &[String]) -> Scrubbed {
    let clean = |t: String, literal_cut| Scrubbed {
        text: t,
        literal_cut,
        withheld: false,
    };
    if defaults.is_empty() && props.is_empty() {
        return clean(text.to_owned(), false);
    }
    let withheld = Scrubbed {
        text: WITHHELD.to_owned(),
        literal_cut: !props.is_empty(),
        withheld: true,
    };
    let Ok((_, spans)) = yaml::parse(file, text) else {
        return withheld;
    };
    // Byte ranges to replace, from the character offsets the parser recorded.
    let starts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    let mut ranges = Vec::new();
    for pointer in defaults.iter().chain(props) {
        let Some(start) = spans.offset(pointer).and_then(|c| starts.get(c).copied()) else {
            return withheld;
        };
        let start = block_indicator(text, start).unwrap_or(start);
        match extent(text, start) {
            Some(end) => ranges.push((start, end)),
            None => return withheld,
        }
    }
    ranges.sort_unstable();
    if ranges.windows(2).any(|w| w[0].1 > w[1].0) {
        return withheld;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in &ranges {
        out.push_str(&text[at..*start]);
        out.push('"');
        out.push_str(PLACEHOLDER);
        out.push('"');
        // A block scalar's extent ends with its last line's newline: keep one.
        if text[*start..*end].ends_with('\n') {
            out.push('\n');
        }
        at = *end;
    }
    out.push_str(&text[at..]);
    // Proof: every sensitive value now reads as the placeholder, and the file parses.
    let Ok((value, _)) = yaml::parse(file, &out) else {
        return withheld;
    };
    let proved = defaults
        .iter()
        .chain(props)
        .all(|p| value.pointer(p) == Some(&Value::String(PLACEHOLDER.to_owned())));
    if proved {
        clean(out, !props.is_empty())
    } else {
        withheld
    }
}

/// The byte index just past the YAML value that starts at byte `start`; `None` when the
/// value's shape is not one this scanner knows (the caller then withholds the file).
fn extent(text: &str, start: usize) -> Option<usize> {
    let rest = &text[start..];
    let bytes = rest.as_bytes();
    match bytes.first()? {
        b'"' => {
            let mut i = 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(start + i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        b'\'' => {
            let mut i = 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return Some(start + i + 1);
                }
                i += 1;
            }
            None
        }
        b'|' | b'>' => {
            // The indicator line, then every line that is blank or indented deeper than
            // the line the value's key stands on.
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let key_indent = indent(&text[line_start..]);
            let first_end = rest.find('\n').map_or(text.len(), |i| start + i + 1);
            let mut end = first_end;
            for line in text[first_end..].split_inclusive('\n') {
                if line.trim().is_empty() || indent(line) > key_indent {
                    end += line.len();
                } else {
                    break;
                }
            }
            Some(end)
        }
        b'{' | b'[' => {
            // A flow collection: to the matching bracket, quotes respected.
            let mut depth = 0usize;
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(start + i + 1);
                        }
                    }
                    b'"' | b'\'' => i = extent(text, start + i)? - start - 1,
                    _ => {}
                }
                i += 1;
            }
            None
        }
        // A plain scalar on one line: up to a comment, or a flow indicator when it sits
        // in a flow collection. A plain scalar continued on the next line is not
        // recognised: the proof after replacing catches it.
        _ => {
            let line = rest.split('\n').next().unwrap_or("");
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let in_flow = text[line_start..start].contains(['{', '[']);
            let mut end = line.len();
            if let Some(c) = line.find(" #") {
                end = end.min(c);
            }
            if in_flow && let Some(c) = line.find([',', '}', ']']) {
                end = end.min(c);
            }
            Some(start + line[..end].trim_end().len())
        }
    }
}

/// The parser places a block scalar (`|`, `>-`, …) at its first content line: where its
/// indicator stands, if the value at `start` is one.
fn block_indicator(text: &str, start: usize) -> Option<usize> {
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    if !text[line_start..start].trim().is_empty() {
        return None;
    }
    // The nearest earlier line with content ends with the indicator (and maybe a comment).
    let mut end = line_start.checked_sub(1)?;
    loop {
        let from = text[..end].rfind('\n').map_or(0, |i| i + 1);
        let line = &text[from..end];
        let content = line.split(" #").next().unwrap_or("").trim_end();
        if content.trim().is_empty() {
            end = from.checked_sub(1)?;
            continue;
        }
        let token = content.rsplit(' ').next().unwrap_or("");
        let is_indicator = token.starts_with(['|', '>'])
            && token[1..]
                .chars()
                .all(|c| c == '-' || c == '+' || c.is_ascii_digit());
        return is_indicator.then(|| from + content.len() - token.len());
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, vars: &[&str], props: &[(&str, &[&str])]) -> Scrubbed {
        let (doc, _) = yaml::parse(Path::new("t.yaml"), text).expect("parse");
        let vars: BTreeSet<String> = vars.iter().map(|v| v.to_string()).collect();
        let lookup = |id: &str| {
            props
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, f)| f.iter().map(|s| (s.to_string(), true)).collect())
                .unwrap_or_default()
        };
        let (d, p) = sensitive_pointers(&doc, &vars, &lookup);
        scrub(Path::new("t.yaml"), text, &d, &p)
    }

    #[test]
    fn every_yaml_spelling_of_a_secret_is_cut_out() {
        let cases = [
            "vars:\n  token: {sensitive: true, default: hunter2}\n",
            "vars:\n  token:\n    sensitive: true\n    default: \"hun\\u0074er2\"\n",
            "vars:\n  token:\n    sensitive: true\n    default: 'hun''ter2'\n",
            "vars:\n  token:\n    sensitive: true\n    default: |\n      hunter2\n      more hunter2\n    description: x\n",
            "vars:\n  token:\n    sensitive: true\n    default: >-\n      hun\n      ter2\n",
            "vars:\n  token:\n    sensitive: true\n    default: hunter2 # the secret\n",
            "vars:\n  token:\n    sensitive: true\n    default: [hunter2, \"x,]\"]\n",
            "vars:\n  token:\n    sensitive: true\n    default: \"hunter2\\\"\\\\\"\n",
        ];
        for text in cases {
            let s = run(text, &["token"], &[]);
            assert!(!s.withheld, "{text}: {}", s.text);
            assert!(
                !s.text.contains("hunter2") && !s.text.contains("hun"),
                "{text}: {}",
                s.text
            );
            assert!(s.text.contains("sensitive: true"), "{}", s.text);
            assert!(!s.literal_cut);
        }
    }

    #[test]
    fn literal_sensitive_properties_are_cut_and_marked() {
        let text = "resources:\n  - id: a\n    type: file.file\n    sensitive: [content]\n    properties: {path: ./x, content: \"pa\\nss\"}\n  - id: b\n    type: file.file\n    properties:\n      content: |\n        visible\n";
        let s = run(text, &[], &[("a", &["content"])]);
        assert!(s.literal_cut && !s.withheld);
        assert!(!s.text.contains("pa\\nss"), "{}", s.text);
        assert!(
            s.text.contains("visible") && s.text.contains("path: ./x"),
            "{}",
            s.text
        );
    }

    #[test]
    fn a_declared_secret_mixed_with_a_reference_is_cut_a_variable_alone_is_not() {
        let text = "resources:\n  - id: a\n    sensitive: [dsn, token]\n    properties: {dsn: \"pass=hunter2 host=${var.h}\", token: \"${var.t}\", path: x}\n";
        let s = run(text, &[], &[("a", &["dsn", "token"])]);
        assert!(!s.text.contains("hunter2") && s.literal_cut, "{}", s.text);
        assert!(s.text.contains("${var.t}"), "{}", s.text);
        // Sensitive only through a sensitive variable: the text around it stays.
        let text = text.replace("${var.h}", "${var.pw}");
        let (doc, _) = yaml::parse(Path::new("t.yaml"), &text).expect("parse");
        let lookup = |_: &str| vec![("dsn".to_owned(), false)];
        let vars = BTreeSet::from(["pw".to_owned()]);
        let (_, p) = sensitive_pointers(&doc, &vars, &lookup);
        assert!(p.is_empty(), "{p:?}");
        let (_, p) = sensitive_pointers(&doc, &BTreeSet::new(), &lookup);
        assert_eq!(p.len(), 1, "sensitive by schema: cut");
    }

    #[test]
    fn a_value_the_scanner_cannot_measure_withholds_the_file() {
        // A plain scalar continued on the next line.
        let text = "vars:\n  token:\n    sensitive: true\n    default: hunter2\n      continued\n";
        let s = run(text, &["token"], &[]);
        assert!(s.withheld, "{}", s.text);
        assert!(!s.text.contains("hunter2"));
        assert!(!s.text.contains("continued"));
    }
}
