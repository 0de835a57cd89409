//! Variables: `vars:` declarations with defaults, values files and `--var k=v`, and the
//! evaluation of `${ … }` expressions over them in strings ([`super::expr`]). One
//! manifest serves dev, staging and prod.
//!
//! A string that is exactly `${var.NAME}` (or any one expression) takes the value with
//! its type (number, bool, list…); inside a longer string the value is formatted as
//! text. `$${` writes a literal `${`.

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

/// Evaluate the `${ … }` expressions ([`super::expr`]) in every string of `value`;
/// `pointer` is where `value` sits in the document described by `spans`. The pointers
/// of strings whose expressions read a variable `secret` names go to `derived`: their
/// values are sensitive whatever the expression did to the secret.
pub fn interpolate(
    value: &mut Value,
    pointer: &str,
    spans: &Spans,
    (ev, scope): (&super::expr::Evaluator, &super::expr::Scope),
    secret: &dyn Fn(&str) -> bool,
    derived: &mut Vec<String>,
    diags: &mut Diagnostics,
) {
    match value {
        Value::String(s) => match ev.eval_in(s, scope) {
            Ok(None) => {}
            Ok(Some(e)) => {
                if e.vars.iter().any(|v| secret(v)) {
                    derived.push(pointer.to_owned());
                }
                *value = e.value;
            }
            Err(problems) => {
                for msg in problems {
                    diags.error(Some(spans.value(pointer)), msg);
                }
            }
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let child = format!("{pointer}/{i}");
                interpolate(item, &child, spans, (ev, scope), secret, derived, diags);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let child = format!("{pointer}/{}", super::yaml::escape(k));
                interpolate(item, &child, spans, (ev, scope), secret, derived, diags);
            }
        }
        _ => {}
    }
}
