//! Tenet: a desired-state configuration runtime whose resource providers are sandboxed
//! WebAssembly components.
//!
//! The modules follow the data: [`manifest`] (parse + validate) → [`graph`] (dependency
//! order) → [`plan`] (the resolved artifact) → [`engine`] (walk the graph, call
//! providers). The engine sees providers only through the [`provider::Provider`] trait;
//! [`plugin`] implements it with wasmtime, [`host`] provides the `tenet:host` interfaces
//! to guests, and [`grants`] turns the operator's grants into sandbox contexts.
//! [`state`] remembers resources and runs between invocations. Distribution: [`bundle`]
//! (format, signatures), [`source`] (what may run, under a [`source::TrustPolicy`]),
//! [`store`] (the [`store::PluginStore`] of installed bundles), [`oci`] (registries),
//! [`lockfile`] (pins). [`atomic`] owns write-then-rename for everything written whole.
//! [`cli`] is the command line on top.
#![deny(unsafe_code)]

pub mod atomic;
pub mod builtins;
pub mod bundle;
pub mod cli;
pub mod diag;
pub mod engine;
pub mod grants;
pub mod graph;
pub mod host;
pub mod lockfile;
pub mod manifest;
pub mod oci;
pub mod plan;
pub mod plugin;
pub mod provider;
pub mod source;
pub mod state;
pub mod store;
