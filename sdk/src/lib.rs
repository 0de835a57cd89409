//! Write Tenet providers in Rust.
//!
//! A provider is one type implementing [`Provider`] and one call to
//! [`export_provider!`]. Built for `wasm32-wasip2` it becomes a component exporting the
//! `tenet:provider` world; built natively (for `cargo test`) the same code runs against
//! the host's real file system through native stand-ins for the host interfaces, so a
//! provider's logic is unit-tested without Wasm.
//!
//! The SDK owns the conversion between the WIT types and plain Rust types: a provider
//! never sees generated bindings, and an operation it does not implement returns a clear
//! [`Error`] instead of panicking.
//!
//! ```
//! use serde_json::{json, Value};
//! use tenet_sdk::{Error, KindInfo, Provider, ProviderInfo};
//!
//! struct Hello;
//!
//! impl Provider for Hello {
//!     fn describe() -> ProviderInfo {
//!         ProviderInfo::new("hello", "0.1.0", "says hello").kind(
//!             KindInfo::new("greeting", "a greeting", json!({"type": "object"}), "name"),
//!         )
//!     }
//!
//!     fn read(_kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
//!         Ok(Some(properties.clone()))
//!     }
//! }
//!
//! // In the provider crate: `tenet_sdk::export_provider!(Hello);`
//! assert_eq!(Hello::describe().kinds[0].name, "greeting");
//! let diff = Hello::diff("greeting", &json!({"name": "a"}), None).unwrap();
//! assert_eq!(diff.action, tenet_sdk::Action::Create);
//! ```
#![deny(missing_docs)]

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub mod diff;
pub mod exec;
pub mod fs;
pub mod http;
pub mod log;

pub use diff::{Action, Diff, FieldChange};

/// Whether an object should exist: the `ensure` property most kinds have
/// (`present`, the default, or `absent`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Ensure {
    /// It exists, as described.
    #[default]
    Present,
    /// It does not exist.
    Absent,
}

#[doc(hidden)]
pub mod __adapter;

/// Generated WIT bindings. Private to the SDK: providers use the plain Rust types.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit/provider",
        world: "tenet:provider/provider",
        pub_export_macro: true,
        export_macro_name: "__export_provider_world",
        default_bindings_module: "tenet_sdk::__bindings",
        generate_all,
    });
}

/// Why an operation failed. Mirrors the WIT `error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The properties are wrong in a way the schema cannot express.
    InvalidInput(String),
    /// Something the operation needs does not exist.
    NotFound(String),
    /// The system is in a state that blocks the change.
    Conflict(String),
    /// The sandbox refused an operation the provider needed.
    CapabilityDenied(String),
    /// A failure that may go away when retried.
    Transient(String),
    /// A bug in the provider.
    Internal(String),
}

impl Error {
    /// The error returned for an operation the provider does not implement.
    pub fn unimplemented(operation: &str, kind: &str) -> Self {
        Error::Internal(format!(
            "operation `{operation}` is not implemented for kind `{kind}`"
        ))
    }

    /// The error returned for a kind the provider does not manage.
    pub fn unknown_kind(kind: &str) -> Self {
        Error::InvalidInput(format!("unknown resource kind `{kind}`"))
    }

    /// The message, whatever the case.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidInput(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::CapabilityDenied(m)
            | Error::Transient(m)
            | Error::Internal(m) => m,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let case = match self {
            Error::InvalidInput(_) => "invalid input",
            Error::NotFound(_) => "not found",
            Error::Conflict(_) => "conflict",
            Error::CapabilityDenied(_) => "capability denied",
            Error::Transient(_) => "transient",
            Error::Internal(_) => "internal",
        };
        write!(f, "{case}: {}", self.message())
    }
}

impl std::error::Error for Error {}

/// One resource kind, addressed in manifests as `<provider>.<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct KindInfo {
    /// Kind name, e.g. `file`.
    pub name: String,
    /// One line for `tenet providers`.
    pub description: String,
    /// JSON Schema of the desired properties.
    pub schema: Value,
    /// The property that identifies the resource on the system.
    pub identity: String,
    /// Properties whose change forces replacement.
    pub force_new: Vec<String>,
    /// Properties holding file-system paths, resolved by the host against the manifest.
    pub path_properties: Vec<String>,
}

impl KindInfo {
    /// A kind with no replacement-forcing and no path properties.
    pub fn new(name: &str, description: &str, schema: Value, identity: &str) -> Self {
        KindInfo {
            name: name.to_owned(),
            description: description.to_owned(),
            schema,
            identity: identity.to_owned(),
            force_new: Vec::new(),
            path_properties: Vec::new(),
        }
    }

    /// A kind whose properties are the Rust type `T`: its JSON Schema is generated from
    /// `T` (field types, `Option` for optional fields, doc comments as descriptions,
    /// `#[serde(deny_unknown_fields)]` for a closed object, `#[schemars(length(min =
    /// 1))]`, `range`, `regex` … for constraints), so the schema the host validates
    /// manifests against and the type the provider decodes them into cannot drift apart.
    ///
    /// ```
    /// use schemars::JsonSchema;
    /// use serde::Deserialize;
    /// use tenet_sdk::KindInfo;
    ///
    /// /// A greeting.
    /// #[derive(Deserialize, JsonSchema)]
    /// #[serde(deny_unknown_fields)]
    /// struct Greeting {
    ///     /// Who to greet.
    ///     #[schemars(length(min = 1))]
    ///     name: String,
    ///     /// How often.
    ///     times: Option<u32>,
    /// }
    ///
    /// let kind = KindInfo::of::<Greeting>("greeting", "a greeting", "name");
    /// assert_eq!(kind.schema["required"], serde_json::json!(["name"]));
    /// assert_eq!(kind.schema["additionalProperties"], false);
    /// assert_eq!(kind.schema["properties"]["name"]["description"], "Who to greet.");
    /// assert_eq!(kind.schema["properties"]["name"]["minLength"], 1);
    /// ```
    pub fn of<T: schemars::JsonSchema>(name: &str, description: &str, identity: &str) -> Self {
        let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
        if let Some(map) = schema.as_object_mut() {
            // The type's name and doc are the kind's name and description already.
            map.remove("title");
            map.remove("description");
        }
        Self::new(name, description, schema, identity)
    }

    /// Declare properties whose change forces replacement.
    pub fn force_new(mut self, properties: &[&str]) -> Self {
        self.force_new = properties.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// Declare properties that hold file-system paths.
    pub fn path_properties(mut self, properties: &[&str]) -> Self {
        self.path_properties = properties.iter().map(|p| (*p).to_owned()).collect();
        self
    }
}

/// What `describe` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderInfo {
    /// Provider name, the prefix of its kinds in manifests.
    pub name: String,
    /// Semantic version of the provider.
    pub version: String,
    /// One line for `tenet providers`.
    pub description: String,
    /// The kinds it manages.
    pub kinds: Vec<KindInfo>,
}

impl ProviderInfo {
    /// A provider with no kinds yet.
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        ProviderInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            kinds: Vec::new(),
        }
    }

    /// Add a kind.
    pub fn kind(mut self, kind: KindInfo) -> Self {
        self.kinds.push(kind);
        self
    }

    /// The kind called `name`, if the provider has it.
    pub fn find_kind(&self, name: &str) -> Option<&KindInfo> {
        self.kinds.iter().find(|k| k.name == name)
    }
}

/// What a provider needs from the operator, shown beside the manifest's grants by
/// `tenet providers` and `tenet plan` (missing grants are flagged). Declaring grants
/// nothing: the host enforces only what the manifest grants.
///
/// ```
/// use tenet_sdk::Capabilities;
/// let caps = Capabilities::new()
///     .program("/usr/bin/systemctl", true, "reads unit state during plans")
///     .host("https://api.example.com", "the service's API")
///     .env("LANG", "messages in the operator's language");
/// assert_eq!(caps.programs.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `(path, write, reason)`: directories it reads, or writes during apply.
    pub directories: Vec<(String, bool, String)>,
    /// `(program, probe, reason)`: programs it runs; `probe` ones during plans too.
    pub programs: Vec<(String, bool, String)>,
    /// `(origin, reason)`: `scheme://host[:port]` it sends HTTP requests to.
    pub hosts: Vec<(String, String)>,
    /// `(name, reason)`: environment variables it reads.
    pub env: Vec<(String, String)>,
}

impl Capabilities {
    /// Nothing requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory it reads (`write: false`) or changes during apply (`write: true`).
    pub fn directory(mut self, path: &str, write: bool, reason: &str) -> Self {
        self.directories
            .push((path.to_owned(), write, reason.to_owned()));
        self
    }

    /// A program it runs; `probe` when it runs during plans as a read-only check.
    pub fn program(mut self, program: &str, probe: bool, reason: &str) -> Self {
        self.programs
            .push((program.to_owned(), probe, reason.to_owned()));
        self
    }

    /// An origin it sends HTTP requests to.
    pub fn host(mut self, origin: &str, reason: &str) -> Self {
        self.hosts.push((origin.to_owned(), reason.to_owned()));
        self
    }

    /// An environment variable it reads.
    pub fn env(mut self, name: &str, reason: &str) -> Self {
        self.env.push((name.to_owned(), reason.to_owned()));
        self
    }
}

/// How the host should schedule the provider and run its programs (WIT `execution`,
/// since `tenet:provider@0.1.2`). Shown to the operator; the host checks every value.
///
/// ```
/// use tenet_sdk::Settings;
/// let s = Settings::new()
///     .max_concurrency(1)
///     .lock("dpkg")
///     .fixed_env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
///     .batched_kind("package");
/// assert_eq!(s.max_concurrency, Some(1));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Most of its calls in flight at once, below any operator setting.
    pub max_concurrency: Option<u32>,
    /// Named locks each of its resources holds while planned or changed.
    pub locks: Vec<String>,
    /// `(name, value)`: environment set on every program it runs. The host allows only
    /// names and values that narrow what a child sees (`PATH` of system directories,
    /// locale names, `DEBIAN_FRONTEND`, …) and refuses the provider otherwise.
    pub fixed_env: Vec<(String, String)>,
    /// Kinds whose [`Provider::read_many`] reads many resources in one go: the host reads
    /// every resource of these kinds it can in one call instead of one call each.
    pub batched_kinds: Vec<String>,
}

impl Settings {
    /// Nothing declared: the operator's limits only, no locks, no environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` calls at once (e.g. 1 for a package manager with one global lock).
    pub fn max_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = Some(n);
        self
    }

    /// Hold the named lock while each resource is planned or changed.
    pub fn lock(mut self, name: &str) -> Self {
        self.locks.push(name.to_owned());
        self
    }

    /// Set `name=value` on every program the provider runs.
    pub fn fixed_env(mut self, name: &str, value: &str) -> Self {
        self.fixed_env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Read resources of `kind` in batches through [`Provider::read_many`].
    pub fn batched_kind(mut self, kind: &str) -> Self {
        self.batched_kinds.push(kind.to_owned());
        self
    }
}

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Blocks the run.
    Error,
    /// Shown, does not block.
    Warning,
}

/// A problem found by [`Provider::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// How serious it is.
    pub severity: Severity,
    /// JSON pointer into the properties.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// An error at `path`.
    pub fn error(path: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// A warning at `path`.
    pub fn warning(path: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// A Tenet provider. Every operation has a default: `validate` finds nothing, `diff`
/// compares fields generically ([`Diff::between`]), and `read`, `apply` and `delete`
/// return [`Error::unimplemented`].
///
/// Property documents arrive already validated against the kind's schema; use
/// [`from_value`] to turn them into typed structs.
pub trait Provider {
    /// Name, version and kinds.
    fn describe() -> ProviderInfo;

    /// What it needs from the operator (directories, programs, hosts, env). Default:
    /// nothing beyond what its imports show.
    fn capabilities() -> Capabilities {
        Capabilities::new()
    }

    /// How the host should schedule it and run its programs. Default: nothing declared.
    fn settings() -> Settings {
        Settings::new()
    }

    /// Checks the schema cannot express.
    fn validate(kind: &str, properties: &Value) -> Vec<Diagnostic> {
        let _ = (kind, properties);
        Vec::new()
    }

    /// The current state, or `None` when the resource does not exist.
    fn read(kind: &str, properties: &Value) -> Result<Option<Value>, Error> {
        let _ = properties;
        Err(Error::unimplemented("read", kind))
    }

    /// The current state of many resources of one kind, in order: for each, what
    /// [`Provider::read`] returns for it alone (the conformance kit checks that they
    /// agree). The host calls it for the kinds [`Settings::batched_kinds`] names. The
    /// default reads them one by one; override it where one program run can read them
    /// all (one `dpkg-query` for fifty packages). An `Err` fails the whole batch.
    #[allow(clippy::type_complexity)]
    fn read_many(
        kind: &str,
        properties: &[Value],
    ) -> Result<Vec<Result<Option<Value>, Error>>, Error> {
        Ok(properties.iter().map(|p| Self::read(kind, p)).collect())
    }

    /// Compare desired properties with the current state.
    fn diff(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
        let force_new = Self::describe()
            .find_kind(kind)
            .map(|k| k.force_new.clone())
            .unwrap_or_default();
        Ok(Diff::between(desired, current, &force_new))
    }

    /// Make the system match `desired`; return the new current state.
    fn apply(kind: &str, desired: &Value, current: Option<&Value>) -> Result<Value, Error> {
        let _ = (desired, current);
        Err(Error::unimplemented("apply", kind))
    }

    /// Remove the resource.
    fn delete(kind: &str, current: &Value) -> Result<(), Error> {
        let _ = current;
        Err(Error::unimplemented("delete", kind))
    }
}

/// Deserialize a property document into a typed struct; a mismatch is
/// [`Error::InvalidInput`] naming the field.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Error> {
    T::deserialize(value).map_err(|e| Error::InvalidInput(format!("invalid properties: {e}")))
}

/// Serialize a typed state into a JSON document.
pub fn to_value<T: Serialize>(value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::Internal(format!("cannot encode state: {e}")))
}

/// Export `$provider` (a type implementing [`Provider`]) as the component's
/// `tenet:provider/resources` interface. Use once per provider crate.
#[macro_export]
macro_rules! export_provider {
    ($provider:ty) => {
        #[doc(hidden)]
        pub struct __TenetExport;

        impl $crate::__bindings::exports::tenet::provider::resources::Guest for __TenetExport {
            fn describe() -> $crate::__bindings::exports::tenet::provider::resources::ProviderInfo {
                $crate::__adapter::describe::<$provider>()
            }
            fn validate(
                kind: ::std::string::String,
                properties: ::std::string::String,
            ) -> ::std::vec::Vec<$crate::__bindings::exports::tenet::provider::resources::Diagnostic> {
                $crate::__adapter::validate::<$provider>(&kind, &properties)
            }
            fn read(
                kind: ::std::string::String,
                properties: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::option::Option<::std::string::String>,
                $crate::__bindings::exports::tenet::provider::resources::Error,
            > {
                $crate::__adapter::read::<$provider>(&kind, &properties)
            }
            fn diff(
                kind: ::std::string::String,
                desired: ::std::string::String,
                current: ::std::option::Option<::std::string::String>,
            ) -> ::std::result::Result<
                $crate::__bindings::exports::tenet::provider::resources::DiffResult,
                $crate::__bindings::exports::tenet::provider::resources::Error,
            > {
                $crate::__adapter::diff::<$provider>(&kind, &desired, current.as_deref())
            }
            fn apply(
                kind: ::std::string::String,
                desired: ::std::string::String,
                current: ::std::option::Option<::std::string::String>,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::__bindings::exports::tenet::provider::resources::Error,
            > {
                $crate::__adapter::apply::<$provider>(&kind, &desired, current.as_deref())
            }
            fn delete(
                kind: ::std::string::String,
                current: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::__bindings::exports::tenet::provider::resources::Error>
            {
                $crate::__adapter::delete::<$provider>(&kind, &current)
            }
        }

        impl $crate::__bindings::exports::tenet::provider::capabilities::Guest for __TenetExport {
            fn requested() -> $crate::__bindings::exports::tenet::provider::capabilities::CapabilityRequest {
                $crate::__adapter::requested::<$provider>()
            }
        }

        impl $crate::__bindings::exports::tenet::provider::execution::Guest for __TenetExport {
            fn settings() -> $crate::__bindings::exports::tenet::provider::execution::RunSettings {
                $crate::__adapter::settings::<$provider>()
            }
        }

        impl $crate::__bindings::exports::tenet::provider::batch::Guest for __TenetExport {
            fn read_many(
                kind: ::std::string::String,
                properties: ::std::vec::Vec<::std::string::String>,
            ) -> $crate::__adapter::ReadMany {
                $crate::__adapter::read_many::<$provider>(&kind, &properties)
            }
        }

        $crate::__bindings::__export_provider_world!(__TenetExport with_types_in $crate::__bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct DescribeOnly;

    impl Provider for DescribeOnly {
        fn describe() -> ProviderInfo {
            ProviderInfo::new("d", "0.0.1", "describes only").kind(
                KindInfo::new("k", "a kind", json!({"type": "object"}), "name")
                    .force_new(&["name"]),
            )
        }
    }

    #[test]
    fn unimplemented_operations_are_clear_errors_not_panics() {
        let p = json!({"name": "x"});
        assert_eq!(
            DescribeOnly::read("k", &p),
            Err(Error::Internal(
                "operation `read` is not implemented for kind `k`".into()
            ))
        );
        assert!(
            matches!(DescribeOnly::apply("k", &p, None), Err(Error::Internal(m)) if m.contains("`apply`"))
        );
        assert!(
            matches!(DescribeOnly::delete("k", &p), Err(Error::Internal(m)) if m.contains("`delete`"))
        );
        assert!(DescribeOnly::validate("k", &p).is_empty());
        // The default diff honours the kind's force-new list.
        let d = DescribeOnly::diff("k", &json!({"name": "y"}), Some(&p)).expect("diff");
        assert_eq!(d.action, Action::Replace);
    }

    #[test]
    fn from_value_names_the_bad_field() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Props {
            size: u32,
        }
        let err = from_value::<Props>(&json!({"size": "big"})).expect_err("type error");
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("invalid type")),
            "{err}"
        );
    }
}
