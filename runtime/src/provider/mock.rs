//! An in-memory provider for engine tests: kind `item` with properties `name` (identity)
//! and `value`, and a computed `serial` (`<name>#<n>`, known after apply); state lives in
//! a map. Calls are recorded, and applies can be made to fail,
//! so tests can check ordering, idempotency and failure isolation without Wasm.

use super::{
    Action, CallContext, Diff, ErrorKind, Execution, FieldChange, KindInfo, Operation,
    PropertyDiagnostic, Provider, ProviderError, ProviderInfo,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct MockProvider {
    info: Option<ProviderInfo>,
    /// identity → current state.
    pub state: Mutex<BTreeMap<String, Value>>,
    /// (operation, resource id), in call order.
    pub calls: Mutex<Vec<(Operation, String)>>,
    /// Resource ids whose apply fails.
    pub fail_apply: Mutex<BTreeSet<String>>,
    /// Resource id → how many more of its applies fail with a transient error.
    pub transient_apply: Mutex<BTreeMap<String, u32>>,
    /// Resource ids whose apply reports a field (`ghost`) the system does not keep.
    pub inconsistent: Mutex<BTreeSet<String>>,
    /// What it declares (batched kinds, locks, a concurrency limit).
    pub execution: Execution,
    /// The resource ids of each `read_many` call, in call order.
    pub batches: Mutex<Vec<Vec<String>>>,
}

impl MockProvider {
    /// The mock declaring `execution`.
    pub fn with_execution(mut self, execution: Execution) -> Self {
        self.execution = execution;
        self
    }

    /// The resources `operation` was called for, in call order.
    pub fn calls_of(&self, operation: Operation) -> Vec<String> {
        self.calls
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(op, _)| *op == operation)
                    .map(|(_, id)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn new() -> Self {
        let kind = KindInfo {
            name: "item".into(),
            description: "an in-memory item".into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "value": {},
                    "serial": {"type": "string", "readOnly": true}
                },
                "required": ["name"],
                "additionalProperties": false
            }),
            identity: "name".into(),
            force_new: vec![],
            path_properties: vec![],
        };
        MockProvider {
            info: Some(ProviderInfo {
                name: "mock".into(),
                version: "0.0.0".into(),
                description: "in-memory test provider".into(),
                kinds: BTreeMap::from([("item".into(), kind)]),
            }),
            ..Default::default()
        }
    }

    fn record(&self, op: Operation, cx: CallContext<'_>) {
        if let Ok(mut c) = self.calls.lock() {
            c.push((op, cx.resource.to_owned()));
        }
    }

    fn identity(props: &Value) -> String {
        props
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn fail(&self, cx: CallContext<'_>, op: Operation, msg: &str) -> ProviderError {
        ProviderError {
            provider: "mock".into(),
            resource: cx.resource.into(),
            operation: op,
            kind: ErrorKind::Internal,
            message: msg.into(),
        }
    }
}

#[async_trait::async_trait]
impl Provider for MockProvider {
    fn info(&self) -> &ProviderInfo {
        // Set in `new`; `Default` exists only for the field initialisers.
        self.info.as_ref().unwrap_or_else(|| unreachable!())
    }

    fn execution(&self) -> &Execution {
        &self.execution
    }

    async fn read_many(
        &self,
        ids: &[&str],
        kind: &str,
        properties: &[Value],
    ) -> Vec<Result<Option<Value>, ProviderError>> {
        if !self.execution.batched_kinds.contains(kind) {
            return super::read_each(self, ids, kind, properties).await;
        }
        if let Ok(mut b) = self.batches.lock() {
            b.push(ids.iter().map(|i| (*i).to_owned()).collect());
        }
        let state = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        properties
            .iter()
            .map(|p| Ok(state.get(&Self::identity(p)).cloned()))
            .collect()
    }

    async fn validate(
        &self,
        _cx: CallContext<'_>,
        _kind: &str,
        properties: &Value,
    ) -> Result<Vec<PropertyDiagnostic>, ProviderError> {
        Ok(match properties.get("value") {
            Some(Value::String(s)) if s == "invalid" => vec![PropertyDiagnostic {
                is_error: true,
                path: "/value".into(),
                message: "`invalid` is not allowed".into(),
            }],
            _ => vec![],
        })
    }

    async fn read(
        &self,
        cx: CallContext<'_>,
        _kind: &str,
        properties: &Value,
    ) -> Result<Option<Value>, ProviderError> {
        self.record(Operation::Read, cx);
        let state = self
            .state
            .lock()
            .map_err(|_| self.fail(cx, Operation::Read, "poisoned"))?;
        Ok(state.get(&Self::identity(properties)).cloned())
    }

    async fn diff(
        &self,
        cx: CallContext<'_>,
        _kind: &str,
        desired: &Value,
        current: Option<&Value>,
    ) -> Result<Diff, ProviderError> {
        self.record(Operation::Diff, cx);
        let Some(current) = current else {
            return Ok(Diff {
                action: Action::Create,
                changes: vec![FieldChange {
                    path: "/value".into(),
                    before: None,
                    after: desired.get("value").cloned(),
                    forces_replacement: false,
                }],
            });
        };
        if current.get("value") == desired.get("value") {
            return Ok(Diff {
                action: Action::None,
                changes: vec![],
            });
        }
        Ok(Diff {
            action: Action::Update,
            changes: vec![FieldChange {
                path: "/value".into(),
                before: current.get("value").cloned(),
                after: desired.get("value").cloned(),
                forces_replacement: false,
            }],
        })
    }

    async fn apply(
        &self,
        cx: CallContext<'_>,
        _kind: &str,
        desired: &Value,
        _current: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        self.record(Operation::Apply, cx);
        let fails = self
            .fail_apply
            .lock()
            .map(|f| f.contains(cx.resource))
            .unwrap_or(false);
        if fails {
            return Err(self.fail(cx, Operation::Apply, "injected failure"));
        }
        if let Ok(mut left) = self.transient_apply.lock()
            && let Some(n) = left.get_mut(cx.resource).filter(|n| **n > 0)
        {
            *n -= 1;
            let mut e = self.fail(cx, Operation::Apply, "injected transient failure");
            e.kind = ErrorKind::Transient;
            return Err(e);
        }
        let mut state = self
            .state
            .lock()
            .map_err(|_| self.fail(cx, Operation::Apply, "poisoned"))?;
        let mut observed = desired.clone();
        if let Some(map) = observed.as_object_mut() {
            let n = state.len() + 1;
            map.insert(
                "serial".into(),
                json!(format!("{}#{n}", Self::identity(desired))),
            );
        }
        state.insert(Self::identity(desired), observed.clone());
        let lies = self
            .inconsistent
            .lock()
            .map(|f| f.contains(cx.resource))
            .unwrap_or(false);
        if lies && let Some(map) = observed.as_object_mut() {
            map.insert("ghost".into(), json!(true));
        }
        Ok(observed)
    }

    async fn delete(
        &self,
        cx: CallContext<'_>,
        _kind: &str,
        current: &Value,
    ) -> Result<(), ProviderError> {
        self.record(Operation::Delete, cx);
        let mut state = self
            .state
            .lock()
            .map_err(|_| self.fail(cx, Operation::Delete, "poisoned"))?;
        state.remove(&Self::identity(current));
        Ok(())
    }
}
