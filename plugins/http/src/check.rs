//! `http.check`: a health gate in the graph.
//!
//! `read` makes one request (allowed in plans: GET or HEAD only) and says whether the
//! service is healthy now; `diff` plans a wait when it is not; `apply` requests again
//! every `interval` until the expectation holds or `timeout` passes. The host checks it
//! on every apply and never counts it as a change (the schema's `x-tenet-check`).
//!
//! "Not yet" is anything a starting service does: a refused connection, a timeout, an
//! unexpected status, a body that does not match. A refusal by the sandbox, a TLS
//! failure or a malformed request is not "not yet": it fails at once.

use crate::wire;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tenet_sdk::http::HttpError;
use tenet_sdk::{Diagnostic, Diff, Error, FieldChange, KindInfo, from_value};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for one request's answer.
const MAX_REQUEST_TIME: Duration = Duration::from_secs(10);

/// GET or HEAD.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
enum Method {
    #[default]
    Get,
    Head,
}

/// The desired properties of `http.check`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Check {
    /// The URL to request (its origin must be granted with `net:`).
    #[schemars(length(min = 1))]
    url: String,
    /// GET (default) or HEAD.
    #[serde(default)]
    method: Method,
    /// Statuses that mean healthy (default [200]).
    #[serde(default = "ok")]
    #[schemars(length(min = 1))]
    status: Vec<u16>,
    /// A JSON pointer into the response body whose value must equal `equals`.
    #[serde(default)]
    json_pointer: Option<String>,
    /// The value expected at `json_pointer`.
    #[serde(default)]
    equals: Option<Value>,
    /// A regular expression the response body must match.
    #[serde(default)]
    body_matches: Option<String>,
    /// Longest wait for health, e.g. `60s` (the default). The provider's call timeout
    /// (`limits.timeout`) must be longer.
    #[serde(default)]
    timeout: Option<String>,
    /// Pause between requests, e.g. `1s` (the default).
    #[serde(default)]
    interval: Option<String>,
    /// Request headers. Never shown or stored in clear; credentials belong on the net
    /// grant instead, where the provider never sees them.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn ok() -> Vec<u16> {
    vec![200]
}

pub fn kind() -> KindInfo {
    let mut k = KindInfo::of::<Check>(
        "check",
        "a health gate: waits until a URL answers as expected; never a change",
        "url",
    );
    if let Some(map) = k.schema.as_object_mut() {
        map.insert("x-tenet-check".into(), Value::Bool(true));
    }
    // What a request observed: in the state, never in a manifest.
    if let Some(props) = k
        .schema
        .pointer_mut("/properties")
        .and_then(Value::as_object_mut)
    {
        props.insert(
            "healthy".into(),
            json!({"type": "boolean", "readOnly": true, "description": "observed: whether the last request was as expected"}),
        );
        props.insert(
            "observed_status".into(),
            json!({"type": ["integer", "null"], "readOnly": true, "description": "observed: the last status (null: no answer)"}),
        );
        props.insert(
            "seen".into(),
            json!({"type": "string", "readOnly": true, "description": "observed: what was not as expected"}),
        );
    }
    wire::hide_headers(&mut k);
    k
}

impl Check {
    fn timeout(&self) -> Duration {
        wire::duration_or(self.timeout.as_deref(), DEFAULT_TIMEOUT)
    }

    fn interval(&self) -> Duration {
        wire::duration_or(self.interval.as_deref(), DEFAULT_INTERVAL)
    }

    fn method(&self) -> &'static str {
        match self.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

pub fn validate(properties: &Value) -> Vec<Diagnostic> {
    let c: Check = match from_value(properties) {
        Ok(c) => c,
        Err(e) => return vec![Diagnostic::error("", e.message())],
    };
    let mut out = Vec::new();
    for (field, text) in [("timeout", &c.timeout), ("interval", &c.interval)] {
        if let Some(Err(e)) = text.as_deref().map(wire::duration) {
            out.push(Diagnostic::error(&format!("/{field}"), e));
        }
    }
    if c.json_pointer.is_some() != c.equals.is_some() {
        out.push(Diagnostic::error(
            "/json_pointer",
            "json_pointer and equals go together: the value at the pointer must equal `equals`",
        ));
    }
    if let Some(p) = &c.json_pointer
        && !(p.is_empty() || p.starts_with('/'))
    {
        out.push(Diagnostic::error(
            "/json_pointer",
            format!("`{p}` is not a JSON pointer (it starts with `/`, e.g. `/status`)"),
        ));
    }
    if let Some(r) = &c.body_matches
        && let Err(e) = regex_lite::Regex::new(r)
    {
        out.push(Diagnostic::error(
            "/body_matches",
            format!("invalid regular expression: {e}"),
        ));
    }
    if c.method == Method::Head && (c.body_matches.is_some() || c.json_pointer.is_some()) {
        out.push(Diagnostic::error(
            "/method",
            "a HEAD response has no body to match: use GET",
        ));
    }
    if let Some(s) = c.status.iter().find(|s| !(100..=599).contains(*s)) {
        out.push(Diagnostic::error(
            "/status",
            format!("{s} is not an HTTP status"),
        ));
    }
    out
}

/// One request: `Ok(None)` healthy, `Ok(Some(what))` not yet (what it saw), `Err` a
/// failure that waiting cannot mend.
fn probe(
    c: &Check,
    pattern: Option<&regex_lite::Regex>,
    timeout: Duration,
) -> Result<(Option<u16>, Option<String>), Error> {
    let response = match wire::send(c.method(), &c.url, &c.headers, None, timeout) {
        Ok(r) => r,
        Err(HttpError::Unavailable(m)) => return Ok((None, Some(m))),
        Err(e) => return Err(e.into()),
    };
    let status = Some(response.status);
    if !c.status.contains(&response.status) {
        return Ok((
            status,
            Some(format!(
                "status {} (expected {}): {}",
                response.status,
                c.status
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" or "),
                wire::quote(&response.body)
            )),
        ));
    }
    if let (Some(pointer), Some(want)) = (&c.json_pointer, &c.equals) {
        let found = serde_json::from_slice::<Value>(&response.body)
            .ok()
            .and_then(|v| v.pointer(pointer).cloned());
        if found.as_ref() != Some(want) {
            return Ok((
                status,
                Some(format!(
                    "status {} but {pointer} is {} (expected {want})",
                    response.status,
                    found.map_or_else(|| "absent".to_owned(), |v| v.to_string())
                )),
            ));
        }
    }
    if let Some(re) = pattern.filter(|re| !re.is_match(&response.text())) {
        return Ok((
            status,
            Some(format!(
                "status {} but the body does not match `{}`: {}",
                response.status,
                re.as_str(),
                wire::quote(&response.body)
            )),
        ));
    }
    Ok((status, None))
}

/// The check's `body_matches`, compiled once for all its requests.
fn pattern(c: &Check) -> Result<Option<regex_lite::Regex>, Error> {
    c.body_matches
        .as_deref()
        .map(regex_lite::Regex::new)
        .transpose()
        .map_err(|e| Error::InvalidInput(format!("body_matches: {e}")))
}

fn state(c: &Check, status: Option<u16>, detail: Option<String>) -> Value {
    let mut s = json!({"url": c.url, "healthy": detail.is_none(), "observed_status": status});
    if let (Some(d), Some(map)) = (detail, s.as_object_mut()) {
        map.insert("seen".into(), Value::String(d));
    }
    s
}

pub fn read(properties: &Value) -> Result<Value, Error> {
    let c: Check = from_value(properties)?;
    let (status, detail) = probe(&c, pattern(&c)?.as_ref(), MAX_REQUEST_TIME.min(c.timeout()))?;
    Ok(state(&c, status, detail))
}

pub fn diff(current: Option<&Value>) -> Diff {
    let healthy = current
        .and_then(|c| c.get("healthy"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if healthy {
        return Diff::none();
    }
    Diff::from_changes(vec![FieldChange::new(
        "healthy",
        Some(Value::Bool(false)),
        Some(Value::Bool(true)),
    )])
}

/// Request until healthy or the timeout passes.
pub fn wait(properties: &Value) -> Result<Value, Error> {
    let c: Check = from_value(properties)?;
    let (timeout, interval) = (c.timeout(), c.interval());
    let pattern = pattern(&c)?;
    let start = Instant::now();
    let mut requests = 0u32;
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let (status, detail) = probe(
            &c,
            pattern.as_ref(),
            MAX_REQUEST_TIME.min(left).max(Duration::from_millis(100)),
        )?;
        requests += 1;
        let Some(seen) = detail else {
            tenet_sdk::log::info(&format!(
                "{} is healthy after {requests} request(s) in {:.1} s",
                c.url,
                start.elapsed().as_secs_f64()
            ));
            return Ok(state(&c, status, None));
        };
        if start.elapsed() + interval >= timeout {
            return Err(Error::Conflict(format!(
                "{} {} was not healthy within {:.1} s ({requests} request{}): last saw {seen}",
                c.method(),
                c.url,
                timeout.as_secs_f64(),
                if requests == 1 { "" } else { "s" }
            )));
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_marks_a_gate_and_hides_headers() {
        let k = kind();
        assert_eq!(k.schema["x-tenet-check"], json!(true));
        assert_eq!(k.schema["properties"]["headers"]["sensitive"], json!(true));
    }

    #[test]
    fn validation_reports_every_problem() {
        let d = validate(&json!({
            "url": "http://127.0.0.1:1/h", "timeout": "soon", "equals": "ok",
            "body_matches": "(", "status": [42]
        }));
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["/timeout", "/json_pointer", "/body_matches", "/status"]
        );
    }

    #[test]
    fn unhealthy_plans_a_wait_and_healthy_nothing() {
        assert_eq!(diff(Some(&json!({"healthy": true}))), Diff::none());
        let d = diff(Some(&json!({"healthy": false, "seen": "status 503"})));
        assert_eq!(d.changes[0].path, "/healthy");
    }
}
