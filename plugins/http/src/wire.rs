//! What both kinds share: durations as operators write them, requests with the
//! manifest's headers, and how a response's status maps to an error.

use std::collections::BTreeMap;
use std::time::Duration;
use tenet_sdk::Error;
use tenet_sdk::http::{self, HttpError, Request, Response};

/// Most bytes of a response body quoted in an error.
pub const MAX_QUOTED_BODY: usize = 512;

/// `500ms`, `10s`, `2m`, `1h` (or a bare number of seconds).
pub fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. `500ms`, `10s`, `2m`)"))?;
    let seconds = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
            ));
        }
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("`{text}` must be longer than zero and at most 24h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A duration property (already validated), or `default` when not given.
pub fn duration_or(text: Option<&str>, default: Duration) -> Duration {
    text.and_then(|t| duration(t).ok()).unwrap_or(default)
}

/// Mark the kind's `headers` property sensitive: never shown or stored in clear.
pub fn hide_headers(kind: &mut tenet_sdk::KindInfo) {
    if let Some(h) = kind
        .schema
        .pointer_mut("/properties/headers")
        .and_then(serde_json::Value::as_object_mut)
    {
        h.insert("sensitive".into(), serde_json::Value::Bool(true));
    }
}

/// Send `method url` with `headers` and an optional JSON body.
pub fn send(
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut request = Request::new(method, url).timeout(timeout);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if !headers.keys().any(|k| k.eq_ignore_ascii_case("accept")) {
        request = request.header("accept", "application/json");
    }
    if let Some(body) = body {
        request = request.json(body);
        if method == "PATCH" {
            // A JSON merge patch (RFC 7396): what PATCH with the declared fields is.
            request
                .headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
            request = request.header("content-type", "application/merge-patch+json");
        }
    }
    http::send(&request)
}

/// The start of a body, for messages.
pub fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() <= MAX_QUOTED_BODY {
        return text.to_owned();
    }
    let mut end = MAX_QUOTED_BODY;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The error for an unexpected status: 5xx and 429 may pass (transient, worth a retry),
/// anything else is the request's fault (conflict).
pub fn status_error(method: &str, url: &str, r: &Response) -> Error {
    let message = format!("{method} {url} answered {}: {}", r.status, quote(&r.body));
    if r.status >= 500 || r.status == 429 {
        Error::Transient(message)
    } else {
        Error::Conflict(message)
    }
}

/// The response body as JSON.
pub fn json(method: &str, url: &str, r: &Response) -> Result<serde_json::Value, Error> {
    serde_json::from_slice(&r.body).map_err(|e| {
        Error::Conflict(format!(
            "{method} {url} answered {} with a body that is not JSON ({e}): {}",
            r.status,
            quote(&r.body)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_operators_write_them() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("3"), Ok(Duration::from_secs(3)));
        assert!(duration("0s").is_err());
        assert!(duration("5 days").is_err());
        assert!(duration("25h").is_err());
    }
}
