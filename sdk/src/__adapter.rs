//! Glue between the generated WIT bindings and [`Provider`]: decodes JSON text, calls
//! the provider, encodes the result. Used by [`export_provider!`](crate::export_provider).

use crate::__bindings::tenet::provider::types as wit;
use crate::{Action, Diagnostic, Diff, Error, Provider, ProviderInfo, Severity};
use serde_json::Value;

fn parse(what: &str, text: &str) -> Result<Value, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::InvalidInput(format!("{what} is not valid JSON: {e}")))
}

fn parse_opt(what: &str, text: Option<&str>) -> Result<Option<Value>, Error> {
    text.map(|t| parse(what, t)).transpose()
}

fn encode(value: &Value) -> String {
    // A `serde_json::Value` always serializes.
    value.to_string()
}

fn wit_error(e: Error) -> wit::Error {
    match e {
        Error::InvalidInput(m) => wit::Error::InvalidInput(m),
        Error::NotFound(m) => wit::Error::NotFound(m),
        Error::Conflict(m) => wit::Error::Conflict(m),
        Error::CapabilityDenied(m) => wit::Error::CapabilityDenied(m),
        Error::Transient(m) => wit::Error::Transient(m),
        Error::Internal(m) => wit::Error::Internal(m),
    }
}

fn wit_info(info: ProviderInfo) -> wit::ProviderInfo {
    wit::ProviderInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        kinds: info
            .kinds
            .into_iter()
            .map(|k| wit::KindInfo {
                name: k.name,
                description: k.description,
                schema: encode(&k.schema),
                identity: k.identity,
                force_new: k.force_new,
                path_properties: k.path_properties,
            })
            .collect(),
    }
}

fn wit_diagnostic(d: Diagnostic) -> wit::Diagnostic {
    wit::Diagnostic {
        severity: match d.severity {
            Severity::Error => wit::Severity::Error,
            Severity::Warning => wit::Severity::Warning,
        },
        path: d.path,
        message: d.message,
    }
}

fn wit_diff(d: Diff) -> wit::DiffResult {
    wit::DiffResult {
        action: match d.action {
            Action::None => wit::Action::None,
            Action::Create => wit::Action::Create,
            Action::Update => wit::Action::Update,
            Action::Replace => wit::Action::Replace,
            Action::Delete => wit::Action::Delete,
        },
        changes: d
            .changes
            .into_iter()
            .map(|c| wit::FieldChange {
                path: c.path,
                before: c.before.as_ref().map(encode),
                after: c.after.as_ref().map(encode),
                forces_replacement: c.forces_replacement,
            })
            .collect(),
    }
}

pub fn requested<P: Provider>()
-> crate::__bindings::exports::tenet::provider::capabilities::CapabilityRequest {
    use crate::__bindings::exports::tenet::provider::capabilities as caps;
    let c = P::capabilities();
    caps::CapabilityRequest {
        directories: c
            .directories
            .into_iter()
            .map(|(path, write, reason)| caps::DirectoryRequest {
                path,
                write,
                reason,
            })
            .collect(),
        programs: c
            .programs
            .into_iter()
            .map(|(program, probe, reason)| caps::ProgramRequest {
                program,
                probe,
                reason,
            })
            .collect(),
        hosts: c
            .hosts
            .into_iter()
            .map(|(origin, reason)| caps::HostRequest { origin, reason })
            .collect(),
        env: c
            .env
            .into_iter()
            .map(|(name, reason)| caps::EnvRequest { name, reason })
            .collect(),
    }
}

pub fn settings<P: Provider>() -> crate::__bindings::exports::tenet::provider::execution::RunSettings
{
    let s = P::settings();
    crate::__bindings::exports::tenet::provider::execution::RunSettings {
        max_concurrency: s.max_concurrency,
        locks: s.locks,
        fixed_env: s.fixed_env,
        batched_kinds: s.batched_kinds,
    }
}

/// What the `batch.read-many` export returns.
pub type ReadMany = Result<Vec<Result<Option<String>, wit::Error>>, wit::Error>;

pub fn read_many<P: Provider>(kind: &str, properties: &[String]) -> ReadMany {
    let docs = properties
        .iter()
        .map(|p| parse("properties", p))
        .collect::<Result<Vec<Value>, Error>>()
        .map_err(wit_error)?;
    let states = P::read_many(kind, &docs).map_err(wit_error)?;
    if states.len() != docs.len() {
        return Err(wit_error(Error::Internal(format!(
            "read_many returned {} states for {} resources",
            states.len(),
            docs.len()
        ))));
    }
    Ok(states
        .into_iter()
        .map(|r| r.map(|s| s.as_ref().map(encode)).map_err(wit_error))
        .collect())
}

pub fn describe<P: Provider>() -> wit::ProviderInfo {
    wit_info(P::describe())
}

pub fn validate<P: Provider>(kind: &str, properties: &str) -> Vec<wit::Diagnostic> {
    match parse("properties", properties) {
        Ok(p) => P::validate(kind, &p),
        Err(e) => vec![Diagnostic::error("", e.message())],
    }
    .into_iter()
    .map(wit_diagnostic)
    .collect()
}

pub fn read<P: Provider>(kind: &str, properties: &str) -> Result<Option<String>, wit::Error> {
    let run = || {
        let p = parse("properties", properties)?;
        Ok(P::read(kind, &p)?.as_ref().map(encode))
    };
    run().map_err(wit_error)
}

pub fn diff<P: Provider>(
    kind: &str,
    desired: &str,
    current: Option<&str>,
) -> Result<wit::DiffResult, wit::Error> {
    let run = || {
        let d = parse("desired properties", desired)?;
        let c = parse_opt("current state", current)?;
        P::diff(kind, &d, c.as_ref())
    };
    run().map(wit_diff).map_err(wit_error)
}

pub fn apply<P: Provider>(
    kind: &str,
    desired: &str,
    current: Option<&str>,
) -> Result<String, wit::Error> {
    let run = || {
        let d = parse("desired properties", desired)?;
        let c = parse_opt("current state", current)?;
        P::apply(kind, &d, c.as_ref()).map(|v| encode(&v))
    };
    run().map_err(wit_error)
}

pub fn delete<P: Provider>(kind: &str, current: &str) -> Result<(), wit::Error> {
    let run = || {
        let c = parse("current state", current)?;
        P::delete(kind, &c)
    };
    run().map_err(wit_error)
}
