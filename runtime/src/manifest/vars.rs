//! Variables: `vars:` declarations with defaults, values files and `--var k=v`, and the
//! `${var.NAME}` substitution in strings. One manifest serves dev, staging and prod.
//!
//! A string that is exactly `${var.NAME}` takes the variable's value with its type
//! (number, bool, list…); inside a longer string the value is formatted as text.
//! `$${` writes a literal `${`.

use super::yaml::Spans;
use crate::diag::{Diagnostics, Location};
use serde_json::Value;
use std::collections::BTreeMap;

/// A declared variable.
#[derive(Debug, Clone)]
pub struct VarDecl {
    pub default: Option<Value>,
    /// `sensitive: true`: its value is never shown or stored in clear, and so are the
    /// properties built from it.
    pub sensitive: bool,
    pub location: Location,
}

/// Read a `vars:` mapping. Shorthand `name: value` declares a default; the long form is
/// `name: {default: value, description: text, sensitive: true}`.
pub fn declarations(
    vars: &Value,
    spans: &Spans,
    out: &mut BTreeMap<String, VarDecl>,
    diags: &mut Diagnostics,
) {
    let Some(map) = vars.as_object() else {
        diags.error(
            Some(spans.value("/vars")),
            "`vars` must be a mapping of variable names to defaults",
        );
        return;
    };
    for (name, v) in map {
        let pointer = format!("/vars/{name}");
        let location = spans.key(&pointer);
        if !valid_name(name) {
            diags.error(
                Some(location.clone()),
                format!("invalid variable name `{name}`: use letters, digits, `_` and `-`"),
            );
        }
        let mut sensitive = false;
        let default = match v.as_object() {
            Some(decl)
                if decl.contains_key("default")
                    || decl.contains_key("description")
                    || decl.contains_key("sensitive") =>
            {
                for key in decl.keys() {
                    if !["default", "description", "sensitive"].contains(&key.as_str()) {
                        diags.error(
                            Some(spans.key(&format!("{pointer}/{key}"))),
                            format!(
                                "unknown field `{key}` in variable `{name}` (expected `default`, `description`, `sensitive`)"
                            ),
                        );
                    }
                }
                match decl.get("sensitive") {
                    None | Some(Value::Null) => {}
                    Some(Value::Bool(b)) => sensitive = *b,
                    Some(_) => diags.error(
                        Some(spans.value(&format!("{pointer}/sensitive"))),
                        format!("`sensitive` of variable `{name}` must be true or false"),
                    ),
                }
                decl.get("default").cloned()
            }
            _ => Some(v.clone()),
        };
        if let Some(default) = &default {
            let at = if v.as_object().is_some_and(|d| d.contains_key("default")) {
                format!("{pointer}/default")
            } else {
                pointer.clone()
            };
            refuse_placeholders(
                default,
                &at,
                spans,
                &format!("the default of variable `{name}`"),
                diags,
            );
        }
        if let Some(prev) = out.get(name) {
            diags.error(
                Some(location.clone()),
                format!(
                    "variable `{name}` is declared twice (first at {})",
                    prev.location
                ),
            );
            continue;
        }
        out.insert(
            name.clone(),
            VarDecl {
                default,
                sensitive,
                location,
            },
        );
    }
}

/// Values are not interpolated (Terraform refuses the same): a `${…}` in a default or a
/// values file would be written into files literally. Refuse it where it stands.
pub fn refuse_placeholders(
    value: &Value,
    pointer: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) {
    match value {
        Value::String(s) if s.contains("${") => diags.error(
            Some(spans.value(pointer)),
            format!(
                "{what} contains `${{`: values are not interpolated, so `{}` would be written literally; set the value with --var or a values file, or build the string where it is used",
                s.escape_debug()
            ),
        ),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                refuse_placeholders(item, &format!("{pointer}/{i}"), spans, what, diags);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let child = format!("{pointer}/{}", super::yaml::escape(k));
                refuse_placeholders(item, &child, spans, what, diags);
            }
        }
        _ => {}
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Replace `${var.NAME}` in every string of `value`; `pointer` is where `value` sits in
/// the document described by `spans`.
pub fn interpolate(
    value: &mut Value,
    pointer: &str,
    spans: &Spans,
    vars: &BTreeMap<String, Value>,
    diags: &mut Diagnostics,
) {
    match value {
        Value::String(s) => {
            if !s.contains("${") {
                return;
            }
            match substitute(s, vars) {
                Ok(v) => *value = v,
                Err(msg) => diags.error(Some(spans.value(pointer)), msg),
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{pointer}/{i}"), spans, vars, diags);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let child = format!("{pointer}/{}", super::yaml::escape(k));
                interpolate(item, &child, spans, vars, diags);
            }
        }
        _ => {}
    }
}

/// Substitute one string. Errors name every unknown variable in it.
fn substitute(text: &str, vars: &BTreeMap<String, Value>) -> Result<Value, String> {
    let mut out = String::new();
    let mut rest = text;
    let mut problems = Vec::new();
    let mut whole: Option<Value> = None;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            // An escaped resource reference stays escaped for the engine to unescape.
            out.push_str(if after.trim_start().starts_with("resources.") {
                "$${"
            } else {
                "${"
            });
            rest = after;
            continue;
        }
        let Some(body) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let Some(end) = body.find('}') else {
            problems.push(format!("unterminated `${{` in `{text}`"));
            break;
        };
        let expr = body[..end].trim();
        rest = &body[end + 1..];
        match expr.strip_prefix("var.") {
            Some(name) => match vars.get(name) {
                Some(v) => {
                    if text.trim() == format!("${{{}}}", &body[..end]) {
                        whole = Some(v.clone());
                    }
                    match v {
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    }
                }
                None => {
                    let known: Vec<_> = vars.keys().map(String::as_str).collect();
                    problems.push(format!(
                        "unknown variable `{name}` (declared: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            },
            // Resource references are resolved later, by the engine.
            None if expr.starts_with("resources.") => {
                out.push_str(&format!("${{{expr}}}"));
            }
            None => problems.push(format!(
                "unsupported expression `${{{expr}}}`: use `${{var.NAME}}` or `${{resources.ID.FIELD}}`"
            )),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    out.push_str(rest);
    Ok(whole.unwrap_or(Value::String(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("env".to_owned(), json!("prod")),
            ("port".to_owned(), json!(8080)),
        ])
    }

    #[test]
    fn substitutes_typed_and_in_text() {
        assert_eq!(substitute("${var.port}", &vars()), Ok(json!(8080)));
        assert_eq!(
            substitute("/srv/${var.env}/${var.port}", &vars()),
            Ok(json!("/srv/prod/8080"))
        );
        assert_eq!(
            substitute("cost: $$${x}", &vars()),
            Ok(json!("cost: $${x}"))
        );
    }

    #[test]
    fn reports_every_unknown_variable() {
        let err = substitute("${var.a}-${var.b}", &vars()).expect_err("unknown");
        assert!(err.contains("`a`") && err.contains("`b`"), "{err}");
        assert!(err.contains("declared: env, port"), "{err}");
    }

    #[test]
    fn leaves_resource_references_and_rejects_other_expressions() {
        assert_eq!(
            substitute("${var.env}/${resources.x.path}", &vars()),
            Ok(json!("prod/${resources.x.path}"))
        );
        let err = substitute("${env.HOME}", &vars()).expect_err("unsupported");
        assert!(err.contains("unsupported expression"), "{err}");
    }
}
