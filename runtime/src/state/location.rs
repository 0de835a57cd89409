//! Where a manifest's state lives and which backend holds it: `--state FILE` (or
//! `TENET_STATE`), else `.tenet/state.db` beside the manifest, in SQLite; or
//! `--state postgres://user@host/db?schema=NAME`, in PostgreSQL.

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{StateError, StateStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the state of a manifest is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// Given explicitly (`--state`: a file, or a PostgreSQL URL); `None`: beside the
    /// manifest.
    pub explicit: Option<PathBuf>,
}

impl Location {
    /// The PostgreSQL URL, when the state is kept there.
    pub fn url(&self) -> Option<&str> {
        self.explicit
            .as_deref()
            .and_then(Path::to_str)
            .filter(|s| super::postgres::is_url(s))
    }

    /// The database file for a manifest at `manifest` (a file or a directory); none
    /// when the state is in PostgreSQL.
    pub fn file_for(&self, manifest: &Path) -> Option<PathBuf> {
        match self.url() {
            Some(_) => None,
            None => Some(super::path_for(manifest, self.explicit.as_deref())),
        }
    }

    /// Where the state is, for messages (a URL without its password).
    pub fn describe(&self, manifest: &Path) -> String {
        match self.file_for(manifest) {
            Some(file) => file.display().to_string(),
            None => super::postgres::redact(self.url().unwrap_or_default()),
        }
    }

    /// A local file standing for the state, for what must be local (the agent's own
    /// lock): the database file, or `.tenet/postgres` beside the manifest.
    pub fn local_for(&self, manifest: &Path) -> PathBuf {
        self.file_for(manifest)
            .unwrap_or_else(|| crate::manifest::dir_of(manifest).join(".tenet/postgres"))
    }

    /// Whether there is a state for `manifest` yet (commands that only read never
    /// create one). A PostgreSQL state is taken to exist: its schema is created on
    /// first use, and reading an empty one finds nothing.
    pub fn exists_for(&self, manifest: &Path) -> bool {
        self.file_for(manifest).is_none_or(|f| f.exists())
    }

    /// Open (creating if needed) the state of `manifest`.
    pub fn open(&self, manifest: &Path) -> Result<Arc<dyn StateStore>, StateError> {
        match self.url() {
            Some(url) => Ok(Arc::new(PgStore::open(url)?)),
            None => Ok(Arc::new(SqliteStore::open(&super::path_for(
                manifest,
                self.explicit.as_deref(),
            ))?)),
        }
    }
}
