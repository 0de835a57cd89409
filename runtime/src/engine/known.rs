//! What finished resources offer the `${resources.…}` references of others: desired
//! values as soon as the plan is known, observed ones once a resource is settled.

use crate::manifest::refs;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a finished resource offers to the resources that reference it.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub(super) desired: Value,
    pub(super) current: Option<Value>,
    /// Its current state is final for this run (unchanged, or applied).
    pub(super) settled: bool,
}

pub(super) type Shared = Arc<Mutex<Vec<Option<Known>>>>;

/// The value of `${resources.<target>.<field>}`: the target's desired value when it sets
/// the field (and it is not itself waiting for a reference), otherwise its observed value
/// once settled; `None` while known only after apply.
pub(super) fn lookup(
    known: &[Option<Known>],
    index: &BTreeMap<String, usize>,
    target: &str,
    field: &str,
) -> Option<Value> {
    let k = known.get(*index.get(target)?)?.as_ref()?;
    let observed = || {
        k.settled
            .then(|| k.current.as_ref()?.get(field).cloned())
            .flatten()
    };
    match k.desired.get(field) {
        // Itself waiting for a reference: known once that resource is applied.
        Some(Value::String(s)) if refs::has_reference(s) => observed(),
        Some(v) => Some(v.clone()),
        None if k.settled => observed(),
        None => None,
    }
}

/// The marker a plan shows for a value known only after apply.
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";
