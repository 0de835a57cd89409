//! Tenet's own files versus the operator's grants. A grant is a directory, and the
//! directory an operator naturally grants (the manifest's, a home directory) often holds
//! files the host itself depends on: the state database, the compile cache (native code
//! the host executes), the plugin store, `tenet.lock`, trusted keys, the manifest. A
//! provider that can write them can destroy the history or run code outside the sandbox;
//! one that can read the state can read what it records.
//!
//! The session lists every path the host owns ([`Owned`]); [`check`] refuses each grant
//! that reaches one, at the grant's `file:line:col`, naming the protected path and
//! suggesting a subdirectory instead. Paths are compared both as written and with
//! symlinks resolved, so a link to the manifest directory is no way around it.

use super::{Access, Manifest, ProviderDecl};
use crate::diag::Diagnostics;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// What a grant may not do with an owned path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// No grant may reach it, read-only or not (state, compile cache, plugin store:
    /// reading leaks, writing corrupts or injects code).
    NoAccess,
    /// No `rw` grant may reach it (the manifest's own files, `tenet.lock`, trusted keys:
    /// a provider rewriting them rewrites what the operator vetted).
    ReadOnly,
}

/// One path the host owns.
#[derive(Debug, Clone)]
pub struct Owned {
    pub path: PathBuf,
    /// `path` with symlinks resolved, once: every provider's grants are compared with it.
    real: PathBuf,
    /// What it is, for messages: "the state database", "the compile cache", …
    pub what: String,
    pub guard: Guard,
}

impl Owned {
    pub fn new(path: impl Into<PathBuf>, what: impl Into<String>, guard: Guard) -> Self {
        let path = path.into();
        Owned {
            real: resolved(&path),
            path,
            what: what.into(),
            guard,
        }
    }

    /// The files a manifest itself consists of and vouches for: its YAML files, the
    /// values files given with it, `tenet.lock`, and the trusted key files.
    pub fn of_manifest(manifest: &Manifest, values_files: &[PathBuf]) -> Vec<Owned> {
        let mut owned: Vec<Owned> = manifest
            .files
            .iter()
            .map(|f| Owned::new(abs(f), "a manifest file", Guard::ReadOnly))
            .collect();
        // Values files hold the values of sensitive variables: not even readable.
        owned.extend(
            values_files
                .iter()
                .map(|f| Owned::new(abs(f), "a values file", Guard::NoAccess)),
        );
        owned.push(Owned::new(
            super::lock_path(&manifest.path),
            "the lock file",
            Guard::ReadOnly,
        ));
        owned.extend(manifest.trusted_keys.iter().filter_map(|k| {
            k.file
                .as_ref()
                .map(|f| Owned::new(abs(f), "a trusted key file", Guard::ReadOnly))
        }));
        owned
    }

    /// The state database at `db`: the file, SQLite's companions beside it, the run's
    /// lock file, and — for the default location — the whole `.tenet` directory.
    pub fn state(db: &Path) -> Vec<Owned> {
        let db = abs(db);
        let mut owned: Vec<Owned> = ["", "-wal", "-shm", "-journal", ".lock", ".migrate.lock"]
            .iter()
            .map(|suffix| {
                let mut name = db.as_os_str().to_owned();
                name.push(suffix);
                Owned::new(PathBuf::from(name), "the state database", Guard::NoAccess)
            })
            .collect();
        if let Some(dir) = db
            .parent()
            .filter(|d| d.file_name() == Some(".tenet".as_ref()))
        {
            owned.push(Owned::new(dir, "Tenet's state directory", Guard::NoAccess));
        }
        owned
    }
}

/// Refuse every fs grant of the manifest's providers that reaches an owned path: one
/// that contains it, or lies inside it. All problems at once, and the providers they
/// concern: those must not run at all (not even `describe`, which could read).
pub fn check(manifest: &Manifest, owned: &[Owned]) -> (Diagnostics, BTreeSet<String>) {
    let mut diags = Diagnostics::new();
    let mut refused = BTreeSet::new();
    for decl in manifest.providers.values() {
        let found = check_provider(decl, owned);
        if !found.is_empty() {
            refused.insert(decl.name.clone());
            diags.extend(found);
        }
    }
    (diags, refused)
}

/// [`check`] for one provider: what every way of loading a provider checks first.
pub fn check_provider(decl: &ProviderDecl, owned: &[Owned]) -> Diagnostics {
    let mut diags = Diagnostics::new();
    for grant in &decl.grants.fs {
        let real = resolved(&grant.path);
        for o in owned {
            let o_real = &o.real;
            if o.guard == Guard::ReadOnly && grant.access != Access::ReadWrite {
                continue;
            }
            let reaches = |g: &Path, p: &Path| p.starts_with(g) || g.starts_with(p);
            if !(reaches(&grant.path, &o.path) || reaches(&real, o_real)) {
                continue;
            }
            let inside = grant.path.starts_with(&o.path) || real.starts_with(o_real);
            let advice = if inside {
                "grant a directory outside it"
            } else {
                "grant only the subdirectories the provider needs instead"
            };
            diags.error(
                grant.location.clone(),
                format!(
                    "provider `{}`: {} grant {} {} {} {}, which Tenet itself owns: no grant{} may reach it; {advice}",
                    decl.name,
                    grant.access,
                    grant.path.display(),
                    if inside { "lies inside" } else { "contains" },
                    o.what,
                    o.path.display(),
                    if o.guard == Guard::ReadOnly {
                        " with write access"
                    } else {
                        ""
                    },
                ),
            );
            // One message per grant: the first owned path it reaches says enough.
            break;
        }
    }
    diags
}

fn abs(p: &Path) -> PathBuf {
    super::load::absolute(Path::new("."), p)
}

/// `p` with symlinks resolved as far as it exists (a dangling symlink is followed to
/// where it points); the rest appended lexically.
pub fn resolved(p: &Path) -> PathBuf {
    resolved_within(p, 0)
}

/// Symlinks followed at most (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;

fn resolved_within(p: &Path, links: usize) -> PathBuf {
    let p = abs(p);
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return out;
        }
        // A symlink that leads nowhere yet leads somewhere once its target is created.
        if links < MAX_LINKS
            && let Ok(target) = std::fs::read_link(existing)
        {
            let mut out = resolved_within(
                &existing.parent().unwrap_or(Path::new("/")).join(target),
                links + 1,
            );
            for c in rest.iter().rev() {
                out.push(c);
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(Component::Normal(name))) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_follows_links_as_far_as_the_path_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
        let canon = real.canonicalize().expect("canon");
        assert_eq!(
            resolved(&dir.path().join("link/not/yet")),
            canon.join("not/yet")
        );
        assert_eq!(resolved(&dir.path().join("link")), canon);
        // Dangling now, the state directory once it is created.
        std::os::unix::fs::symlink(dir.path().join(".tenet"), dir.path().join("later"))
            .expect("symlink");
        assert_eq!(
            resolved(&dir.path().join("later/x")),
            dir.path().canonicalize().expect("canon").join(".tenet/x")
        );
    }

    #[test]
    fn state_covers_sqlite_companions_and_the_default_directory() {
        let owned = Owned::state(Path::new("/srv/app/.tenet/state.db"));
        let paths: Vec<_> = owned.iter().map(|o| o.path.display().to_string()).collect();
        assert!(paths.contains(&"/srv/app/.tenet/state.db-wal".to_owned()));
        assert!(paths.contains(&"/srv/app/.tenet".to_owned()));
        let elsewhere = Owned::state(Path::new("/var/lib/tenet.db"));
        assert!(elsewhere.iter().all(|o| o.path != Path::new("/var/lib")));
    }
}
