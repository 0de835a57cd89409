//! File events that wake the agent. It watches the *directories* that hold managed
//! paths, not the paths (a file replaced by rename loses its own watch; its directory
//! sees the rename), non-recursively; a directory that does not exist yet is stood in
//! for by its nearest existing ancestor, and the set is refreshed after every run, so
//! a watched directory deleted and recreated is watched again. Only writes count (never
//! reads or opens: Salt's beacon-reactor loop); an event queue overflow asks for a full
//! run. What an event *means* is decided by the agent: events only say when to run.

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// What the watcher saw.
#[derive(Debug)]
pub enum FsEvent {
    /// Something was written, created, renamed or removed at these paths.
    Changed(Vec<PathBuf>),
    /// Events were lost (the kernel's queue overflowed): only a full run is safe.
    Rescan,
    /// The watch itself failed.
    Error(String),
}

/// The directories watched now, with the identity (device, inode) each had when its
/// watch was added: a directory recreated under the same name is a new one.
pub struct Watch {
    watcher: RecommendedWatcher,
    watched: BTreeMap<PathBuf, (u64, u64)>,
    /// Watched directories seen removed or renamed away: each lost its watch, even if
    /// a new one (maybe with the same inode number) stands there now. Shared with the
    /// event callback, with the set of watched directories it checks against (so its
    /// size is bounded by what is watched, whatever happens around).
    gone: Arc<Mutex<(HashSet<PathBuf>, HashSet<PathBuf>)>>,
}

fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// The directory to watch for `path`: its parent, or the nearest ancestor that exists.
pub fn directory_for(path: &Path) -> Option<PathBuf> {
    let mut dir = path.parent()?;
    loop {
        if dir.is_dir() {
            return Some(dir.to_path_buf());
        }
        dir = dir.parent()?;
    }
}

impl Watch {
    /// A watcher that sends what it sees to `tx`.
    pub fn new(tx: UnboundedSender<FsEvent>) -> Result<Watch, String> {
        let gone = Arc::new(Mutex::new((HashSet::new(), HashSet::new())));
        let seen_gone = gone.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let msg = match res {
                Ok(ev) if ev.need_rescan() => FsEvent::Rescan,
                Ok(ev) => match ev.kind {
                    EventKind::Remove(_)
                    | EventKind::Modify(notify::event::ModifyKind::Name(_)) => {
                        if let Ok(mut g) = seen_gone.lock() {
                            let (watched, gone) = &mut *g;
                            for p in &ev.paths {
                                if watched.contains(p) {
                                    gone.insert(p.clone());
                                }
                            }
                        }
                        FsEvent::Changed(ev.paths)
                    }
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any => {
                        FsEvent::Changed(ev.paths)
                    }
                    EventKind::Access(_) | EventKind::Other => return,
                },
                Err(e) => FsEvent::Error(e.to_string()),
            };
            let _ = tx.send(msg);
        })
        .map_err(|e| e.to_string())?;
        Ok(Watch {
            watcher,
            watched: BTreeMap::new(),
            gone,
        })
    }

    /// Watch exactly `dirs` (adding, dropping and re-adding what was recreated); the
    /// problems, one per directory that could not be watched.
    pub fn set(&mut self, dirs: &BTreeSet<PathBuf>) -> Vec<String> {
        let mut problems = Vec::new();
        let gone: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|d| !dirs.contains(*d))
            .cloned()
            .collect();
        for d in gone {
            let _ = self.watcher.unwatch(&d);
            self.watched.remove(&d);
        }
        let gone: HashSet<PathBuf> = self
            .gone
            .lock()
            .map(|mut g| std::mem::take(&mut g.1))
            .unwrap_or_default();
        for d in dirs {
            let now = identity(d);
            match (self.watched.get(d), now) {
                (Some(was), Some(is)) if *was == is && !gone.contains(d) => continue,
                (Some(_), _) => {
                    // Deleted (and maybe recreated): its old watch died with it.
                    let _ = self.watcher.unwatch(d);
                    self.watched.remove(d);
                }
                (None, _) => {}
            }
            let Some(is) = now else { continue };
            match self.watcher.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(d.clone(), is);
                }
                Err(e) => problems.push(format!("cannot watch {}: {e}", d.display())),
            }
        }
        if let Ok(mut g) = self.gone.lock() {
            g.0 = self.watched.keys().cloned().collect();
        }
        problems
    }

    /// How many directories are watched.
    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next_change(rx: &mut tokio::sync::mpsc::UnboundedReceiver<FsEvent>) -> Vec<PathBuf> {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(FsEvent::Changed(p))) => p,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) | Err(_) => panic!("no event within 5 s"),
        }
    }

    #[tokio::test]
    async fn a_rename_replacement_and_a_recreated_directory_are_seen() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("conf");
        std::fs::create_dir(&dir).expect("mkdir");
        let file = dir.join("app.conf");
        std::fs::write(&file, "a").expect("write");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut w = Watch::new(tx).expect("watcher");
        let dirs = BTreeSet::from([directory_for(&file).expect("dir")]);
        assert!(w.set(&dirs).is_empty());
        assert_eq!(w.len(), 1);

        // Write elsewhere, rename over: the file's own watch would have missed it.
        let tmpfile = dir.join(".app.conf.tmp");
        std::fs::write(&tmpfile, "b").expect("write");
        std::fs::rename(&tmpfile, &file).expect("rename");
        let mut seen = BTreeSet::new();
        while !seen.contains(&file) {
            seen.extend(next_change(&mut rx).await);
        }

        // Deleted and recreated: watched again after a refresh.
        std::fs::remove_dir_all(&dir).expect("rm");
        std::fs::create_dir(&dir).expect("mkdir again");
        assert!(w.set(&dirs).is_empty());
        while rx.try_recv().is_ok() {}
        std::fs::write(&file, "c").expect("write");
        let mut seen = BTreeSet::new();
        while !seen.contains(&file) {
            seen.extend(next_change(&mut rx).await);
        }
    }

    #[test]
    fn a_missing_directory_is_stood_in_for_by_its_nearest_ancestor() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("a/b/c/file");
        assert_eq!(directory_for(&p).as_deref(), Some(tmp.path()));
    }
}
