//! {{name}}: a Tenet provider. Kind `note`: a text file at `path` holding `text`.
//!
//! Build: `tenet provider build` (cargo, wasm32-wasip2). Test natively: `cargo test`;
//! against the provider contract: `tenet provider test {{name}}.wasm`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenet_sdk::{Error, KindInfo, Provider, ProviderInfo, from_value, to_value};

/// The properties of a `note`, as the manifest declares them and `read` observes them.
/// The kind's JSON Schema is generated from this type (doc comments are descriptions).
#[derive(Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Note {
    /// The note's file.
    #[schemars(length(min = 1))]
    path: String,
    /// What the note says.
    text: String,
}

struct NoteProvider;

impl Provider for NoteProvider {
    fn describe() -> ProviderInfo {
        ProviderInfo::new("{{name}}", env!("CARGO_PKG_VERSION"), "notes in text files").kind(
            KindInfo::of::<Note>("note", "a text file holding a note", "path")
                .path_properties(&["path"]),
        )
    }

    fn read(_kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        let want: Note = from_value(properties)?;
        match std::fs::read_to_string(&want.path) {
            Ok(text) => Ok(Some(to_value(&Note { path: want.path, text })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Internal(format!("cannot read {}: {e}", want.path))),
        }
    }

    fn apply(kind: &str, desired: &Value, _current: Option<&Value>) -> Result<Value, Error> {
        let note: Note = from_value(desired)?;
        std::fs::write(&note.path, &note.text)
            .map_err(|e| Error::CapabilityDenied(format!("cannot write {}: {e}", note.path)))?;
        Self::read(kind, desired)?.ok_or_else(|| Error::Internal("the note vanished".into()))
    }

    fn delete(_kind: &str, current: &Value) -> Result<(), Error> {
        let note: Note = from_value(current)?;
        match std::fs::remove_file(&note.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::CapabilityDenied(format!("cannot remove {}: {e}", note.path)))
            }
            _ => Ok(()),
        }
    }
}

tenet_sdk::export_provider!(NoteProvider);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_note_is_written_read_back_and_removed() {
        let dir = std::env::temp_dir().join(format!("{{name}}-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("hello.txt").display().to_string();
        let desired = json!({"path": path, "text": "hello"});
        assert_eq!(NoteProvider::read("note", &desired).expect("read"), None);
        let state = NoteProvider::apply("note", &desired, None).expect("apply");
        assert_eq!(state, desired);
        let diff = NoteProvider::diff("note", &desired, Some(&state)).expect("diff");
        assert!(diff.changes.is_empty());
        NoteProvider::delete("note", &state).expect("delete");
        assert_eq!(NoteProvider::read("note", &desired).expect("read"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
