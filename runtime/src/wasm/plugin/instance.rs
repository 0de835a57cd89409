//! A loaded Wasm provider: pools of instances (one pool per access mode, since the WASI
//! context — and so what the guest may write — is fixed per instance), per-call deadline
//! and memory cap, trap isolation, and the conversion between WIT and engine types.
//!
//! A call takes an instance from the pool (or instantiates one from the `InstancePre`),
//! runs under an epoch deadline and a tokio timeout, and returns the instance to the
//! pool only if the call completed: a trapped or timed-out instance is dropped, never
//! reused.

use crate::manifest::Limits;
use crate::provider::{
    Action, CallContext, Diff, ErrorKind, Execution, FieldChange, KindInfo, Operation,
    PropertyDiagnostic, Provider, ProviderError, ProviderInfo,
};
use crate::wasm::bindings::{self, tenet::provider::types as wit};
use crate::wasm::grants::{self, Capabilities, Mode};
use crate::wasm::host::{Denials, HostState};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::component::InstancePre;
use wasmtime::{Store, Trap};

/// Largest JSON document (state, diff value, schema) accepted from a provider. The
/// guest's memory cap bounds what it can build; this bounds what the host keeps, stores
/// and prints.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Most diagnostics accepted from one `validate` call, and field changes from one `diff`.
pub const MAX_ITEMS: usize = 10_000;
/// How much later than the epoch deadline the backstop timer fires: long enough for the
/// epoch ticker to interrupt guest code first (many ticks, even on a loaded machine),
/// short enough not to matter.
const TIMER_GRACE: std::time::Duration = std::time::Duration::from_millis(250);
/// Most idle instances kept per access mode: enough for the default parallelism and
/// then some, so a busy run reuses instances instead of instantiating per call; a Rust
/// provider instance costs about 1–2 MiB.
const MAX_POOLED: usize = 32;
/// Most resources in one `batch.read-many` call: a batch shares one call deadline and
/// its documents travel together, so a plan of thousands is read in several calls.
pub const MAX_BATCH: usize = 256;
/// Longest message kept from a provider (errors, diagnostics): messages are printed and
/// stored in plans, and one must not be megabytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// `text` cut to [`MAX_MESSAGE_BYTES`].
fn bounded(text: String) -> String {
    crate::wasm::host::truncate(text, MAX_MESSAGE_BYTES)
}

/// A finished call's result and the sandbox's refusals during it.
struct Called<T> {
    value: T,
    denials: Denials,
}

/// Add the sandbox's refusals to an error: whatever the provider made of a denial, the
/// operator learns which capability was refused. A provider error after a denial is
/// reported as a capability denial.
fn with_denials(err: &mut ProviderError, denials: &Denials) {
    if denials.kept.is_empty() {
        return;
    }
    let list: Vec<&str> = denials.kept.iter().map(|d| d.message.as_str()).collect();
    let mut text = format!("; the sandbox refused: {}", list.join("; "));
    if denials.dropped > 0 {
        text.push_str(&format!(" (and {} more)", denials.dropped));
    }
    err.message = bounded(format!("{}{text}", err.message));
    if !matches!(err.kind, ErrorKind::Timeout | ErrorKind::Trap) {
        err.kind = ErrorKind::CapabilityDenied;
    }
}

/// A guest call borrowing its instance, boxed so it can run on its own task.
type GuestFuture<'a, T> = Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// The boxed call `WasmProvider::call` runs: `guest_call!(call_read(&kind, &props))` calls
/// that export on the instance it is handed. Arguments are captured by move.
macro_rules! guest_call {
    ($method:ident($($arg:expr),*)) => {
        move |i: &mut Instance| -> GuestFuture<'_, _> {
            Box::pin(async move { i.exports.$method(&mut i.store, $($arg),*).await })
        }
    };
}

/// What a provider exports, looked up once per load.
pub(super) struct Exports {
    pub pre: InstancePre<HostState>,
    pub resources: bindings::resources::GuestIndices,
    /// `None` for providers built against tenet:provider 0.1.0.
    pub caps: Option<bindings::caps::GuestIndices>,
    /// `None` for providers built against tenet:provider 0.1.0 or 0.1.1.
    pub batch: Option<bindings::batch::GuestIndices>,
    pub execution: Option<bindings::execution::GuestIndices>,
}

struct Instance {
    store: Store<HostState>,
    exports: bindings::resources::Guest,
    caps: Option<bindings::caps::Guest>,
    batch: Option<bindings::batch::Guest>,
    execution: Option<bindings::execution::Guest>,
    /// The read-only generation it was made in (see `WasmProvider::ro_generation`).
    generation: u64,
}

/// A provider running as a Wasm component.
pub struct WasmProvider {
    name: String,
    source: String,
    sha256: String,
    exports: Exports,
    grants: Arc<Capabilities>,
    limits: Limits,
    info: ProviderInfo,
    requested: grants::Requested,
    /// What it declared about how it runs (checked at load).
    execution: Execution,
    /// The kinds' schemas, compiled: outputs are checked against them.
    validators: BTreeMap<String, jsonschema::Validator>,
    /// Idle instances: `[read-only, read-write]`.
    pools: [Mutex<Vec<Instance>>; 2],
    /// Bumped whenever a read-write instance is made; read-only instances from an older
    /// generation are not pooled again.
    ro_generation: AtomicU64,
    /// Linear memory of all its instances together, against `limits.memory_total`.
    memory: Arc<crate::wasm::host::SharedMemory>,
    /// Runs at full rate while a call of this provider is in flight.
    ticker: Arc<super::ticker::Ticker>,
}

/// An instance whose memory grew past this share of its cap (`limits.memory`) is
/// dropped after its call instead of pooled: linear memory never shrinks, so a pooled
/// instance that once needed much would hold it for the rest of the run.
const RETIRE_ABOVE_SHARE_OF_CAP: u64 = 4;

impl WasmProvider {
    pub(super) fn new(
        name: String,
        source: String,
        sha256: String,
        exports: Exports,
        grants: Arc<Capabilities>,
        limits: Limits,
        ticker: Arc<super::ticker::Ticker>,
    ) -> Self {
        WasmProvider {
            ticker,
            memory: crate::wasm::host::SharedMemory::new(&name, limits.memory_total_bytes),
            info: ProviderInfo {
                name: name.clone(),
                version: String::new(),
                description: String::new(),
                kinds: BTreeMap::new(),
            },
            name,
            source,
            sha256,
            exports,
            grants,
            limits,
            requested: grants::Requested::default(),
            execution: Execution::default(),
            validators: BTreeMap::new(),
            pools: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
            ro_generation: AtomicU64::new(0),
        }
    }

    /// What `describe` said, what the provider requested, and its kinds' schemas
    /// (compiled once, when they were checked at load).
    pub(super) fn with_info(
        mut self,
        info: ProviderInfo,
        requested: grants::Requested,
        execution: Execution,
        validators: BTreeMap<String, jsonschema::Validator>,
    ) -> Self {
        self.validators = validators;
        self.info = info;
        self.requested = requested;
        self.execution = execution;
        self
    }

    /// Ask the provider how it wants to run (`execution.settings`) and check every
    /// value against what the host allows; nothing declared for a provider built
    /// against tenet:provider 0.1.0 or 0.1.1. `kinds` are the kinds `describe` returned.
    pub(super) async fn fetch_execution(
        &self,
        kinds: &BTreeMap<String, KindInfo>,
    ) -> Result<Execution, ProviderError> {
        if self.exports.execution.is_none() {
            return Ok(Execution::default());
        }
        let op = Operation::Describe;
        let s = self
            .call("", op, |i: &mut Instance| -> GuestFuture<'_, _> {
                Box::pin(async move {
                    match &i.execution {
                        Some(e) => e.call_settings(&mut i.store).await.map(Some),
                        None => Ok(None),
                    }
                })
            })
            .await?
            .value;
        let Some(s) = s else {
            return Ok(Execution::default());
        };
        let refuse = |message: String| {
            self.error(
                "",
                op,
                ErrorKind::Protocol,
                bounded(format!("execution.settings: {message}")),
            )
        };
        if s.locks.len() > crate::manifest::MAX_LOCKS || s.batched_kinds.len() > super::MAX_KINDS {
            return Err(refuse(format!(
                "more than {} locks or {} batched kinds",
                crate::manifest::MAX_LOCKS,
                super::MAX_KINDS
            )));
        }
        if s.max_concurrency == Some(0) {
            return Err(refuse("max-concurrency 0 would never run anything".into()));
        }
        for lock in &s.locks {
            if let Some(problem) = crate::manifest::lock_name_problem(lock) {
                return Err(refuse(problem));
            }
        }
        for kind in &s.batched_kinds {
            if !kinds.contains_key(kind) {
                return Err(refuse(format!(
                    "batched kind `{}` is not one of its kinds",
                    crate::wasm::host::truncate(kind.clone(), 64)
                )));
            }
        }
        grants::check_fixed_env(&s.fixed_env).map_err(refuse)?;
        Ok(Execution {
            max_concurrency: s.max_concurrency.map(|n| n as usize),
            locks: s.locks,
            fixed_env: s.fixed_env,
            batched_kinds: s.batched_kinds.into_iter().collect(),
        })
    }

    /// One `batch.read-many` call for `ids`/`props` (at most [`MAX_BATCH`]), one result
    /// each; a failure of the whole call is every resource's error.
    async fn read_batch(
        &self,
        ids: &[&str],
        kind: &str,
        props: &[Value],
    ) -> Vec<Result<Option<Value>, ProviderError>> {
        let op = Operation::Read;
        let label = match ids {
            [one] => (*one).to_owned(),
            [first, rest @ ..] => format!("{first} and {} more", rest.len()),
            [] => return Vec::new(),
        };
        let texts: Vec<String> = props.iter().map(Value::to_string).collect();
        let kind_arg = kind.to_owned();
        let called = self
            .call(&label, op, |i: &mut Instance| -> GuestFuture<'_, _> {
                Box::pin(async move {
                    match &i.batch {
                        Some(b) => b
                            .call_read_many(&mut i.store, &kind_arg, &texts)
                            .await
                            .map(Some),
                        None => Ok(None),
                    }
                })
            })
            .await;
        let for_each = |e: ProviderError| -> Vec<Result<Option<Value>, ProviderError>> {
            ids.iter()
                .map(|id| {
                    Err(ProviderError {
                        resource: (*id).to_owned(),
                        ..e.clone()
                    })
                })
                .collect()
        };
        let (value, denials) = match called {
            Ok(Called {
                value: Some(v),
                denials,
            }) => (v, denials),
            Ok(Called { value: None, .. }) => {
                return for_each(self.error(
                    &label,
                    op,
                    ErrorKind::Host,
                    "the provider does not export batch reads".into(),
                ));
            }
            Err(e) => return for_each(e),
        };
        let states = match value {
            Ok(states) => states,
            Err(e) => return for_each(self.guest_error(&label, op, e, &denials)),
        };
        if states.len() != ids.len() {
            return for_each(self.error(
                &label,
                op,
                ErrorKind::Protocol,
                format!(
                    "read-many returned {} states for {} resources",
                    states.len(),
                    ids.len()
                ),
            ));
        }
        ids.iter()
            .zip(states)
            .map(|(id, state)| match state {
                Ok(Some(text)) => self.observed(id, kind, &text).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(self.guest_error(id, op, e, &denials)),
            })
            .collect()
    }

    /// Contract check: a state the provider returns must match its kind's schema.
    fn check_schema(
        &self,
        resource: &str,
        operation: Operation,
        kind: &str,
        what: &str,
        state: &Value,
    ) -> Result<(), ProviderError> {
        let Some(validator) = self.validators.get(kind) else {
            return Ok(());
        };
        let problems: Vec<String> = validator
            .iter_errors(state)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { &at })
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(self.error(
            resource,
            operation,
            ErrorKind::Protocol,
            bounded(format!(
                "{what} does not match the schema of kind `{kind}`: {}",
                problems.join("; ")
            )),
        ))
    }

    /// Ask the provider what it needs (`capabilities.requested`); empty for a provider
    /// built against tenet:provider 0.1.0.
    pub(super) async fn fetch_requested(&self) -> Result<grants::Requested, ProviderError> {
        if self.exports.caps.is_none() {
            return Ok(grants::Requested::default());
        }
        let op = Operation::Describe;
        let r = self
            .call("", op, |i: &mut Instance| -> GuestFuture<'_, _> {
                Box::pin(async move {
                    match &i.caps {
                        Some(c) => c.call_requested(&mut i.store).await.map(Some),
                        None => Ok(None),
                    }
                })
            })
            .await?
            .value;
        let Some(r) = r else {
            return Ok(grants::Requested::default());
        };
        let counts = [
            r.directories.len(),
            r.programs.len(),
            r.hosts.len(),
            r.env.len(),
        ];
        if counts.iter().any(|n| *n > super::MAX_REQUESTS) {
            return Err(self.error(
                "",
                op,
                ErrorKind::Protocol,
                format!(
                    "capabilities.requested returned more than {} entries in a list",
                    super::MAX_REQUESTS
                ),
            ));
        }
        Ok(grants::Requested {
            directories: r
                .directories
                .into_iter()
                .map(|d| grants::DirectoryRequest {
                    path: bounded(d.path),
                    write: d.write,
                    reason: bounded(d.reason),
                })
                .collect(),
            programs: r
                .programs
                .into_iter()
                .map(|p| grants::ProgramRequest {
                    program: bounded(p.program),
                    probe: p.probe,
                    reason: bounded(p.reason),
                })
                .collect(),
            hosts: r
                .hosts
                .into_iter()
                .map(|h| grants::HostRequest {
                    origin: bounded(h.origin),
                    reason: bounded(h.reason),
                })
                .collect(),
            env: r
                .env
                .into_iter()
                .map(|e| grants::EnvRequest {
                    name: bounded(e.name),
                    reason: bounded(e.reason),
                })
                .collect(),
            imports: Vec::new(),
            abi: String::new(),
        })
    }

    /// What the provider says it needs, and its capability-bearing imports.
    pub fn requested(&self) -> &grants::Requested {
        &self.requested
    }

    /// Where the component came from (`builtin:file` or a path).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// sha256 of the component bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.grants
    }

    fn error(
        &self,
        resource: &str,
        operation: Operation,
        kind: ErrorKind,
        message: String,
    ) -> ProviderError {
        ProviderError {
            provider: self.name.clone(),
            resource: resource.to_owned(),
            operation,
            kind,
            message,
        }
    }

    fn mode(operation: Operation) -> Mode {
        if operation.mutates() {
            Mode::ReadWrite
        } else {
            Mode::ReadOnly
        }
    }

    /// Linear memory held by idle instances, in both pools.
    fn pooled_bytes(&self) -> usize {
        self.pools
            .iter()
            .filter_map(|p| p.lock().ok())
            .map(|p| {
                p.iter()
                    .map(|i| i.store.data().limits.used())
                    .sum::<usize>()
            })
            .sum()
    }

    fn pool(&self, mode: Mode) -> &Mutex<Vec<Instance>> {
        &self.pools[usize::from(mode == Mode::ReadWrite)]
    }

    fn deadline_ticks(&self) -> u64 {
        let ticks = self.limits.call_timeout.as_millis() / super::EPOCH_TICK.as_millis().max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// An idle instance for `operation`'s mode, or a new one.
    async fn checkout(
        &self,
        resource: &str,
        operation: Operation,
    ) -> Result<Instance, ProviderError> {
        let mode = Self::mode(operation);
        let pooled = self.pool(mode).lock().ok().and_then(|mut p| p.pop());
        let mut inst = match pooled {
            Some(i) => i,
            None => {
                // Read before the context is built: a read-write build in between makes
                // this instance's generation stale, never a stale one look current.
                let generation = self.ro_generation.load(Ordering::SeqCst);
                let state =
                    HostState::new(self.grants.clone(), mode, self.limits, self.memory.clone())
                        .map_err(|e| {
                            self.error(resource, operation, ErrorKind::Host, e.to_string())
                        })?;
                let mut store = Store::new(self.exports.pre.engine(), state);
                store.limiter(|s| &mut s.limits);
                store.epoch_deadline_trap();
                store.set_epoch_deadline(self.deadline_ticks());
                let loaded = async {
                    let instance = self.exports.pre.instantiate_async(&mut store).await?;
                    let exports = self.exports.resources.load(&mut store, &instance)?;
                    let caps = match &self.exports.caps {
                        Some(c) => Some(c.load(&mut store, &instance)?),
                        None => None,
                    };
                    let batch = match &self.exports.batch {
                        Some(b) => Some(b.load(&mut store, &instance)?),
                        None => None,
                    };
                    let execution = match &self.exports.execution {
                        Some(e) => Some(e.load(&mut store, &instance)?),
                        None => None,
                    };
                    wasmtime::Result::Ok((exports, caps, batch, execution))
                };
                let (exports, caps, batch, execution) = match loaded.await {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        let stderr = store.data().unread_stderr();
                        return Err(self.failure(
                            resource,
                            operation,
                            &e,
                            &stderr,
                            "instantiating",
                        ));
                    }
                };
                if mode == Mode::ReadWrite {
                    // A writable context may have just created granted directories that
                    // read-only instances made before still see as empty stand-ins:
                    // retire them, idle or busy.
                    self.ro_generation.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut ro) = self.pool(Mode::ReadOnly).lock() {
                        ro.clear();
                    }
                }
                Instance {
                    store,
                    exports,
                    caps,
                    batch,
                    execution,
                    generation,
                }
            }
        };
        inst.store.data_mut().begin_call(resource, operation);
        inst.store.set_epoch_deadline(self.deadline_ticks());
        Ok(inst)
    }

    /// Run `f` on `inst` on a thread of its own under the call deadline. WASI file I/O
    /// runs on that thread (one hop per call, not one per file operation); a guest stuck
    /// inside a host call holds only that thread, and the deadline still fires for the
    /// caller. Such an instance is never seen again: when it next runs guest code its
    /// epoch deadline (already passed) traps it, so it cannot go on changing the system.
    async fn call<T, F>(
        &self,
        resource: &str,
        operation: Operation,
        f: F,
    ) -> Result<Called<T>, ProviderError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Instance) -> GuestFuture<'a, T> + Send + 'static,
    {
        // From before the instance (instantiation runs guest code) until the guest is
        // done or given up on (an abandoned call keeps it: its deadline must still fire).
        let active = self.ticker.enter();
        let mut inst = self.checkout(resource, operation).await?;
        // On the blocking pool: a guest stuck in file I/O holds a pool thread, never one
        // of the runtime's workers, so timers, other calls and Ctrl-C keep running.
        let runtime = tokio::runtime::Handle::current();
        // Dropped when this call gives up on the guest (the backstop fired, or the caller
        // went away): the guest's future is dropped where it waits in the host, so no
        // abandoned call lingers on the pool — none is left to fail when the runtime shuts
        // down — and the instance goes with it.
        let (_give_up, gave_up) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::task::spawn_blocking(move || {
            let _active = active;
            runtime.block_on(async move {
                tokio::select! {
                    result = f(&mut inst) => Some((inst, result)),
                    _ = gave_up => None,
                }
            })
        });
        // Guest code is stopped by the epoch deadline; this timer is the backstop for a
        // call blocked inside the host, so it fires a little later.
        let backstop = self.limits.call_timeout + TIMER_GRACE;
        match tokio::time::timeout(backstop, task).await {
            Err(_) => Err(self.error(
                resource,
                operation,
                ErrorKind::Timeout,
                format!(
                    "did not finish within {} (blocked in a host call)",
                    humantime::format_duration(self.limits.call_timeout)
                ),
            )),
            Ok(Err(join)) => Err(self.error(
                resource,
                operation,
                ErrorKind::Host,
                format!("the call's task failed: {join}"),
            )),
            Ok(Ok(Some((inst, result)))) => self.checkin(inst, resource, operation, result),
            // Only once this call stopped waiting for the task; kept total for the types.
            Ok(Ok(None)) => Err(self.error(
                resource,
                operation,
                ErrorKind::Host,
                "the call was abandoned".to_owned(),
            )),
        }
    }

    /// Finish a call: keep a healthy instance, drop a trapped one, and map the failure to
    /// an error naming provider, resource and operation.
    fn checkin<T>(
        &self,
        mut inst: Instance,
        resource: &str,
        operation: Operation,
        result: wasmtime::Result<T>,
    ) -> Result<Called<T>, ProviderError> {
        let denials = inst.store.data_mut().take_denials();
        match result {
            Err(e) => {
                let data = inst.store.data_mut();
                let stderr = data.unread_stderr();
                let mut err = match data.flush_stdio().overflow {
                    // Writing past a full buffer traps inside WASI; say which limit it was.
                    Some(stream) => self.error(
                        resource,
                        operation,
                        ErrorKind::Protocol,
                        data.overflow_message(stream),
                    ),
                    None => self.failure(resource, operation, &e, &stderr, "running"),
                };
                with_denials(&mut err, &denials);
                Err(err)
            }
            Ok(value) => {
                let data = inst.store.data_mut();
                if data.logs_dropped > 0 {
                    tracing::warn!(
                        provider = %self.name,
                        resource,
                        %operation,
                        "{} log messages dropped (limit {} per call)",
                        data.logs_dropped,
                        data.log_lines()
                    );
                }
                // An attempt to change the system during a read or diff is a defect of
                // the provider even when it carries on as if nothing happened: the plan
                // it contributes to cannot be trusted.
                if let Some(attempt) = &denials.mutation {
                    return Err(self.error(
                        resource,
                        operation,
                        ErrorKind::CapabilityDenied,
                        bounded(format!(
                            "provider defect: it tried to change the system during {operation}, which may only look: {attempt}"
                        )),
                    ));
                }
                let mode = Self::mode(operation);
                let current = mode == Mode::ReadWrite
                    || inst.generation == self.ro_generation.load(Ordering::SeqCst);
                let data = inst.store.data_mut();
                let stdio = data.flush_stdio();
                if let Some(stream) = stdio.overflow {
                    return Err(self.error(
                        resource,
                        operation,
                        ErrorKind::Protocol,
                        data.overflow_message(stream),
                    ));
                }
                let held = inst.store.data().limits.used();
                let small = held as u64 <= self.limits.memory_bytes / RETIRE_ABOVE_SHARE_OF_CAP;
                // Idle instances never take more than half the budget: the rest is for
                // calls that run.
                let room = self.pooled_bytes() + held
                    <= usize::try_from(self.limits.memory_total_bytes / 2).unwrap_or(usize::MAX);
                if stdio.keep
                    && current
                    && small
                    && room
                    && let Ok(mut pool) = self.pool(mode).lock()
                    && pool.len() < MAX_POOLED
                {
                    pool.push(inst);
                }
                Ok(Called { value, denials })
            }
        }
    }

    /// A trap (or interrupt) while instantiating or running a call.
    fn failure(
        &self,
        resource: &str,
        operation: Operation,
        e: &wasmtime::Error,
        stderr: &str,
        doing: &str,
    ) -> ProviderError {
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            let timeout = humantime::format_duration(self.limits.call_timeout);
            return self.error(
                resource,
                operation,
                ErrorKind::Timeout,
                format!("did not finish within {timeout} (interrupted)"),
            );
        }
        // A trap's message is enough; the wasm backtrace (frames of an unnamed guest
        // function, often hundreds deep after a recursion) is left to debug logs.
        let mut message = match e.downcast_ref::<Trap>() {
            Some(trap) => {
                tracing::debug!(provider = %self.name, resource, %operation, "trap: {e:?}");
                trap.to_string()
            }
            // The host's own refusal (a limiter's message) under a wasm backtrace.
            None if e.downcast_ref::<wasmtime::WasmBacktrace>().is_some() => {
                tracing::debug!(provider = %self.name, resource, %operation, "{e:?}");
                e.root_cause().to_string()
            }
            None => format!("{e:#}"),
        };
        if doing != "running" {
            message = format!("while {doing}: {message}");
        }
        if !stderr.trim().is_empty() {
            message.push_str(&format!("; provider stderr: {}", stderr.trim()));
        }
        self.error(resource, operation, ErrorKind::Trap, bounded(message))
    }

    fn guest_error(
        &self,
        resource: &str,
        operation: Operation,
        e: wit::Error,
        denials: &Denials,
    ) -> ProviderError {
        let (kind, message) = match e {
            wit::Error::InvalidInput(m) => (ErrorKind::InvalidInput, m),
            wit::Error::NotFound(m) => (ErrorKind::NotFound, m),
            wit::Error::Conflict(m) => (ErrorKind::Conflict, m),
            wit::Error::CapabilityDenied(m) => (ErrorKind::CapabilityDenied, m),
            wit::Error::Transient(m) => (ErrorKind::Transient, m),
            wit::Error::Internal(m) => (ErrorKind::Internal, m),
        };
        let mut err = self.error(resource, operation, kind, bounded(message));
        with_denials(&mut err, denials);
        err
    }

    fn parse_doc(
        &self,
        resource: &str,
        operation: Operation,
        what: &str,
        text: &str,
    ) -> Result<Value, ProviderError> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(self.error(
                resource,
                operation,
                ErrorKind::Protocol,
                format!(
                    "{what} is {} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit",
                    text.len()
                ),
            ));
        }
        serde_json::from_str(text).map_err(|e| {
            self.error(
                resource,
                operation,
                ErrorKind::Protocol,
                format!("{what} is not valid JSON: {e}"),
            )
        })
    }

    /// A state `read` (or `read-many`) returned: JSON within the size limit, matching the
    /// kind's schema.
    fn observed(&self, resource: &str, kind: &str, text: &str) -> Result<Value, ProviderError> {
        let op = Operation::Read;
        let state = self.parse_doc(resource, op, "the observed state", text)?;
        self.check_schema(resource, op, kind, "the observed state", &state)?;
        Ok(state)
    }

    /// Call `describe` and convert the result.
    pub(super) async fn describe(&self) -> Result<ProviderInfo, ProviderError> {
        let op = Operation::Describe;
        let info = self.call("", op, guest_call!(call_describe())).await?.value;
        let mut kinds = BTreeMap::new();
        for k in info.kinds {
            let schema =
                self.parse_doc("", op, &format!("schema of kind `{}`", k.name), &k.schema)?;
            kinds.insert(
                k.name.clone(),
                KindInfo {
                    name: k.name,
                    description: k.description,
                    schema,
                    identity: k.identity,
                    force_new: k.force_new,
                    path_properties: k.path_properties,
                },
            );
        }
        Ok(ProviderInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            kinds,
        })
    }
}

#[async_trait::async_trait]
impl Provider for WasmProvider {
    fn info(&self) -> &ProviderInfo {
        &self.info
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
        if !self.execution.batched_kinds.contains(kind) || self.exports.batch.is_none() {
            return crate::provider::read_each(self, ids, kind, properties).await;
        }
        let mut out = Vec::with_capacity(properties.len());
        for (ids, props) in ids.chunks(MAX_BATCH).zip(properties.chunks(MAX_BATCH)) {
            out.extend(self.read_batch(ids, kind, props).await);
        }
        out
    }

    async fn validate(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        properties: &Value,
    ) -> Result<Vec<PropertyDiagnostic>, ProviderError> {
        let op = Operation::Validate;
        let props = properties.to_string();
        let kind = kind.to_owned();
        let diags = self
            .call(cx.resource, op, guest_call!(call_validate(&kind, &props)))
            .await?
            .value;
        if diags.len() > MAX_ITEMS {
            return Err(self.error(
                cx.resource,
                op,
                ErrorKind::Protocol,
                format!("{} diagnostics, over the limit of {MAX_ITEMS}", diags.len()),
            ));
        }
        Ok(diags
            .into_iter()
            .map(|d| PropertyDiagnostic {
                is_error: matches!(d.severity, wit::Severity::Error),
                path: bounded(d.path),
                message: bounded(d.message),
            })
            .collect())
    }

    async fn read(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        properties: &Value,
    ) -> Result<Option<Value>, ProviderError> {
        let op = Operation::Read;
        let props = properties.to_string();
        let kind_arg = kind.to_owned();
        let Called { value, denials } = self
            .call(cx.resource, op, guest_call!(call_read(&kind_arg, &props)))
            .await?;
        match value {
            Ok(Some(text)) => self.observed(cx.resource, kind, &text).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.guest_error(cx.resource, op, e, &denials)),
        }
    }

    async fn diff(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        desired: &Value,
        current: Option<&Value>,
    ) -> Result<Diff, ProviderError> {
        let op = Operation::Diff;
        // Contract: when the current state is exactly the desired document, there is
        // nothing to change.
        let already = current == Some(desired);
        let desired = desired.to_string();
        let current = current.map(Value::to_string);
        let kind = kind.to_owned();
        let Called { value, denials } = self
            .call(
                cx.resource,
                op,
                guest_call!(call_diff(&kind, &desired, current.as_deref())),
            )
            .await?;
        let d = match value {
            Ok(d) => d,
            Err(e) => return Err(self.guest_error(cx.resource, op, e, &denials)),
        };
        if d.changes.len() > MAX_ITEMS {
            return Err(self.error(
                cx.resource,
                op,
                ErrorKind::Protocol,
                format!(
                    "{} field changes, over the limit of {MAX_ITEMS}",
                    d.changes.len()
                ),
            ));
        }
        let action = match d.action {
            wit::Action::None => Action::None,
            wit::Action::Create => Action::Create,
            wit::Action::Update => Action::Update,
            wit::Action::Replace => Action::Replace,
            wit::Action::Delete => Action::Delete,
        };
        let mut changes = Vec::with_capacity(d.changes.len());
        for c in d.changes {
            let what = format!("the value of {}", c.path);
            let before = c
                .before
                .map(|t| self.parse_doc(cx.resource, op, &what, &t))
                .transpose()?;
            let after = c
                .after
                .map(|t| self.parse_doc(cx.resource, op, &what, &t))
                .transpose()?;
            changes.push(FieldChange {
                path: c.path,
                before,
                after,
                forces_replacement: c.forces_replacement,
            });
        }
        let violation = if (action == Action::None) != changes.is_empty() {
            Some(format!(
                "diff returned action `{action}` with {} field changes",
                changes.len()
            ))
        } else if already && action != Action::None {
            Some(format!(
                "diff returned `{action}` although the current state equals the desired properties"
            ))
        } else {
            changes.iter().find(|c| c.before == c.after).map(|c| {
                format!(
                    "diff reported a change of `{}` whose before and after are equal",
                    c.path
                )
            })
        };
        if let Some(v) = violation {
            return Err(self.error(cx.resource, op, ErrorKind::Protocol, v));
        }
        Ok(Diff { action, changes })
    }

    async fn apply(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        desired: &Value,
        current: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let op = Operation::Apply;
        let desired = desired.to_string();
        let current = current.map(Value::to_string);
        let kind_arg = kind.to_owned();
        let Called { value, denials } = self
            .call(
                cx.resource,
                op,
                guest_call!(call_apply(&kind_arg, &desired, current.as_deref())),
            )
            .await?;
        match value {
            Ok(text) => {
                let state = self.parse_doc(cx.resource, op, "the new state", &text)?;
                self.check_schema(cx.resource, op, kind, "the new state", &state)?;
                Ok(state)
            }
            Err(e) => Err(self.guest_error(cx.resource, op, e, &denials)),
        }
    }

    async fn delete(
        &self,
        cx: CallContext<'_>,
        kind: &str,
        current: &Value,
    ) -> Result<(), ProviderError> {
        let op = Operation::Delete;
        let current = current.to_string();
        let kind = kind.to_owned();
        let Called { value, denials } = self
            .call(cx.resource, op, guest_call!(call_delete(&kind, &current)))
            .await?;
        value.map_err(|e| self.guest_error(cx.resource, op, e, &denials))
    }
}
