//! The providers' own checks (`validate`), for every resource that passed the host's,
//! in parallel, reported at each property's place in the manifest.

use crate::diag::Diagnostics;
use crate::manifest::Manifest;
use crate::provider::{CallContext, Provider};
use crate::wasm::plugin::WasmProvider;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Ask each resource's provider to validate it; `passed` are the resources the host's
/// own checks accepted (the others are already reported).
pub(super) async fn provider_checks(
    manifest: &Manifest,
    providers: &BTreeMap<String, Arc<WasmProvider>>,
    passed: &BTreeSet<String>,
) -> Diagnostics {
    let mut diags = Diagnostics::new();
    let mut checks = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(
        crate::engine::DEFAULT_PARALLELISM,
    ));
    for (i, r) in manifest.resources.iter().enumerate() {
        let Some(p) = providers
            .get(&r.provider)
            .filter(|_| passed.contains(&r.id))
        else {
            continue;
        };
        let (p, id, kind, props) = (
            p.clone(),
            r.id.clone(),
            r.kind.clone(),
            r.properties.clone(),
        );
        // In manifest order, at most DEFAULT_PARALLELISM at once (the semaphore is never
        // closed: a permit always comes).
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        checks.spawn(async move {
            let _slot = slot;
            (
                i,
                p.validate(CallContext { resource: &id }, &kind, &props)
                    .await,
            )
        });
    }
    let mut found: Vec<_> = checks.join_all().await;
    found.sort_by_key(|(i, _)| *i);
    for (i, result) in found {
        let r = &manifest.resources[i];
        match result {
            Ok(problems) => {
                // Values built from references are checked once known, not as text.
                let referencing = crate::manifest::refs::Referencing::of(&r.properties);
                for d in problems
                    .into_iter()
                    .filter(|d| !referencing.covers(&d.path))
                {
                    let msg = format!(
                        "resource `{}` ({}): {}{}",
                        r.id,
                        r.type_name,
                        if d.path.is_empty() {
                            String::new()
                        } else {
                            format!("property `{}`: ", d.path)
                        },
                        d.message
                    );
                    let loc = Some(r.property_location(&d.path));
                    if d.is_error {
                        diags.error(loc, msg);
                    } else {
                        diags.warning(loc, msg);
                    }
                }
            }
            Err(e) => diags.error(Some(r.location.clone()), e.to_string()),
        }
    }
    diags
}
