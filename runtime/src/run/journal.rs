//! The run journal on the state, for the engine's [`Journal`] hook. The state is a
//! synchronous store (SQLite today, a network database later): every write here runs on
//! tokio's blocking pool and is awaited by the resource's own task, so a slow store never
//! stalls the async runtime's workers or the walk's scheduling of other resources.

use super::record::{self, RunIndex};
use crate::engine::{Journal, JournalFuture, ResourceResult};
use crate::plan::PlannedResource;
use crate::state::{JournalEntry, StateError, StateStore};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Writes intents and finished resources to the state as the walk goes.
pub(super) struct StateJournal {
    store: Arc<dyn StateStore>,
    salt: Arc<str>,
    facts: std::collections::BTreeMap<String, record::Facts>,
    pid: u32,
    /// Set when the lock is lost: the run starts nothing more.
    cancel: Arc<AtomicBool>,
    /// The lost lock, once, for the run's events.
    lost: Arc<Mutex<Option<StateError>>>,
}

impl StateJournal {
    pub(super) fn new(
        store: Arc<dyn StateStore>,
        salt: String,
        index: &RunIndex<'_>,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        StateJournal {
            store,
            salt: salt.into(),
            facts: index.owned_facts(),
            pid: std::process::id(),
            cancel,
            lost: Arc::new(Mutex::new(None)),
        }
    }

    /// Where the lost lock is left for the events.
    pub(super) fn lost(&self) -> Arc<Mutex<Option<StateError>>> {
        self.lost.clone()
    }

    /// Run `write` on the blocking pool. A lost lock stops the run (calls in flight end
    /// within their deadlines; recording the run fails the same way).
    fn off_runtime(
        &self,
        write: impl FnOnce(&dyn StateStore) -> Result<(), StateError> + Send + 'static,
    ) -> JournalFuture<Result<(), StateError>> {
        let store = self.store.clone();
        let (cancel, lost) = (self.cancel.clone(), self.lost.clone());
        Box::pin(async move {
            let written = super::blocking(move || write(store.as_ref())).await;
            if let Err(err @ StateError::LockLost { .. }) = &written
                && !cancel.swap(true, Ordering::SeqCst)
            {
                *lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.clone());
            }
            written
        })
    }
}

impl Journal for StateJournal {
    /// The intent, on disk before the provider is called: if it cannot be written, the
    /// resource is not changed.
    fn begin(&self, r: &PlannedResource) -> JournalFuture<Result<(), String>> {
        let entry = JournalEntry {
            id: r.id.clone(),
            type_name: r.type_name.clone(),
            action: r.action.to_string(),
            pid: self.pid,
            started_at: crate::state::now(),
            outcome: None,
        };
        let write = self.off_runtime(move |store| store.journal_begin(&entry));
        Box::pin(async move {
            write.await.map_err(|err| {
                format!("not changed: its intent could not be written to the run journal: {err}")
            })
        })
    }

    /// The resource's state and its journal entry's outcome; a failure is logged (the
    /// run record written at the end covers the resource again).
    fn finish(&self, planned: &PlannedResource, r: &ResourceResult) -> JournalFuture<()> {
        let facts = self.facts.get(&r.id).cloned().unwrap_or_default();
        let (planned, r, salt) = (planned.clone(), r.clone(), self.salt.clone());
        let write =
            self.off_runtime(move |store| record::remember_one(store, &facts, &planned, &r, &salt));
        Box::pin(async move {
            if let Err(err) = write.await
                && !matches!(err, StateError::LockLost { .. })
            {
                tracing::warn!("cannot write the run journal or state: {err}");
            }
        })
    }
}
