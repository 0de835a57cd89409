//! What may run, and how it travels: the bundle format and its signatures ([`bundle`]),
//! signed desired-state artifacts ([`artifact`]),
//! resolving a provider's source under a [`source::TrustPolicy`] ([`source`]), the
//! [`store::PluginStore`] of installed bundles ([`store`]), registries ([`oci`]), the
//! pins of `tenet.lock` ([`lockfile`]) and the providers built into the binary
//! ([`builtins`]). Nothing here imports wasmtime: a component is bytes and a digest until
//! [`crate::wasm`] loads it.

pub mod artifact;
pub mod builtins;
pub mod bundle;
pub mod lockfile;
pub mod oci;
pub mod source;
pub mod store;
