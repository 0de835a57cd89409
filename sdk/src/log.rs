//! Levelled log messages through the host's `tenet:host/log` interface.
//!
//! On the host they become `tracing` events tagged with provider, resource and
//! operation. Built natively (unit tests) they go to standard error.

/// Message level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// For debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// Emit one message.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Emit a debug message.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Emit an info message.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Emit a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

#[cfg(target_family = "wasm")]
mod imp {
    use super::Level;
    use crate::__bindings::tenet::host::log as wit;

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    use super::Level;

    pub fn log(level: Level, message: &str) {
        eprintln!("[{level:?}] {message}");
    }
}
