//! Layered data, Hiera-style: `data:` names a hierarchy of YAML files, most specific
//! first, whose paths may use `${ var.… }` and `${ facts.… }`
//! (`nodes/${ facts.hostname }.yaml`, `env/${ var.env }.yaml`, `common.yaml`), and
//! `${ data.nginx.worker_processes }` finds the value in the most specific file that has
//! it. With `merge: deep` (the default) maps are merged across the layers, the more
//! specific layer winning at each key (lists are not merged: the winner's list is
//! taken); with `merge: first` each top-level key comes whole from the first layer that
//! has it. A layer whose file does not exist is skipped (a node without its own file is
//! normal); one that does not parse is an error at its own line and column.
//! `tenet data explain KEY` shows each layer, whether it has the key, and which won.

use super::yaml::{self, Spans};
use crate::diag::{Diagnostics, Location};
use serde_json::{Map, Value};
use std::path::Path;

/// Most layers in a hierarchy.
pub const MAX_LAYERS: usize = 64;
/// Largest data file read.
pub const MAX_DATA_BYTES: u64 = 4 * 1024 * 1024;

/// How layers combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Merge {
    /// Maps merge, the more specific layer winning at each key.
    #[default]
    Deep,
    /// Each top-level key comes whole from the first layer that has it.
    First,
}

/// One layer, as evaluated for this run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layer {
    /// The path as the hierarchy names it, expressions evaluated.
    pub path: String,
    /// Its content; `None` when the file does not exist.
    pub value: Option<Value>,
}

/// The evaluated hierarchy and the merged data.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Data {
    pub merge: Merge,
    pub layers: Vec<Layer>,
    /// What `${ data.… }` sees.
    pub value: Value,
    /// The files read (path → text), for the manifest's digest.
    #[serde(skip)]
    pub texts: std::collections::BTreeMap<String, String>,
}

/// Read the `data:` declaration at `pointer` (`data: [paths…]`, or
/// `data: {hierarchy: [paths…], merge: deep|first}`), with its paths already evaluated,
/// and load the layers from `base`. Problems go to `diags` at their place.
pub fn load(
    decl: &Value,
    pointer: &str,
    spans: &Spans,
    base: &Path,
    diags: &mut Diagnostics,
) -> Data {
    let (paths, merge) = match decl {
        Value::Array(items) => (Some((items, pointer.to_owned())), Merge::Deep),
        Value::Object(m) => {
            for k in m.keys() {
                if !["hierarchy", "merge"].contains(&k.as_str()) {
                    diags.error(
                        Some(spans.key(&format!("{pointer}/{k}"))),
                        format!("unknown field `{k}` in `data` (expected `hierarchy`, `merge`)"),
                    );
                }
            }
            let merge = match m.get("merge").and_then(Value::as_str) {
                None | Some("deep") => Merge::Deep,
                Some("first") => Merge::First,
                Some(other) => {
                    diags.error(
                        Some(spans.value(&format!("{pointer}/merge"))),
                        format!("`merge` of `data` must be `deep` or `first`, found `{other}`"),
                    );
                    Merge::Deep
                }
            };
            let items = m.get("hierarchy").and_then(Value::as_array);
            if items.is_none() {
                diags.error(
                    Some(spans.value(pointer)),
                    "`data` needs a `hierarchy`: a list of YAML files, most specific first",
                );
            }
            (items.map(|i| (i, format!("{pointer}/hierarchy"))), merge)
        }
        _ => {
            diags.error(
                Some(spans.value(pointer)),
                "`data` must be a list of YAML files (most specific first), or {hierarchy: […], merge: deep|first}",
            );
            (None, Merge::Deep)
        }
    };
    let mut data = Data {
        merge,
        ..Data::default()
    };
    let Some((items, at)) = paths else {
        data.value = Value::Object(Map::new());
        return data;
    };
    if items.len() > MAX_LAYERS {
        diags.error(
            Some(spans.value(&at)),
            format!(
                "{} data layers, over the limit of {MAX_LAYERS}",
                items.len()
            ),
        );
    }
    let root = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    for (i, item) in items.iter().take(MAX_LAYERS).enumerate() {
        let place = spans.value(&format!("{at}/{i}"));
        let Some(path) = item.as_str() else {
            diags.error(Some(place), "a data layer is a path to a YAML file");
            continue;
        };
        match read_layer(&root, path) {
            Ok(None) => data.layers.push(Layer {
                path: path.to_owned(),
                value: None,
            }),
            Ok(Some((file, text))) => match yaml::parse(&file, &text) {
                Ok((value @ Value::Object(_), _)) => {
                    data.texts.insert(path.to_owned(), text);
                    data.layers.push(Layer {
                        path: path.to_owned(),
                        value: Some(value),
                    });
                }
                Ok(_) => diags.error(
                    Some(Location::new(&file, 1, 1)),
                    format!("data layer {path} must be a mapping of keys to values"),
                ),
                Err(e) => diags.error(
                    Some(e.location),
                    format!("data layer {path}: {}", e.message),
                ),
            },
            Err(e) => diags.error(Some(place), format!("data layer `{path}`: {e}")),
        }
    }
    data.value = merged(&data.layers, merge);
    data
}

/// The layer file `path` under `root`, or `None` when it does not exist.
fn read_layer(root: &Path, path: &str) -> Result<Option<(std::path::PathBuf, String)>, String> {
    let rel = Path::new(path);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(
            "a data layer is named by a path relative to the manifest's directory, without `..`"
                .into(),
        );
    }
    let file = root.join(rel);
    let real = match file.canonicalize() {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if !real.starts_with(root) {
        return Err(format!(
            "it leads out of the manifest's directory (to {})",
            real.display()
        ));
    }
    let meta = std::fs::metadata(&real).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let size = meta.len();
    if size > MAX_DATA_BYTES {
        return Err(format!("{size} bytes, over the limit of {MAX_DATA_BYTES}"));
    }
    std::fs::read_to_string(&real)
        .map(|t| Some((file, t)))
        .map_err(|e| e.to_string())
}

/// The layers combined, most specific first.
pub fn merged(layers: &[Layer], merge: Merge) -> Value {
    let mut out = Map::new();
    // From the least specific up, so more specific layers overwrite.
    for layer in layers.iter().rev() {
        let Some(Value::Object(m)) = &layer.value else {
            continue;
        };
        for (k, v) in m {
            match (merge, out.get_mut(k)) {
                (Merge::Deep, Some(existing)) => deep_merge(existing, v),
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Value::Object(out)
}

fn deep_merge(into: &mut Value, over: &Value) {
    match (into, over) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// The value at dotted `key` (`nginx.worker_processes`) of `v`.
fn at<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(v, |v, k| v.get(k))
}

/// `tenet data explain KEY`: one line per layer — missing, without the key, or its value
/// there — and the value the manifest sees.
pub fn explain(data: &Data, key: &str) -> Vec<String> {
    let merge = match data.merge {
        Merge::Deep => "deep",
        Merge::First => "first",
    };
    let mut out = vec![format!("data.{key} (merge: {merge}):")];
    let winner = data
        .layers
        .iter()
        .position(|l| l.value.as_ref().and_then(|v| at(v, key)).is_some());
    for (i, layer) in data.layers.iter().enumerate() {
        let line = match &layer.value {
            None => format!("  {}: no such file", layer.path),
            Some(v) => match at(v, key) {
                None => format!("  {}: no `{key}`", layer.path),
                Some(found) => {
                    let mark = if Some(i) == winner {
                        "  <- most specific"
                    } else {
                        ""
                    };
                    format!("  {}: {found}{mark}", layer.path)
                }
            },
        };
        out.push(line);
    }
    out.push(match at(&data.value, key) {
        Some(v) => format!("= {v}"),
        None => format!("= (undefined: no layer has `{key}`)"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(path: &str, v: Option<Value>) -> Layer {
        Layer {
            path: path.into(),
            value: v,
        }
    }

    #[test]
    fn a_layer_cannot_leave_the_manifests_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().canonicalize().expect("real");
        std::fs::write(root.join("ok.yaml"), "a: 1\n").expect("ok");
        std::os::unix::fs::symlink("/etc/passwd", root.join("out.yaml")).expect("link");
        assert!(read_layer(&root, "ok.yaml").expect("inside").is_some());
        assert_eq!(read_layer(&root, "missing.yaml").expect("skipped"), None);
        for attack in ["../../etc/passwd", "/etc/passwd", "a/../../x.yaml", "."] {
            let e = read_layer(&root, attack).expect_err(attack);
            assert!(
                e.contains("relative to the manifest's directory"),
                "{attack}: {e}"
            );
        }
        let e = read_layer(&root, "out.yaml").expect_err("symlink out");
        assert!(e.contains("leads out of the manifest's directory"), "{e}");
        std::fs::create_dir(root.join("dir.yaml")).expect("dir");
        let e = read_layer(&root, "dir.yaml").expect_err("not a file");
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn the_most_specific_layer_wins_at_each_key() {
        let layers = vec![
            layer("nodes/web1.yaml", Some(json!({"nginx": {"workers": 8}}))),
            layer("nodes/missing.yaml", None),
            layer(
                "env/prod.yaml",
                Some(json!({"nginx": {"port": 443}, "tier": "prod"})),
            ),
            layer(
                "common.yaml",
                Some(json!({"nginx": {"workers": 2, "port": 80, "mods": ["a"]}, "tier": "base"})),
            ),
        ];
        let deep = merged(&layers, Merge::Deep);
        assert_eq!(
            deep,
            json!({"nginx": {"workers": 8, "port": 443, "mods": ["a"]}, "tier": "prod"})
        );
        let first = merged(&layers, Merge::First);
        assert_eq!(first["nginx"], json!({"workers": 8}));
        let data = Data {
            merge: Merge::Deep,
            layers,
            value: deep,
            texts: Default::default(),
        };
        let lines = explain(&data, "nginx.workers");
        assert_eq!(
            lines,
            [
                "data.nginx.workers (merge: deep):",
                "  nodes/web1.yaml: 8  <- most specific",
                "  nodes/missing.yaml: no such file",
                "  env/prod.yaml: no `nginx.workers`",
                "  common.yaml: 2",
                "= 8",
            ]
        );
    }
}
