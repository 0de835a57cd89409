//! References between resources: `${resources.<id>.<field>}` inside a property string.
//! A reference orders the referring resource after the referenced one, and takes the
//! field's value — from the referenced resource's desired properties when it sets the
//! field, otherwise from its observed state, which may be known only after apply.
//!
//! A string that is exactly one reference takes the value with its type; inside a longer
//! string the value is formatted as text. Resource ids may contain dots, so the field is
//! the last segment.

use serde_json::Value;

/// One reference found in a resource's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// JSON pointer of the property string that holds it.
    pub pointer: String,
    /// The referenced resource.
    pub target: String,
    /// The referenced field (a top-level property or state field).
    pub field: String,
}

const PREFIX: &str = "${resources.";

/// Every reference in `value`, in document order. Malformed ones (no field) are returned
/// with an empty `field`, for validation to report.
pub fn find(value: &Value) -> Vec<Reference> {
    let mut out = Vec::new();
    collect(value, String::new(), &mut out);
    out
}

fn collect(value: &Value, pointer: String, out: &mut Vec<Reference>) {
    match value {
        Value::String(s) => {
            for (target, field) in in_text(s) {
                out.push(Reference {
                    pointer: pointer.clone(),
                    target: target.to_owned(),
                    field: field.to_owned(),
                });
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect(v, format!("{pointer}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let key = super::yaml::escape(k);
                collect(v, format!("{pointer}/{key}"), out);
            }
        }
        _ => {}
    }
}

/// The properties of `value` whose values are built from references: problems a check
/// finds at or under them are about reference text, not about the value it will be.
#[derive(Debug, Clone, Default)]
pub struct Referencing(Vec<String>);

impl Referencing {
    pub fn of(value: &Value) -> Self {
        Referencing(find(value).into_iter().map(|r| r.pointer).collect())
    }

    /// Whether the JSON pointer `at` lies at or under a referencing property.
    pub fn covers(&self, at: &str) -> bool {
        self.0
            .iter()
            .any(|p| !p.is_empty() && at.starts_with(p.as_str()))
    }
}

/// Whether `text` holds a (non-escaped) reference.
pub fn has_reference(text: &str) -> bool {
    !in_text(text).is_empty()
}

/// (target, field) of every reference in one string.
fn in_text(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PREFIX) {
        // `$${` is an escaped literal, not a reference.
        let escaped = start > 0 && rest[..start].ends_with('$');
        let body = &rest[start + PREFIX.len()..];
        let Some(end) = body.find('}') else { break };
        if !escaped {
            let expr = &body[..end];
            match expr.rsplit_once('.') {
                Some((target, field)) => out.push((target, field)),
                None => out.push((expr, "")),
            }
        }
        rest = &body[end + 1..];
    }
    out
}

/// The outcome of resolving references in a property document.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub value: Value,
    /// Pointers of the properties whose value is known only after apply (left as the
    /// reference text in `value`).
    pub unknown: Vec<String>,
}

/// Replace every reference `lookup(target, field)` can answer. Properties with a
/// reference it cannot answer (`None`: known after apply) keep their text and are listed
/// in `unknown`.
pub fn resolve(value: &Value, lookup: &dyn Fn(&str, &str) -> Option<Value>) -> Resolved {
    let mut unknown = Vec::new();
    let value = resolve_in(value, String::new(), lookup, &mut unknown);
    Resolved { value, unknown }
}

fn resolve_in(
    value: &Value,
    pointer: String,
    lookup: &dyn Fn(&str, &str) -> Option<Value>,
    unknown: &mut Vec<String>,
) -> Value {
    match value {
        Value::String(s) if s.contains(PREFIX) => match substitute(s, lookup) {
            Some(v) => v,
            None => {
                unknown.push(pointer);
                value.clone()
            }
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| resolve_in(v, format!("{pointer}/{i}"), lookup, unknown))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = super::yaml::escape(k);
                    (
                        k.clone(),
                        resolve_in(v, format!("{pointer}/{key}"), lookup, unknown),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Substitute the references of one string; `None` when any is not known yet.
fn substitute(text: &str, lookup: &dyn Fn(&str, &str) -> Option<Value>) -> Option<Value> {
    let refs = in_text(text);
    if refs.is_empty() && !text.contains("$${resources.") {
        return Some(Value::String(text.to_owned()));
    }
    if let [(target, field)] = refs.as_slice()
        && text.trim() == format!("{PREFIX}{target}.{field}}}")
    {
        return lookup(target, field);
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(PREFIX) {
        let escaped = start > 0 && rest[..start].ends_with('$');
        let body = &rest[start + PREFIX.len()..];
        let end = body.find('}')?;
        if escaped {
            // `$${resources.…}` is the literal text `${resources.…}`.
            out.push_str(&rest[..start - 1]);
            out.push_str(&rest[start..start + PREFIX.len() + end + 1]);
        } else {
            out.push_str(&rest[..start]);
            let (target, field) = body[..end].rsplit_once('.')?;
            match lookup(target, field)? {
                Value::String(s) => out.push_str(&s),
                other => out.push_str(&other.to_string()),
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Some(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_references_with_their_pointers() {
        let v = json!({"a": "${resources.site.path}/index.html", "b": ["x", "${resources.my.app.port}"], "c": "$${resources.no.ref}"});
        let refs = find(&v);
        assert_eq!(
            refs,
            vec![
                Reference {
                    pointer: "/a".into(),
                    target: "site".into(),
                    field: "path".into()
                },
                Reference {
                    pointer: "/b/1".into(),
                    target: "my.app".into(),
                    field: "port".into()
                },
            ]
        );
    }

    #[test]
    fn resolves_known_values_and_lists_unknown_ones() {
        let v = json!({"path": "${resources.site.path}/index.html", "port": "${resources.db.port}", "sha": "${resources.f.content_sha256}"});
        let lookup = |t: &str, f: &str| match (t, f) {
            ("site", "path") => Some(json!("/srv")),
            ("db", "port") => Some(json!(5432)),
            _ => None,
        };
        let r = resolve(&v, &lookup);
        assert_eq!(r.value["path"], "/srv/index.html");
        assert_eq!(
            r.value["port"], 5432,
            "a whole-string reference keeps its type"
        );
        assert_eq!(r.value["sha"], "${resources.f.content_sha256}");
        assert_eq!(r.unknown, vec!["/sha".to_owned()]);
    }
}
