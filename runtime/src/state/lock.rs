//! The run lock as values that hold it: [`RunLock`] (exclusive, for a run that changes
//! the system and the state) and [`ReadLock`] (shared, for reading the system against the
//! state). Each releases its lock when dropped, whatever way the run ends.

use super::{Holder, StateError, StateStore};
use std::sync::Arc;
use std::time::Duration;

/// Holds the run lock until dropped.
pub struct RunLock {
    store: Arc<dyn StateStore>,
    me: Holder,
}

impl RunLock {
    /// Take the run lock of `store` for this process, waiting up to `timeout`.
    pub fn take(store: Arc<dyn StateStore>, timeout: Duration) -> Result<RunLock, StateError> {
        let me = Holder::me();
        store.lock(&me, timeout)?;
        Ok(RunLock { store, me })
    }

    /// The store the lock is held on: writes through it check the lock is still held.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Err(e) = self.store.unlock(&self.me) {
            tracing::warn!("cannot release the state lock: {e}");
        }
    }
}

/// Holds the state's shared lock until dropped: readers of the system against the
/// state (drift) never overlap a run changing it, and do not exclude each other.
pub struct ReadLock(Arc<dyn StateStore>);

impl ReadLock {
    pub fn take(store: Arc<dyn StateStore>, timeout: Duration) -> Result<ReadLock, StateError> {
        store.lock_shared(timeout)?;
        Ok(ReadLock(store))
    }
}

impl Drop for ReadLock {
    fn drop(&mut self) {
        self.0.unlock_shared();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sqlite::SqliteStore;

    #[test]
    fn the_guards_release_their_locks_when_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("state.db");
        let open = || -> Arc<dyn StateStore> { Arc::new(SqliteStore::open(&db).expect("open")) };
        let (a, b) = (open(), open());
        let run = RunLock::take(a.clone(), Duration::ZERO).expect("run lock");
        assert!(matches!(
            ReadLock::take(b.clone(), Duration::ZERO),
            Err(StateError::Locked { .. })
        ));
        drop(run);
        assert_eq!(a.lock_holder().expect("holder"), None, "released on drop");
        let read = ReadLock::take(b.clone(), Duration::ZERO).expect("read lock");
        assert!(matches!(
            RunLock::take(a.clone(), Duration::ZERO),
            Err(StateError::Busy { .. })
        ));
        drop(read);
        RunLock::take(a, Duration::ZERO).expect("free again");
    }
}
