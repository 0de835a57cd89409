//! The one integration-test binary: the real `file` provider and test guests, built from
//! this repository, driven through the wasmtime host (`host`), the `tenet` binary end to
//! end (`cli`), the hostile-provider suite (`sandbox`), and invalid-manifest fixtures
//! with their expected error text (`fixtures`).

mod accounts;
mod agent;
mod artifacts;
mod bundles;
mod cli;
mod edges;
mod edits;
mod fixtures;
mod fleet;
mod host;
mod language;
mod languages;
mod modules;
mod orchestration;
mod packages;
mod policy;
mod reports;
mod sandbox;
mod services;
mod state;
mod support;
mod webserver;
