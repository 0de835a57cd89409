//! Host bindings generated from `wit/provider`. Private to `plugin` and `host`: WIT types
//! are converted to the engine's types at the plugin edge and never leave it.
//!
//! The world's exports are looked up per interface (`resources` required; `capabilities`
//! since 0.1.1, `batch` and `execution` since 0.1.2, all optional) rather than through
//! the generated world type, so a provider built against an older 0.1.x still loads.

wasmtime::component::bindgen!({
    path: "../wit/provider",
    world: "tenet:provider/provider",
    imports: { "tenet:host/exec.run": async | trappable, default: trappable },
    exports: { default: async },
});

pub use exports::tenet::provider::batch;
pub use exports::tenet::provider::capabilities as caps;
pub use exports::tenet::provider::execution;
pub use exports::tenet::provider::resources;
