//! Field-level differences between a desired property document and a current state.

use serde_json::Value;

/// What applying the desired state would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing: the resource is in its desired state.
    None,
    /// The resource does not exist and will be created.
    Create,
    /// The resource will be changed in place.
    Update,
    /// The resource will be deleted and created again.
    Replace,
    /// The resource will be removed.
    Delete,
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// JSON pointer, e.g. `/mode`.
    pub path: String,
    /// Current value; `None` when absent.
    pub before: Option<Value>,
    /// Desired value; `None` when the field goes away.
    pub after: Option<Value>,
    /// Whether this change alone forces replacement.
    pub forces_replacement: bool,
}

impl FieldChange {
    /// A change of the top-level property `name`.
    pub fn new(name: &str, before: Option<Value>, after: Option<Value>) -> Self {
        FieldChange {
            path: pointer(name),
            before,
            after,
            forces_replacement: false,
        }
    }

    /// Mark this change as forcing replacement.
    pub fn forcing_replacement(mut self) -> Self {
        self.forces_replacement = true;
        self
    }
}

/// What `diff` returns: an action and the field changes behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    /// The action; [`Action::None`] exactly when `changes` is empty.
    pub action: Action,
    /// Field-level changes.
    pub changes: Vec<FieldChange>,
}

impl Diff {
    /// No change.
    pub fn none() -> Self {
        Diff {
            action: Action::None,
            changes: Vec::new(),
        }
    }

    /// Build a diff from changes: `None` when empty, `Replace` when any change forces
    /// replacement, `Update` otherwise.
    pub fn from_changes(changes: Vec<FieldChange>) -> Self {
        let action = if changes.is_empty() {
            Action::None
        } else if changes.iter().any(|c| c.forces_replacement) {
            Action::Replace
        } else {
            Action::Update
        };
        Diff { action, changes }
    }

    /// A creation: every desired top-level property appears as a change from nothing
    /// (the whole document, at pointer `""`, when it has no properties).
    pub fn create(desired: &Value) -> Self {
        let mut changes: Vec<FieldChange> = fields(desired)
            .map(|(k, v)| FieldChange::new(k, None, Some(v.clone())))
            .collect();
        if changes.is_empty() {
            changes.push(whole(None, Some(desired.clone())));
        }
        Diff {
            action: Action::Create,
            changes,
        }
    }

    /// A deletion: every current top-level field appears as a change to nothing (the
    /// whole document when it has no fields).
    pub fn delete(current: &Value) -> Self {
        let mut changes: Vec<FieldChange> = fields(current)
            .map(|(k, v)| FieldChange::new(k, Some(v.clone()), None))
            .collect();
        if changes.is_empty() {
            changes.push(whole(Some(current.clone()), None));
        }
        Diff {
            action: Action::Delete,
            changes,
        }
    }

    /// The generic comparison: every top-level property of `desired` that differs from
    /// the same field of `current`. Fields of `current` that `desired` does not mention
    /// are observed-only and ignored. A changed property listed in `force_new` forces
    /// replacement.
    pub fn between(desired: &Value, current: Option<&Value>, force_new: &[String]) -> Self {
        let Some(current) = current else {
            return Diff::create(desired);
        };
        let changes = fields(desired)
            .filter_map(|(k, want)| {
                let have = current.get(k);
                (have != Some(want)).then(|| {
                    let change = FieldChange::new(k, have.cloned(), Some(want.clone()));
                    if force_new.iter().any(|f| f == k) {
                        change.forcing_replacement()
                    } else {
                        change
                    }
                })
            })
            .collect();
        Diff::from_changes(changes)
    }
}

/// A change of the whole document: an action is never reported without a change.
fn whole(before: Option<Value>, after: Option<Value>) -> FieldChange {
    FieldChange {
        path: String::new(),
        before,
        after,
        forces_replacement: false,
    }
}

fn fields(doc: &Value) -> impl Iterator<Item = (&str, &Value)> {
    doc.as_object()
        .into_iter()
        .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
}

/// The JSON pointer (RFC 6901) of a top-level property.
pub fn pointer(name: &str) -> String {
    format!("/{}", name.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_documents_have_no_changes() {
        let d = json!({"a": 1, "b": "x"});
        let diff = Diff::between(&d, Some(&json!({"a": 1, "b": "x", "observed": true})), &[]);
        assert_eq!(diff, Diff::none());
    }

    #[test]
    fn changed_force_new_field_replaces() {
        let diff = Diff::between(
            &json!({"a": 1, "t": "new"}),
            Some(&json!({"a": 2, "t": "old"})),
            &["t".to_owned()],
        );
        assert_eq!(diff.action, Action::Replace);
        assert_eq!(diff.changes.len(), 2);
        assert!(
            diff.changes
                .iter()
                .any(|c| c.path == "/t" && c.forces_replacement)
        );
    }

    #[test]
    fn empty_documents_still_carry_a_change() {
        assert_eq!(Diff::create(&json!({})).changes.len(), 1);
        assert_eq!(Diff::delete(&json!({})).changes[0].path, "");
    }

    #[test]
    fn missing_current_is_a_create() {
        let diff = Diff::between(&json!({"a/b": 1}), None, &[]);
        assert_eq!(diff.action, Action::Create);
        assert_eq!(diff.changes[0].path, "/a~1b");
    }
}
