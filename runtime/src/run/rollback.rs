//! `rollback`: find the desired state an earlier run applied — its manifest files and
//! variables — so it can be opened as a session and applied again. A record is used only
//! if the history's chain verifies up to it, and sensitive variables (recorded sealed)
//! must be given again with the values of that run.

use super::RunError;
use crate::manifest::Snapshot;
use crate::state::{Location, RunRecord};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The manifest to restore, and the run that applied it.
#[derive(Debug)]
pub struct RollbackTarget {
    pub snapshot: Snapshot,
    pub record: RunRecord,
}

/// The desired state of run `run_id` in the state of the manifest at `manifest`;
/// `given` are the `--var NAME=VALUE` pairs (sensitive variables must be among them).
pub fn rollback_target(
    state: &Location,
    manifest: &Path,
    run_id: u64,
    given: &[(String, String)],
) -> Result<RollbackTarget, RunError> {
    let refuse = |m: String| Err(RunError::Refused(m));
    if !state.exists_for(manifest) {
        return refuse(format!(
            "no state at {}: there is no history to roll back to",
            state.describe(manifest)
        ));
    }
    let store = state.open(manifest)?;
    // A record is acted on only if the chain verifies up to it: an edited snapshot
    // would apply what no run ever applied.
    if let Err(broken) = store.verify()?
        && broken.seq() <= run_id
    {
        return refuse(format!(
            "refusing to roll back to run {run_id}: the history does not verify up to it: {broken}; see `tenet audit verify`"
        ));
    }
    let record = store.run(run_id)?.record;
    if !matches!(record.command.as_str(), "apply" | "rollback") {
        return refuse(format!(
            "run {run_id} is a {}, which applied nothing: roll back to an apply (see `tenet history`)",
            record.command
        ));
    }
    let snap = &record.manifest_snapshot;
    let Some(files) = snap
        .get("files")
        .and_then(|f| serde_json::from_value::<BTreeMap<String, String>>(f.clone()).ok())
        .filter(|f| !f.is_empty())
    else {
        return refuse(format!(
            "run {run_id} ({}) recorded no manifest to roll back to; pick an apply run from `tenet history`",
            record.command
        ));
    };
    let mut vars: BTreeMap<String, Value> = snap
        .get("vars")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    // Sensitive variables were recorded sealed: the operator gives them again, and they
    // must be the values of that run.
    let sensitive: Vec<String> = snap
        .get("sensitive_vars")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let salt = store.salt()?;
    for name in &sensitive {
        let Some(value) = given
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| crate::manifest::load::typed_var(v))
        else {
            return refuse(format!(
                "run {run_id} used the sensitive variable `{name}`, which is recorded only as a hash: pass it again with --var {name}=VALUE"
            ));
        };
        if vars.get(name) != Some(&crate::state::seal(&salt, &value)) {
            return refuse(format!(
                "--var {name} is not the value run {run_id} used (its recorded hash differs)"
            ));
        }
        vars.insert(name.clone(), value);
    }
    if snap.get("redacted") == Some(&Value::Bool(true)) {
        return refuse(format!(
            "run {run_id}'s manifest held sensitive values written literally, which were not recorded; it cannot be rolled back to (keep secrets in variables declared `sensitive: true`)"
        ));
    }
    let recorded = Path::new(&record.manifest_path);
    let base_dir = if recorded.is_dir() {
        recorded.to_path_buf()
    } else {
        recorded.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    Ok(RollbackTarget {
        snapshot: Snapshot {
            base_dir,
            files,
            vars,
            facts: snap.get("facts").cloned(),
            data: snap.get("data").cloned(),
            templates: snap
                .get("templates")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .map(std::sync::Arc::new),
        },
        record,
    })
}
