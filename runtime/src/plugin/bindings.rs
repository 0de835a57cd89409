//! Host bindings generated from `wit/provider`. Private to `plugin` and `host`: WIT types
//! are converted to the engine's types at the plugin edge and never leave it.

wasmtime::component::bindgen!({
    path: "../wit/provider",
    world: "tenet:provider/provider",
    imports: { default: trappable },
    exports: { default: async },
});
