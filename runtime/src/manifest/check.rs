//! Validation that needs the providers' descriptions: unknown providers and kinds, JSON
//! Schema violations, relative paths resolved against the manifest, and paths outside
//! every fs grant. Pure: takes descriptions, not providers, and calls nothing.

use super::{Manifest, ResourceDecl, load::absolute};
use crate::diag::Diagnostics;
use crate::provider::{KindInfo, ProviderInfo};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Check every resource against its provider's description, resolving relative path
/// properties in place. `described` holds the providers that loaded; a declared provider
/// missing from it failed to load (already reported), so its resources are not checked
/// further. Returns the problems and the ids of the resources that passed every check
/// (those a provider's own `validate` may then look at).
pub fn check(
    manifest: &mut Manifest,
    described: &BTreeMap<String, &ProviderInfo>,
) -> (Diagnostics, BTreeSet<String>) {
    let mut diags = Diagnostics::new();
    let mut passed = BTreeSet::new();
    let mut validators: BTreeMap<(String, String), Option<jsonschema::Validator>> = BTreeMap::new();
    let declared: BTreeSet<String> = manifest.providers.keys().cloned().collect();
    for r in &mut manifest.resources {
        if !declared.contains(&r.provider) {
            let known: Vec<_> = declared.iter().map(String::as_str).collect();
            diags.error(
                Some(r.spans_type_location()),
                format!(
                    "resource `{}` uses provider `{}`, which is not declared under `providers` (declared: {})",
                    r.id,
                    r.provider,
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            );
            continue;
        }
        let Some(info) = described.get(&r.provider) else {
            continue;
        };
        let Some(kind) = info.kinds.get(&r.kind) else {
            let kinds: Vec<_> = info
                .kinds
                .keys()
                .map(|k| format!("{}.{k}", r.provider))
                .collect();
            diags.error(
                Some(r.spans_type_location()),
                format!(
                    "resource `{}`: provider `{}` has no kind `{}` (it has: {})",
                    r.id,
                    r.provider,
                    r.kind,
                    kinds.join(", ")
                ),
            );
            continue;
        };
        let errors_before = diags.len();
        check_path_characters(r, kind, &mut diags);
        resolve_paths(r, kind);
        let validator = validators
            .entry((r.provider.clone(), r.kind.clone()))
            .or_insert_with(|| crate::provider::compile_schema(&kind.schema).ok());
        match validator {
            Some(v) => {
                // Values built from references are checked by the provider once known.
                let referencing = crate::manifest::refs::Referencing::of(&r.properties);
                for e in v.iter_errors(&r.properties) {
                    let pointer = e.instance_path().as_str().to_owned();
                    if referencing.covers(&pointer) {
                        continue;
                    }
                    let mut message = format!(
                        "resource `{}` ({}): {}: {e}",
                        r.id,
                        r.type_name,
                        field_name(&pointer)
                    );
                    if let jsonschema::error::ValidationErrorKind::Type { .. } = e.kind()
                        && e.instance().is_number()
                    {
                        message.push_str(" (quote the value to keep it a string, e.g. \"0644\")");
                    }
                    diags.error(Some(r.property_location(&pointer)), message);
                }
            }
            None => diags.error(
                Some(r.location.clone()),
                format!(
                    "provider `{}` describes kind `{}` with an invalid JSON Schema",
                    r.provider, r.kind
                ),
            ),
        }
        check_read_only(r, kind, &mut diags);
        check_grants(r, kind, manifest.providers.get(&r.provider), &mut diags);
        if diags.len() == errors_before {
            passed.insert(r.id.clone());
        }
    }
    (diags, passed)
}

fn field_name(pointer: &str) -> String {
    if pointer.is_empty() {
        "properties".to_owned()
    } else {
        format!("property `{pointer}`")
    }
}

/// The fields other resources may reference: the kind's schema properties.
pub fn referable_fields(kind: &KindInfo) -> BTreeSet<String> {
    kind.schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The file-system path a resource manages: its identity, when that is a path property
/// known before apply (a path built from a reference is not). Other path properties
/// (a working directory, a guard's marker file) are resolved but not managed.
pub fn managed_paths(r: &ResourceDecl, kind: &KindInfo) -> Vec<std::path::PathBuf> {
    kind.path_properties
        .iter()
        .filter(|p| **p == kind.identity)
        .filter_map(|p| r.properties.get(p.as_str()).and_then(Value::as_str))
        .filter(|p| !p.contains("${resources."))
        .map(std::path::PathBuf::from)
        .collect()
}

/// A control character (NUL above all) in a path is invisible in a terminal and fails
/// later with a garbled message, or names another file than the operator sees: refuse it
/// here, rendered escaped.
fn check_path_characters(r: &ResourceDecl, kind: &KindInfo, diags: &mut Diagnostics) {
    for prop in &kind.path_properties {
        if let Some(Value::String(p)) = r.properties.get(prop.as_str())
            && let Some(problem) = super::control_characters(p)
        {
            let pointer = format!("/{prop}");
            diags.error(
                Some(r.property_location(&pointer)),
                format!(
                    "resource `{}` ({}): property `{pointer}`: {problem}",
                    r.id, r.type_name
                ),
            );
        }
    }
}

/// Relative paths in path properties become absolute, relative to the manifest's
/// directory — except a path property named `source`, a file shipped with the manifest
/// (`file.file`'s content), which is relative to the file that declares it (inside a
/// module, the module's directory). A path that starts with a reference is left alone:
/// the referenced value is absolute.
fn resolve_paths(r: &mut ResourceDecl, kind: &KindInfo) {
    for prop in &kind.path_properties {
        let base = match prop.as_str() {
            "source" => &r.declared_in,
            _ => &r.base_dir,
        };
        if let Some(Value::String(p)) = r.properties.get_mut(prop.as_str())
            && !p.is_empty()
            && !p.starts_with("${resources.")
        {
            *p = absolute(base, Path::new(p.as_str()))
                .to_string_lossy()
                .into_owned();
        }
    }
}

/// Fields the schema marks `readOnly` are observed, not desired: they may be referenced
/// but not set.
fn check_read_only(r: &ResourceDecl, kind: &KindInfo, diags: &mut Diagnostics) {
    let Some(props) = kind.schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, schema) in props {
        if schema.get("readOnly") == Some(&Value::Bool(true)) && r.properties.get(name).is_some() {
            diags.error(
                Some(r.property_location(&format!("/{name}"))),
                format!(
                    "resource `{}` ({}): `{name}` is computed by the provider and cannot be set; reference it as ${{resources.{}.{name}}}",
                    r.id, r.type_name, r.id
                ),
            );
        }
    }
}

/// A path property outside every fs grant can never work: say so before running.
fn check_grants(
    r: &ResourceDecl,
    kind: &KindInfo,
    decl: Option<&super::ProviderDecl>,
    diags: &mut Diagnostics,
) {
    let Some(decl) = decl else { return };
    for prop in &kind.path_properties {
        let Some(p) = r.properties.get(prop.as_str()).and_then(Value::as_str) else {
            continue;
        };
        if p.contains("${resources.") {
            // Known only once resolved; the sandbox still confines it.
            continue;
        }
        let path = Path::new(p);
        if decl.grants.fs.iter().any(|g| path.starts_with(&g.path)) {
            continue;
        }
        let granted: Vec<String> = decl
            .grants
            .fs
            .iter()
            .map(|g| format!("{} ({})", g.path.display(), g.access))
            .collect();
        diags.error(
            Some(r.property_location(&format!("/{prop}"))),
            format!(
                "resource `{}`: `{prop}` {p} is outside every fs grant of provider `{}` (granted: {}); add an fs grant for it under providers.{}.grants",
                r.id,
                r.provider,
                if granted.is_empty() { "nothing".to_owned() } else { granted.join(", ") },
                r.provider
            ),
        );
    }
}

impl ResourceDecl {
    /// Where the resource's `type` was written (falls back to the resource).
    fn spans_type_location(&self) -> crate::diag::Location {
        self.type_location
            .clone()
            .unwrap_or_else(|| self.location.clone())
    }
}
