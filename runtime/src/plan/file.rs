//! Saved plans on disk (`tenet plan --out FILE`): JSON with a `format_version`. Reading
//! one tells a manifest path from a plan file, and a plan of another format from a
//! plan that is damaged, each with its own message.

use super::{FORMAT_VERSION, Plan};
use std::path::Path;

/// Why a file that looks like a saved plan cannot be read as one.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a manifest nor a saved plan")]
    NotJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} is a plan in format {found}; this Tenet reads format {FORMAT_VERSION}: run `tenet plan` again"
    )]
    Format { path: String, found: u64 },
    #[error("{path} is JSON but not a saved Tenet plan")]
    NotAPlan { path: String },
    #[error("{path} is not a valid saved plan")]
    Invalid {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The saved plan at `path`, or `None` when `path` is not a file holding a JSON object
/// (a manifest file or directory).
pub fn read(path: &Path) -> Result<Option<Plan>, PlanFileError> {
    if !path.is_file() {
        return Ok(None);
    }
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read {
        path: shown(),
        source,
    })?;
    if !text.trim_start().starts_with('{') {
        return Ok(None);
    }
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| PlanFileError::NotJson {
            path: shown(),
            source,
        })?;
    match raw
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(found) => {
            return Err(PlanFileError::Format {
                path: shown(),
                found,
            });
        }
        None => return Err(PlanFileError::NotAPlan { path: shown() }),
    }
    serde_json::from_value(raw)
        .map(Some)
        .map_err(|source| PlanFileError::Invalid {
            path: shown(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_manifests_plans_and_damaged_files_apart() {
        let dir = tempfile::tempdir().expect("tmp");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        assert!(read(dir.path()).expect("a directory").is_none());
        assert!(
            read(&write("m.yaml", "resources: []\n"))
                .expect("yaml")
                .is_none()
        );
        assert!(matches!(
            read(&write("old.plan", r#"{"format_version": 99}"#)),
            Err(PlanFileError::Format { found: 99, .. })
        ));
        assert!(matches!(
            read(&write("other.json", r#"{"name": "x"}"#)),
            Err(PlanFileError::NotAPlan { .. })
        ));
        assert!(matches!(
            read(&write("bad.plan", "{oops")),
            Err(PlanFileError::NotJson { .. })
        ));
        assert!(matches!(
            read(&write("short.plan", r#"{"format_version": 1}"#)),
            Err(PlanFileError::Invalid { .. })
        ));
    }
}
