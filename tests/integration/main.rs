//! The one integration-test binary: the real `file` provider and test guests, built from
//! this repository, driven through the wasmtime host (`host`), the `tenet` binary end to
//! end (`cli`), and invalid-manifest fixtures with their expected error text (`fixtures`).

mod cli;
mod fixtures;
mod host;
mod support;
