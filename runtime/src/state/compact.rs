//! How a run is kept: what repeats from run to run is stored once. A converged run of
//! 1,000 resources used to add its whole manifest snapshot and a row per unchanged
//! resource (~300 KB); an agent running every 30 minutes would have grown the state by
//! ~15 MB a day. Stored, a record instead refers to
//!
//! - the manifest snapshot (all but the facts, which change from run to run) by the
//!   sha256 of its canonical JSON ([`RunRecord::snapshot_sha256`]), and
//! - the resources found as desired (`unchanged`, `in_sync`, with nothing else to say)
//!   as a count plus the sha256 of their sorted id → type list ([`Steady`]),
//!
//! each kept once per digest in the backend's blob store. The chain hash covers the
//! stored record, digests included, and verifying the chain checks every blob against its
//! digest, so nothing becomes editable by moving it out of the record. Backends call
//! [`compact`] when appending, [`load_steady`] when listing runs (their figures need the
//! count and ids only) and [`expand`] when reading one run (it is given back as it was
//! appended: for `show`, rollback, the agent).

use super::{ResourceOutcome, RunRecord, StateError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The resources of a run found as desired, stored as a count and a shared list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Steady {
    /// `unchanged` (an apply, a plan) or `in_sync` (a drift check).
    pub outcome: String,
    pub count: usize,
    /// The blob listing them: a JSON object id → type, sorted by id.
    pub sha256: String,
    /// That list, once read ([`load_steady`]); shared by every run that has the same.
    #[serde(skip)]
    pub ids: Arc<BTreeMap<String, String>>,
}

/// Content kept once per digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Hex sha256 of `body`.
    pub sha256: String,
    pub body: Vec<u8>,
}

impl Blob {
    fn of(body: Vec<u8>) -> Blob {
        Blob {
            sha256: crate::digest::sha256_hex(&body),
            body,
        }
    }
}

/// Where a backend reads blobs from while it reads a record (within the same read
/// transaction, so a record and its blobs are seen as of one moment).
pub type BlobSource<'a> = dyn Fn(&str) -> Result<Option<Vec<u8>>, StateError> + 'a;

/// The snapshot key kept in the record itself: facts change from run to run.
const INLINE: &str = "facts";

/// Whether `o` says nothing but "as desired" (then it is only counted). Every field is
/// named: one added later must be decided on here, or it would be dropped unseen.
fn is_steady(o: &ResourceOutcome) -> bool {
    let ResourceOutcome {
        id: _,
        type_name: _,
        outcome,
        changed_fields,
        error,
        duration_ms: _,
        change,
        attempts,
        retried,
    } = o;
    matches!(outcome.as_str(), "unchanged" | "in_sync")
        && error.is_none()
        && attempts.is_none()
        && retried.is_empty()
        && change.is_none()
        && changed_fields.is_empty()
}

/// `record` as stored, and the blobs it refers to. A record already compact (or with
/// nothing to share) is kept as it is.
pub fn compact(record: &RunRecord) -> (RunRecord, Vec<Blob>) {
    let mut blobs = Vec::new();
    let mut resources = Vec::with_capacity(record.resources.len());
    let mut steady: BTreeMap<String, String> = BTreeMap::new();
    let mut steady_outcome: Option<&str> = None;
    for o in &record.resources {
        if record.steady.is_none()
            && is_steady(o)
            && steady_outcome.is_none_or(|s| s == o.outcome)
            && !steady.contains_key(&o.id)
        {
            steady_outcome = Some(&o.outcome);
            steady.insert(o.id.clone(), o.type_name.clone());
        } else {
            resources.push(o.clone());
        }
    }
    let steady = match steady_outcome {
        Some(outcome) => {
            let count = steady.len();
            let blob = Blob::of(serde_json::to_vec(&steady).unwrap_or_default());
            let s = Steady {
                outcome: outcome.to_owned(),
                count,
                sha256: blob.sha256.clone(),
                ids: Arc::new(steady),
            };
            blobs.push(blob);
            Some(s)
        }
        None => record.steady.clone(),
    };
    let (manifest_snapshot, snapshot_sha256) =
        match (&record.snapshot_sha256, &record.manifest_snapshot) {
            (None, Value::Object(map)) => {
                let mut shared = map.clone();
                let inline = shared.remove(INLINE);
                if shared.is_empty() {
                    (record.manifest_snapshot.clone(), None)
                } else {
                    let blob =
                        Blob::of(crate::plan::canonical(&Value::Object(shared)).into_bytes());
                    let sha = blob.sha256.clone();
                    blobs.push(blob);
                    let mut rest = serde_json::Map::new();
                    if let Some(facts) = inline {
                        rest.insert(INLINE.to_owned(), facts);
                    }
                    (Value::Object(rest), Some(sha))
                }
            }
            _ => (
                record.manifest_snapshot.clone(),
                record.snapshot_sha256.clone(),
            ),
        };
    let stored = RunRecord {
        command: record.command.clone(),
        rollback_of: record.rollback_of,
        manifest_path: record.manifest_path.clone(),
        manifest_sha256: record.manifest_sha256.clone(),
        manifest_snapshot,
        snapshot_sha256,
        git: record.git.clone(),
        user: record.user.clone(),
        host: record.host.clone(),
        started_at: record.started_at.clone(),
        finished_at: record.finished_at.clone(),
        succeeded: record.succeeded,
        resources,
        steady,
        policy: record.policy.clone(),
        artifact: record.artifact.clone(),
    };
    (stored, blobs)
}

/// The digests a stored record refers to.
pub fn references(record: &RunRecord) -> impl Iterator<Item = &str> {
    record
        .snapshot_sha256
        .as_deref()
        .into_iter()
        .chain(record.steady.as_ref().map(|s| s.sha256.as_str()))
}

/// Read the id list of a stored record's [`Steady`] part, once per digest across the
/// records read with the same `cache`.
pub fn load_steady(
    record: &mut RunRecord,
    cache: &mut HashMap<String, Arc<BTreeMap<String, String>>>,
    blob: &BlobSource<'_>,
    seq: u64,
) -> Result<(), StateError> {
    let Some(s) = &mut record.steady else {
        return Ok(());
    };
    if let Some(ids) = cache.get(&s.sha256) {
        s.ids = ids.clone();
        return Ok(());
    }
    let body = blob(&s.sha256)?.ok_or_else(|| missing(seq, &s.sha256))?;
    let ids: BTreeMap<String, String> =
        serde_json::from_slice(&body).map_err(|e| unreadable(seq, &s.sha256, e))?;
    let ids = Arc::new(ids);
    cache.insert(s.sha256.clone(), ids.clone());
    s.ids = ids;
    Ok(())
}

fn missing(seq: u64, sha: &str) -> StateError {
    StateError::Blob {
        seq,
        sha256: sha.to_owned(),
        message: "it is missing".to_owned(),
    }
}

fn unreadable(seq: u64, sha: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Blob {
        seq,
        sha256: sha.to_owned(),
        message: format!("it cannot be read: {e}"),
    }
}

/// Run `seq`'s stored `record` as it was appended: the manifest snapshot whole again,
/// and each resource found as desired listed again (after the others, by id, with no
/// duration: only the count and ids were kept).
pub fn expand(
    seq: u64,
    mut record: RunRecord,
    blob: &BlobSource<'_>,
) -> Result<RunRecord, StateError> {
    if let Some(sha) = record.snapshot_sha256.take() {
        let body = blob(&sha)?.ok_or_else(|| missing(seq, &sha))?;
        let mut shared: Value =
            serde_json::from_slice(&body).map_err(|e| unreadable(seq, &sha, e))?;
        if let (Some(map), Value::Object(inline)) = (
            shared.as_object_mut(),
            std::mem::take(&mut record.manifest_snapshot),
        ) {
            map.extend(inline);
        }
        record.manifest_snapshot = shared;
    }
    if record
        .steady
        .as_ref()
        .is_some_and(|s| s.ids.len() != s.count)
    {
        load_steady(&mut record, &mut HashMap::new(), blob, seq)?;
    }
    if let Some(s) = record.steady.take() {
        record
            .resources
            .extend(s.ids.iter().map(|(id, type_name)| ResourceOutcome {
                id: id.clone(),
                type_name: type_name.clone(),
                outcome: s.outcome.clone(),
                changed_fields: Vec::new(),
                error: None,
                duration_ms: 0.0,
                change: None,
                attempts: None,
                retried: Vec::new(),
            }));
    }
    Ok(record)
}

/// A run row as a backend stores it: seq, prev_hash, hash, record JSON.
pub type Row = (u64, String, String, String);

fn decoded(location: &str, seq: u64, record: &str) -> Result<RunRecord, StateError> {
    serde_json::from_str(record).map_err(|e| StateError::Database {
        path: location.to_owned(),
        message: format!("run {seq} is not valid: {e}"),
    })
}

/// Rows of runs read in one read transaction, as stored with their steady ids loaded
/// (once per digest) from `blob` in that transaction.
pub fn stored_runs(
    rows: Vec<Row>,
    location: &str,
    blob: &BlobSource<'_>,
) -> Result<Vec<super::ChainedRun>, StateError> {
    let mut cache = HashMap::new();
    rows.into_iter()
        .map(|(seq, prev_hash, hash, record)| {
            let mut record = decoded(location, seq, &record)?;
            load_steady(&mut record, &mut cache, blob, seq)?;
            Ok(super::ChainedRun {
                seq,
                prev_hash,
                hash,
                record,
            })
        })
        .collect()
}

/// Run `seq` whole from its row (read in one transaction with `anchor` and `blob`): an
/// absent one is pruned (at or before the anchor) or was never there.
pub fn whole_run(
    seq: u64,
    row: Option<Row>,
    anchor: impl FnOnce() -> Result<Option<super::Anchor>, StateError>,
    location: &str,
    blob: &BlobSource<'_>,
) -> Result<super::ChainedRun, StateError> {
    let Some((_, prev_hash, hash, record)) = row else {
        return Err(match anchor()? {
            Some(a) if seq <= a.seq => StateError::Pruned {
                seq,
                pruned_through: a.seq,
            },
            _ => StateError::NoSuchRun(seq),
        });
    };
    let record = expand(seq, decoded(location, seq, &record)?, blob)?;
    Ok(super::ChainedRun {
        seq,
        prev_hash,
        hash,
        record,
    })
}

/// Outcome name → how many resources of `record` had it, the steady ones included.
pub fn outcome_counts(record: &RunRecord) -> BTreeMap<&str, usize> {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &record.resources {
        *by.entry(o.outcome.as_str()).or_default() += 1;
    }
    if let Some(s) = &record.steady {
        *by.entry(s.outcome.as_str()).or_default() += s.count;
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(id: &str, outcome: &str) -> ResourceOutcome {
        ResourceOutcome {
            id: id.into(),
            type_name: "file.file".into(),
            outcome: outcome.into(),
            changed_fields: Vec::new(),
            error: None,
            duration_ms: 1.5,
            change: None,
            attempts: None,
            retried: Vec::new(),
        }
    }

    fn record(resources: Vec<ResourceOutcome>) -> RunRecord {
        let mut r = super::super::conformance::record("apply", "unchanged");
        r.resources = resources;
        r.manifest_snapshot = json!({
            "files": {"tenet.yaml": "resources: []\n"},
            "vars": {"x": 1},
            "facts": {"memory": {"available_bytes": 123}},
        });
        r
    }

    #[test]
    fn what_repeats_moves_out_and_the_rest_stays() {
        let mut changed = outcome("b", "updated");
        changed.change = Some("corrective".into());
        let mut failed = outcome("c", "unchanged");
        failed.error = Some("boom".into());
        let r = record(vec![
            outcome("z", "unchanged"),
            changed,
            failed,
            outcome("a", "unchanged"),
        ]);
        let (stored, blobs) = compact(&r);
        let ids: Vec<&str> = stored.resources.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"], "changes and errors stay, in order");
        let s = stored.steady.as_ref().expect("steady");
        assert_eq!((s.outcome.as_str(), s.count), ("unchanged", 2));
        assert_eq!(
            stored.manifest_snapshot,
            json!({"facts": {"memory": {"available_bytes": 123}}}),
            "facts stay in the record"
        );
        assert_eq!(blobs.len(), 2);
        for b in &blobs {
            assert_eq!(b.sha256, crate::digest::sha256_hex(&b.body));
        }
        let refs: Vec<&str> = references(&stored).collect();
        assert_eq!(refs.len(), 2);

        // Compacting again changes nothing; a second run with other facts and other
        // durations shares both blobs.
        assert_eq!(compact(&stored).0, stored);
        assert!(compact(&stored).1.is_empty());
        let mut next = r.clone();
        next.manifest_snapshot["facts"] = json!({"memory": {"available_bytes": 9}});
        next.resources[0].duration_ms = 7.0;
        let (_, again) = compact(&next);
        assert_eq!(again, blobs);
    }

    #[test]
    fn counts_include_the_steady_resources() {
        let (stored, _) = compact(&record(vec![
            outcome("a", "unchanged"),
            outcome("b", "unchanged"),
            outcome("c", "created"),
        ]));
        let counts = outcome_counts(&stored);
        assert_eq!(counts.get("unchanged"), Some(&2));
        assert_eq!(counts.get("created"), Some(&1));
    }

    #[test]
    fn a_record_with_nothing_to_share_is_kept_as_it_is() {
        let mut r = record(vec![outcome("a", "created")]);
        r.manifest_snapshot = json!({});
        let (stored, blobs) = compact(&r);
        assert_eq!(stored, r);
        assert!(blobs.is_empty());
    }
}
