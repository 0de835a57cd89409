//! Where a manifest's state lives and which backend holds it: `--state FILE` (or
//! `TENET_STATE`), else `.tenet/state.db` beside the manifest, in SQLite. A PostgreSQL
//! backend is chosen here too once it exists (`postgres://…`).

use super::sqlite::SqliteStore;
use super::{StateError, StateStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the state of a manifest is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// Given explicitly (`--state`); `None`: beside the manifest.
    pub explicit: Option<PathBuf>,
}

impl Location {
    /// The database for a manifest at `manifest` (a file or a directory).
    pub fn path_for(&self, manifest: &Path) -> PathBuf {
        super::path_for(manifest, self.explicit.as_deref())
    }

    /// Whether there is a state for `manifest` yet (commands that only read never
    /// create one).
    pub fn exists_for(&self, manifest: &Path) -> bool {
        self.path_for(manifest).exists()
    }

    /// Open (creating if needed) the state of `manifest`.
    pub fn open(&self, manifest: &Path) -> Result<Arc<dyn StateStore>, StateError> {
        Ok(Arc::new(SqliteStore::open(&self.path_for(manifest))?))
    }
}
