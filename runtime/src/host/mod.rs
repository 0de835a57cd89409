//! What the runtime provides to providers: the per-instance store data and one
//! submodule per `tenet:host` interface. Every host function checks the caller's grants;
//! a refusal is a typed WIT error the guest can handle and is logged naming provider,
//! resource, operation and capability. Guest-controlled sizes have named limits.

mod fs_ext;
mod log;

use crate::grants::{FsGrants, Mode};
use crate::provider::Operation;
use std::sync::Arc;
use wasmtime::StoreLimits;
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
    pub(crate) limits: StoreLimits,
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
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(usize::try_from(memory_bytes).unwrap_or(usize::MAX))
            // A component holds several core instances, tables and memories.
            .instances(64)
            .tables(64)
            .memories(16)
            .trap_on_grow_failure(true)
            .build();
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
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
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
