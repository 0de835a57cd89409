//! `tenet:host/log`: guest messages become `tracing` events tagged with provider,
//! resource and operation, within the provider's `log_lines` limit and
//! [`MAX_LOG_MESSAGE_BYTES`].

use super::{HostState, MAX_LOG_MESSAGE_BYTES};
use crate::wasm::bindings::tenet::host::log::{Host, Level};

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.logs_this_call = self.logs_this_call.saturating_add(1);
        if self.logs_this_call > self.log_lines() {
            self.logs_dropped = self.logs_dropped.saturating_add(1);
            return Ok(());
        }
        // One line per message, whatever the guest put in it: a newline would start a
        // line that reads as Tenet's own.
        let msg = crate::diag::one_line(&super::truncate(message, MAX_LOG_MESSAGE_BYTES));
        let provider = self.provider();
        let resource = &self.call.resource;
        let operation = self.call.operation;
        match level {
            Level::Trace => tracing::trace!(%provider, %resource, %operation, "{msg}"),
            Level::Debug => tracing::debug!(%provider, %resource, %operation, "{msg}"),
            Level::Info => tracing::info!(%provider, %resource, %operation, "{msg}"),
            Level::Warn => tracing::warn!(%provider, %resource, %operation, "{msg}"),
            Level::Error => tracing::error!(%provider, %resource, %operation, "{msg}"),
        }
        Ok(())
    }
}
