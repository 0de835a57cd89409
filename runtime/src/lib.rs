//! Tenet: a desired-state configuration runtime whose resource providers are sandboxed
//! WebAssembly components.
//!
//! The modules follow the data: [`manifest`] (what the operator wrote: parse, variables,
//! references, checks) → [`session`] (sources, pins, providers loaded, every check, the
//! graph) → [`graph`] (dependency order, the concurrent walk) → [`plan`] (the resolved
//! artifact) → [`engine`] (walk the graph, call providers) → [`run`] (the use cases the
//! CLI and the agent share: plan, apply, drift, recording) → [`state`] (what is
//! remembered between invocations). [`agent`] is the second caller of `run`: a
//! continuous, event-driven reconcile loop with metrics; [`fleet`] carries its runs to a
//! fleet database (reports, the ingest service, fleet queries). The engine sees providers only through the
//! [`provider::Provider`] trait; [`wasm`] implements it with wasmtime and is the only
//! place that imports it. [`distribution`] is what may run and how it travels: bundles,
//! signatures, sources under a trust policy, the plugin store, OCI, `tenet.lock`.
//! [`http`] is the one HTTP server loop (agent endpoint, fleet ingest);
//! [`diag`] carries problems with their places; [`atomic`] owns write-then-rename for
//! everything written whole; [`digest`] the sha256 of bytes. [`cli`] is the command line on top: it builds a
//! [`run::RunContext`], calls one use case, renders the outcome.
#![deny(unsafe_code)]

pub mod agent;
pub mod atomic;
pub mod cli;
pub mod diag;
pub mod digest;
pub mod distribution;
pub mod engine;
pub mod facts;
pub mod fleet;
pub mod graph;
pub mod http;
pub mod manifest;
pub mod plan;
pub mod policy;
pub mod provider;
pub mod run;
pub mod session;
pub mod state;
pub mod wasm;
