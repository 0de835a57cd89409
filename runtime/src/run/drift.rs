//! `drift`: has the system moved away from what Tenet last applied? Reads every
//! resource in the state with its provider (read-only, like a plan), compares it with
//! the desired properties recorded at the last apply, and finds the fields that drifted.
//! Independent of manifest edits: a changed manifest is an intentional change for
//! `plan`, not drift. The check is recorded in the history.

use super::{RunContext, RunError};
use crate::plan::SENSITIVE;
use crate::provider::{Action, CallContext, Provider};
use crate::state::{GitInfo, ReadLock, ResourceOutcome, RunRecord, StoredResource};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// One resource's check.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// `in_sync`, `drifted`, `missing` (gone from the system) or `error`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<DriftedField>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftedField {
    pub path: String,
    /// As last applied.
    pub expected: Option<Value>,
    /// As found now.
    pub actual: Option<Value>,
}

async fn check(p: Option<Arc<dyn Provider>>, r: StoredResource, salt: Arc<String>) -> Checked {
    let started = Instant::now();
    let kind = r
        .type_name
        .split_once('.')
        .map_or("", |(_, k)| k)
        .to_owned();
    let mut out = Checked {
        id: r.id.clone(),
        type_name: r.type_name.clone(),
        status: "in_sync",
        fields: Vec::new(),
        error: None,
        duration_ms: 0.0,
    };
    let Some(p) = p else {
        out.status = "error";
        out.error = Some(format!(
            "its provider `{}` is not declared in the manifest",
            r.provider
        ));
        return out;
    };
    let cx = CallContext { resource: &r.id };
    // Sensitive values are stored sealed: compare seals, then let the provider diff the
    // rest with the value it found in their place.
    let mut hidden = Vec::new();
    let result = async {
        let current = p.read(cx, &kind, &r.desired).await?;
        let mut desired = r.desired.clone();
        if let (Some(cur), Some(want)) = (current.as_ref(), desired.as_object_mut()) {
            for f in &r.sensitive {
                let found = cur.get(f);
                let same = found.map(|v| crate::state::seal(&salt, v)) == want.get(f).cloned();
                if !same {
                    hidden.push(DriftedField {
                        path: format!("/{f}"),
                        expected: want.get(f).map(|_| Value::String(SENSITIVE.into())),
                        actual: found.map(|_| Value::String(SENSITIVE.into())),
                    });
                }
                match found {
                    Some(v) => {
                        want.insert(f.clone(), v.clone());
                    }
                    None => {
                        want.remove(f);
                    }
                }
            }
        }
        let diff = p.diff(cx, &kind, &desired, current.as_ref()).await?;
        Ok::<_, crate::provider::ProviderError>((current, diff))
    }
    .await;
    match result {
        Err(e) => {
            out.status = "error";
            out.error = Some(e.to_string());
        }
        Ok((None, _)) => out.status = "missing",
        Ok((Some(_), diff)) if diff.action == Action::None && hidden.is_empty() => {}
        Ok((Some(_), diff)) => {
            out.status = "drifted";
            out.fields = hidden;
            out.fields
                .extend(diff.changes.into_iter().map(|c| DriftedField {
                    path: c.path,
                    expected: c.after,
                    actual: c.before,
                }));
        }
    }
    out.duration_ms = crate::engine::millis(started.elapsed());
    out
}

/// What a drift check found.
#[derive(Debug)]
pub enum Drift {
    /// Nothing has been applied here yet, so nothing can have drifted.
    NoState { path: PathBuf },
    /// Every resource in the state, checked, in the state's order.
    Checked {
        resources: Vec<Checked>,
        /// Drifted or gone from the system.
        drifted: usize,
        /// Could not be checked.
        errors: usize,
        /// The check's number in the history.
        run: u64,
    },
}

/// Check every resource the state remembers, at most `parallelism` at once, while no
/// apply is changing the system (a half-applied change is not drift), and record it.
pub async fn drift(cx: &mut RunContext<'_>) -> Result<Drift, RunError> {
    let session = cx.session;
    let Some(store) = cx.existing_state()? else {
        return Ok(Drift::NoState {
            path: cx.state.local_for(&session.manifest.path),
        });
    };
    let (held, timeout) = (store.clone(), cx.settings.lock_timeout);
    let _reading = super::blocking(move || ReadLock::take(held, timeout)).await?;
    let started_at = crate::state::now();
    let resources = store.resources()?;
    let salt = Arc::new(store.salt()?);
    let slots = Arc::new(tokio::sync::Semaphore::new(cx.settings.parallelism.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, r) in resources.into_iter().enumerate() {
        let p = session
            .providers
            .get(&r.provider)
            .map(|p| p.clone() as Arc<dyn Provider>);
        // In the state's order, at most `parallelism` at once (the semaphore is never
        // closed: a permit always comes).
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let salt = salt.clone();
        tasks.spawn(async move {
            let _slot = slot;
            (i, check(p, r, salt).await)
        });
    }
    let mut checked: Vec<(usize, Checked)> = tasks.join_all().await;
    checked.sort_by_key(|(i, _)| *i);
    let checked: Vec<Checked> = checked.into_iter().map(|(_, c)| c).collect();
    let drifted = checked
        .iter()
        .filter(|c| matches!(c.status, "drifted" | "missing"))
        .count();
    let errors = checked.iter().filter(|c| c.status == "error").count();

    // Recorded for compliance history: who checked, when, what was found.
    // A drift check compares with the state, not the manifest: nothing to snapshot (and
    // no variable values to keep).
    let m = &session.manifest;
    let record = RunRecord {
        git: GitInfo::of(&m.base_dir),
        succeeded: errors == 0,
        resources: checked
            .iter()
            .map(|c| ResourceOutcome {
                id: c.id.clone(),
                type_name: c.type_name.clone(),
                outcome: c.status.to_owned(),
                changed_fields: c.fields.iter().map(|f| f.path.clone()).collect(),
                error: c.error.clone(),
                duration_ms: c.duration_ms,
                change: None,
                attempts: None,
                retried: Vec::new(),
            })
            .collect(),
        ..super::record::record_of("drift", m, &started_at)
    };
    let run = super::blocking(move || store.append_run(&record)).await?;
    Ok(Drift::Checked {
        resources: checked,
        drifted,
        errors,
        run,
    })
}
