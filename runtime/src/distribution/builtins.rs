//! The providers embedded in the `tenet` binary, built from `plugins/` by the build
//! script: a table of names and component bytes, which the distribution side resolves
//! `builtin:NAME` sources from and the compile cache keeps.

/// Providers embedded in the `tenet` binary, built from `plugins/` by the build script.
pub const BUILTINS: &[(&str, &[u8])] = &[
    ("file", include_bytes!(env!("TENET_PLUGIN_FILE_WASM"))),
    ("exec", include_bytes!(env!("TENET_PLUGIN_EXEC_WASM"))),
    ("cron", include_bytes!(env!("TENET_PLUGIN_CRON_WASM"))),
    ("account", include_bytes!(env!("TENET_PLUGIN_ACCOUNT_WASM"))),
    ("apt", include_bytes!(env!("TENET_PLUGIN_APT_WASM"))),
    ("service", include_bytes!(env!("TENET_PLUGIN_SERVICE_WASM"))),
    ("http", include_bytes!(env!("TENET_PLUGIN_HTTP_WASM"))),
];
