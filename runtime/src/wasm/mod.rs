//! The sandbox: the only modules that import wasmtime. [`bindings`] is the one
//! `bindgen!` of the `tenet:provider` world, shared by [`plugin`] (loading components,
//! instance pools, deadlines, the compile cache; implements the engine's
//! [`crate::provider::Provider`]) and [`host`] (the `tenet:host` interfaces guests call,
//! with their limits). [`grants`] turns the operator's grants into WASI contexts and
//! checks every host call against them.

pub(crate) mod bindings;
pub mod grants;
pub mod host;
pub mod plugin;
