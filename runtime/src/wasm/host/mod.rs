//! What the runtime provides to providers: the per-instance store data and one
//! submodule per `tenet:host` interface. Every host function checks the caller's grants;
//! a refusal is a typed WIT error the guest can handle and is logged naming provider,
//! resource, operation and capability. Guest-controlled sizes have named limits.

mod exec;
mod fs_ext;
mod http;
mod log;

use crate::manifest::Limits;
use crate::provider::Operation;
use crate::wasm::grants::{Capabilities, Denied, Mode};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

/// Longest log message kept; longer ones are truncated (one message must not be megabytes).
pub const MAX_LOG_MESSAGE_BYTES: usize = 4 * 1024;
/// Longest path accepted by an `fs-ext` call (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most refusals remembered per call for the error report (each is also logged); a
/// provider retrying a denied call in a loop must not grow the list without bound.
pub const MAX_DENIALS_KEPT: usize = 8;
/// Most table elements of one instance, all tables together: tables hold function
/// references, a few thousand at most in real components; the cap keeps a hostile
/// `table.grow` from eating host memory.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// `text` cut to at most `limit` bytes on a character boundary, marked as truncated.
/// For guest-supplied strings that are printed or stored.
pub fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("… (truncated)");
    }
    text
}

/// The memory a provider instance may use, summed over all its linear memories (a
/// component has several core instances, each of which may have its own). Exceeding it
/// traps with a message naming the limit.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: usize,
    /// Table elements in all the instance's tables together.
    table_elements: usize,
    /// The budget this instance shares with every other instance of its provider.
    shared: Arc<SharedMemory>,
}

/// The linear memory all instances of one provider hold together (`memory_total`):
/// pooled instances keep their memory between calls, so without it one provider could
/// hold `parallelism × memory`. Growth past it is refused, failing the call that asked.
#[derive(Debug)]
pub struct SharedMemory {
    provider: String,
    limit: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl SharedMemory {
    pub fn new(provider: &str, limit: u64) -> Arc<SharedMemory> {
        Arc::new(SharedMemory {
            provider: provider.to_owned(),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Bytes held by all instances now.
    pub fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reserve `bytes` more, if they fit.
    fn reserve(&self, bytes: usize) -> Result<(), usize> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(drop)
    }

    fn release(&self, bytes: usize) {
        use std::sync::atomic::Ordering;
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

impl MemoryBudget {
    /// Linear memory this instance holds.
    pub fn used(&self) -> usize {
        self.used
    }
}

impl Drop for MemoryBudget {
    fn drop(&mut self) {
        // The instance's memory goes with its store.
        self.shared.release(self.used);
    }
}

impl wasmtime::ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            return Err(wasmtime::format_err!(
                "memory limit exceeded: the provider asked for {} MiB in all, its limit is {} MiB",
                total / (1024 * 1024),
                self.limit / (1024 * 1024)
            ));
        }
        let more = desired.saturating_sub(current);
        if let Err(held) = self.shared.reserve(more) {
            return Err(wasmtime::format_err!(
                "memory budget exceeded: provider `{}` holds {} MiB in all its instances and this one asked for {} MiB more; its budget (`limits.memory_total`) is {} MiB",
                self.shared.provider,
                held / (1024 * 1024),
                more.div_ceil(1024 * 1024),
                self.shared.limit / (1024 * 1024)
            ));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Summed over all tables, like memory: 64 tables of the maximum each must not
        // add up to half a gigabyte outside the memory limit.
        let total = self
            .table_elements
            .saturating_sub(current)
            .saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        // A component holds several core instances (the guest, adapters, shims).
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

/// What [`HostState::flush_stdio`] found.
#[derive(Debug, Clone, Copy)]
pub struct Stdio {
    /// Whether the instance may serve more calls.
    pub keep: bool,
    /// The stream the call filled, if any: the call exceeded the output limit.
    pub overflow: Option<&'static str>,
}

/// Which call an instance is serving; tags logs and denials.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub resource: String,
    pub operation: Operation,
    /// When the call's deadline passes; host calls that wait (exec) stop by then.
    pub deadline: Instant,
}

/// A refusal by the sandbox during one call.
#[derive(Debug, Clone)]
pub struct Denial {
    /// `fs write`, `exec`, `net`, `env`, …
    pub capability: &'static str,
    pub message: String,
    /// Whether the provider tried to change the system while it may only look (a
    /// mutation during `read` or `diff`): a provider defect, whatever it does next.
    pub mutation_during_plan: bool,
}

/// The denials of one call: the first [`MAX_DENIALS_KEPT`] kept (and logged), the rest
/// counted, and the first attempted mutation during a plan remembered whatever its place.
#[derive(Debug, Default)]
pub struct Denials {
    pub kept: Vec<Denial>,
    pub dropped: usize,
    /// The first refusal that was an attempt to change the system during `read`/`diff`.
    pub mutation: Option<String>,
}

impl Denials {
    pub(crate) fn record(&mut self, provider: &str, call: &CallInfo, mut denial: Denial) {
        denial.message = truncate(denial.message, MAX_LOG_MESSAGE_BYTES);
        if denial.mutation_during_plan && self.mutation.is_none() {
            self.mutation = Some(denial.message.clone());
        }
        if self.kept.len() < MAX_DENIALS_KEPT {
            // Logged only while kept: a loop of refused calls must not flood the log.
            tracing::warn!(
                provider,
                resource = %call.resource,
                operation = %call.operation,
                capability = denial.capability,
                "denied: {}",
                denial.message
            );
            self.kept.push(denial);
        } else {
            self.dropped += 1;
        }
    }

    /// Fold another list (the HTTP hooks') into this one.
    fn absorb(&mut self, other: Denials) {
        if self.mutation.is_none() {
            self.mutation = other.mutation;
        }
        for d in other.kept {
            if self.kept.len() < MAX_DENIALS_KEPT {
                self.kept.push(d);
            } else {
                self.dropped += 1;
            }
        }
        self.dropped += other.dropped;
    }
}

/// The guest-visible text of a denial: what was refused, naming the provider, resource,
/// operation and capability.
fn denial_text(what: &str, denied: &Denied, call: &CallInfo, capability: &str) -> String {
    format!(
        "{what}: {denied} (resource `{}`, operation {}, capability {capability})",
        call.resource, call.operation
    )
}

/// The data of one provider instance's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: http::Hooks,
    table: ResourceTable,
    pub(crate) limits: MemoryBudget,
    config: Limits,
    grants: Arc<Capabilities>,
    mode: Mode,
    pub(crate) call: CallInfo,
    denials: Denials,
    logs_this_call: u32,
    pub(crate) logs_dropped: u32,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    stdout_seen: usize,
    stderr_seen: usize,
}

impl HostState {
    pub fn new(
        grants: Arc<Capabilities>,
        mode: Mode,
        config: Limits,
        shared: Arc<SharedMemory>,
    ) -> std::io::Result<Self> {
        let output = usize::try_from(config.output_bytes).unwrap_or(usize::MAX);
        let stdout = MemoryOutputPipe::new(output);
        let stderr = MemoryOutputPipe::new(output);
        let wasi = grants.wasi_ctx(mode, stdout.clone(), stderr.clone())?;
        let limits = MemoryBudget {
            limit: usize::try_from(config.memory_bytes).unwrap_or(usize::MAX),
            used: 0,
            table_elements: 0,
            shared,
        };
        let call = CallInfo {
            resource: String::new(),
            operation: Operation::Describe,
            deadline: Instant::now() + config.call_timeout,
        };
        Ok(HostState {
            wasi,
            http: WasiHttpCtx::new(),
            http_hooks: http::Hooks::new(grants.clone(), mode, call.clone()),
            table: ResourceTable::new(),
            limits,
            config,
            grants,
            mode,
            call,
            denials: Denials::default(),
            logs_this_call: 0,
            logs_dropped: 0,
            stdout,
            stderr,
            stdout_seen: 0,
            stderr_seen: 0,
        })
    }

    pub fn provider(&self) -> &str {
        self.grants.provider()
    }

    /// Prepare for a new call.
    pub fn begin_call(&mut self, resource: &str, operation: Operation) {
        self.call = CallInfo {
            resource: resource.to_owned(),
            operation,
            deadline: Instant::now() + self.config.call_timeout,
        };
        self.http_hooks.begin_call(self.call.clone());
        self.denials = Denials::default();
        self.logs_this_call = 0;
        self.logs_dropped = 0;
    }

    /// Record a refusal (logged now, reported with the call's result) and return the
    /// text the guest gets.
    fn deny(
        &mut self,
        what: &str,
        denied: &Denied,
        capability: &'static str,
        mutation: bool,
    ) -> String {
        let message = denial_text(what, denied, &self.call, capability);
        let provider = self.grants.provider().to_owned();
        self.denials.record(
            &provider,
            &self.call,
            Denial {
                capability,
                message: message.clone(),
                mutation_during_plan: mutation && self.mode == Mode::ReadOnly,
            },
        );
        message
    }

    /// The refusals of the call that just ended (host calls and outgoing HTTP).
    pub fn take_denials(&mut self) -> Denials {
        let mut all = std::mem::take(&mut self.denials);
        all.absorb(self.http_hooks.take_denials());
        if all.dropped > 0 {
            tracing::warn!(
                provider = %self.grants.provider(),
                resource = %self.call.resource,
                operation = %self.call.operation,
                "{} more refusals not logged (limit {MAX_DENIALS_KEPT} per call)",
                all.dropped
            );
        }
        all
    }

    /// The most log lines one call may emit (`limits.log_lines`).
    pub fn log_lines(&self) -> u32 {
        self.config.log_lines
    }
    /// What the guest wrote to stderr since the last flush (a panic message, typically).
    pub fn unread_stderr(&self) -> String {
        let bytes = self.stderr.contents();
        String::from_utf8_lossy(bytes.get(self.stderr_seen..).unwrap_or_default()).into_owned()
    }

    /// Emit what the guest wrote to stdout/stderr since the last call as log events.
    ///
    /// The buffers live as long as the instance. An instance whose buffer is half full
    /// is retired (so each call starts with at least half the `output` limit free), and
    /// a call that fills a buffer has written more than a call may: it fails.
    pub fn flush_stdio(&mut self) -> Stdio {
        let mut result = Stdio {
            keep: true,
            overflow: None,
        };
        for (pipe, seen, stream) in [
            (&self.stdout, &mut self.stdout_seen, "stdout"),
            (&self.stderr, &mut self.stderr_seen, "stderr"),
        ] {
            let bytes = pipe.contents();
            if bytes.len() > *seen {
                let text = String::from_utf8_lossy(&bytes[*seen..]);
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                let max = usize::try_from(self.config.log_lines).unwrap_or(usize::MAX);
                if lines.len() > max {
                    tracing::warn!(
                        provider = %self.grants.provider(),
                        resource = %self.call.resource,
                        stream,
                        "{} lines of output dropped (limit {max} per call)",
                        lines.len() - max
                    );
                }
                for line in lines.into_iter().take(max) {
                    tracing::info!(
                        provider = %self.grants.provider(),
                        resource = %self.call.resource,
                        operation = %self.call.operation,
                        stream,
                        "{line}"
                    );
                }
                *seen = bytes.len();
            }
            let used = bytes.len() as u64;
            result.keep &= used < self.config.output_bytes / 2;
            if used >= self.config.output_bytes {
                result.overflow = Some(stream);
            }
        }
        result
    }

    /// The message for a call that filled its output buffer.
    pub fn overflow_message(&self, stream: &str) -> String {
        format!(
            "output limit exceeded: the provider wrote more than {} to {stream} (limits.output is {}; a call may use half of it)",
            bytesize::ByteSize::b(self.config.output_bytes / 2)
                .display()
                .iec(),
            bytesize::ByteSize::b(self.config.output_bytes)
                .display()
                .iec()
        )
    }
}

/// `tenet:provider/types` holds only types; the world imports it implicitly.
impl crate::wasm::bindings::tenet::provider::types::Host for HostState {}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    fn instance(shared: &Arc<SharedMemory>) -> MemoryBudget {
        MemoryBudget {
            limit: 64 << 20,
            used: 0,
            table_elements: 0,
            shared: shared.clone(),
        }
    }

    #[test]
    fn instances_share_one_budget_and_return_it_when_dropped() {
        let shared = SharedMemory::new("p", 100 << 20);
        let mut a = instance(&shared);
        let mut b = instance(&shared);
        assert!(a.memory_growing(0, 60 << 20, None).expect("fits"));
        let refused = b
            .memory_growing(0, 60 << 20, None)
            .expect_err("over the budget");
        assert!(
            refused
                .to_string()
                .contains("memory budget exceeded: provider `p` holds 60 MiB"),
            "{refused}"
        );
        assert!(b.memory_growing(0, 40 << 20, None).expect("fits"));
        assert_eq!(shared.used(), 100 << 20);
        // Growing one memory counts only the growth; the per-instance cap still holds.
        assert!(
            a.memory_growing(60 << 20, 70 << 20, None).is_err(),
            "budget"
        );
        drop(a);
        assert_eq!(shared.used(), 40 << 20);
        let mut c = instance(&shared);
        assert!(c.memory_growing(0, 60 << 20, None).expect("returned"));
        assert!(
            c.memory_growing(60 << 20, 65 << 20, None).is_err(),
            "instance cap"
        );
    }
}
