//! What the runtime provides to providers: the per-instance store data and one
//! submodule per `tenet:host` interface. Every host function checks the caller's grants;
//! a refusal is a typed WIT error the guest can handle and is logged naming provider,
//! resource, operation and capability. Guest-controlled sizes have named limits.

mod fs_ext;
mod log;

use crate::grants::{FsGrants, Mode};
use crate::provider::Operation;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most log messages one call may emit. A chatty or looping provider must not flood the
/// operator's terminal or log store; the rest are counted and reported as dropped.
pub const MAX_LOG_LINES_PER_CALL: u32 = 1_000;
/// Longest log message kept; longer ones are truncated (one message must not be megabytes).
pub const MAX_LOG_MESSAGE_BYTES: usize = 4 * 1024;
/// Captured stdout/stderr per instance. A provider that writes more gets a closed stream
/// and its instance is retired, so the buffer cannot grow without bound.
pub const MAX_STDIO_BYTES: usize = 256 * 1024;
/// Longest path accepted by an `fs-ext` call (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most lines of captured stdout/stderr turned into log events per call (they count
/// apart from `tenet:host/log` messages; the byte cap above bounds them too).
pub const MAX_STDIO_LINES_PER_CALL: usize = 1_000;
/// Most elements in one table: tables hold function references, a few thousand at most in
/// real components; the cap keeps a hostile `table.grow` from eating host memory.
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
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
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

/// Which call an instance is serving; tags logs and denials.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub resource: String,
    pub operation: Operation,
}

/// The data of one provider instance's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: MemoryBudget,
    grants: Arc<FsGrants>,
    mode: Mode,
    pub(crate) call: CallInfo,
    logs_this_call: u32,
    pub(crate) logs_dropped: u32,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    stdout_seen: usize,
    stderr_seen: usize,
}

impl HostState {
    pub fn new(grants: Arc<FsGrants>, mode: Mode, memory_bytes: u64) -> std::io::Result<Self> {
        let stdout = MemoryOutputPipe::new(MAX_STDIO_BYTES);
        let stderr = MemoryOutputPipe::new(MAX_STDIO_BYTES);
        let wasi = grants.wasi_ctx(mode, stdout.clone(), stderr.clone())?;
        let limits = MemoryBudget {
            limit: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            used: 0,
        };
        Ok(HostState {
            wasi,
            table: ResourceTable::new(),
            limits,
            grants,
            mode,
            call: CallInfo {
                resource: String::new(),
                operation: Operation::Describe,
            },
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
        };
        self.logs_this_call = 0;
        self.logs_dropped = 0;
    }

    /// What the guest wrote to stderr since the last flush (a panic message, typically).
    pub fn unread_stderr(&self) -> String {
        let bytes = self.stderr.contents();
        String::from_utf8_lossy(bytes.get(self.stderr_seen..).unwrap_or_default()).into_owned()
    }

    /// Emit what the guest wrote to stdout/stderr since the last call as log events.
    /// Returns false when a buffer is full: the instance should then be retired.
    pub fn flush_stdio(&mut self) -> bool {
        let mut room = true;
        for (pipe, seen, stream) in [
            (&self.stdout, &mut self.stdout_seen, "stdout"),
            (&self.stderr, &mut self.stderr_seen, "stderr"),
        ] {
            let bytes = pipe.contents();
            if bytes.len() > *seen {
                let text = String::from_utf8_lossy(&bytes[*seen..]);
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                if lines.len() > MAX_STDIO_LINES_PER_CALL {
                    tracing::warn!(
                        provider = %self.grants.provider(),
                        resource = %self.call.resource,
                        stream,
                        "{} lines of output dropped (limit {MAX_STDIO_LINES_PER_CALL} per call)",
                        lines.len() - MAX_STDIO_LINES_PER_CALL
                    );
                }
                for line in lines.into_iter().take(MAX_STDIO_LINES_PER_CALL) {
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
            room &= bytes.len() < MAX_STDIO_BYTES;
        }
        room
    }
}

/// `tenet:provider/types` holds only types; the world imports it implicitly.
impl crate::plugin::bindings::tenet::provider::types::Host for HostState {}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
