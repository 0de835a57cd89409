//! Outgoing HTTP through `wasi:http`, as a blocking call.
//!
//! The host sends a request only to an origin the operator granted (`net:` grants),
//! only as GET or HEAD during `read` and `diff`, and adds any credentials the grant
//! carries itself — a provider never sees them. Bodies are read up to
//! [`MAX_RESPONSE_BODY`]. Built natively (unit tests) there is no HTTP: [`send`] fails.
//!
//! ```no_run
//! use tenet_sdk::http::Request;
//! let response = tenet_sdk::http::send(&Request::get("http://127.0.0.1:8080/health"))?;
//! let healthy = response.status == 200;
//! # Ok::<(), tenet_sdk::http::HttpError>(())
//! ```

use std::time::Duration;

/// Most bytes of a response body read; a longer one is an error.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`, …
    pub method: String,
    /// `scheme://host[:port]/path?query`.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// Longest wait for the connection, and for each part of the response.
    pub timeout: Option<Duration>,
}

impl Request {
    /// A GET of `url`.
    pub fn get(url: &str) -> Self {
        Request::new("GET", url)
    }

    /// A request with no headers and no body.
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Set a JSON body (and its content type).
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self.header("content-type", "application/json")
    }

    /// Set the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body (empty for HEAD).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused it: the origin is not granted, or the method is not allowed now
    /// (only GET and HEAD during plans).
    Denied(String),
    /// Nothing answered yet: refused, unreachable, timed out, cut off. Worth trying again.
    Unavailable(String),
    /// The peer's certificate or TLS handshake failed: not worth trying again.
    Tls(String),
    /// Anything else (a malformed address, an oversized response, a protocol error).
    Failed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "refused by the sandbox: {m}"),
            HttpError::Unavailable(m) | HttpError::Tls(m) | HttpError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::Error {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(_) => crate::Error::CapabilityDenied(e.to_string()),
            HttpError::Unavailable(_) => crate::Error::Transient(e.to_string()),
            HttpError::Tls(_) | HttpError::Failed(_) => crate::Error::Conflict(e.to_string()),
        }
    }
}

/// The parts of a URL the request needs: scheme, authority and path with query.
fn split_url(url: &str) -> Result<(&str, &str, String), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::Failed(format!("`{url}` is not an http(s) URL")))?;
    if scheme != "http" && scheme != "https" {
        return Err(HttpError::Failed(format!(
            "`{url}`: only http and https are supported"
        )));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    // A fragment is never sent.
    let path = path.split('#').next().unwrap_or("/").to_owned();
    if authority.is_empty() {
        return Err(HttpError::Failed(format!("`{url}` names no host")));
    }
    Ok((scheme, authority, path))
}

/// Send `request` and wait for the whole response.
#[cfg(not(target_family = "wasm"))]
pub fn send(request: &Request) -> Result<Response, HttpError> {
    split_url(&request.url)?;
    Err(HttpError::Failed(
        "HTTP is available only inside the component (wasi:http)".into(),
    ))
}

/// Send `request` and wait for the whole response.
#[cfg(target_family = "wasm")]
pub fn send(request: &Request) -> Result<Response, HttpError> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions,
        Scheme,
    };
    use wasip2::io::streams::StreamError;

    let (scheme, authority, path) = split_url(&request.url)?;
    let failed =
        |what: &str| HttpError::Failed(format!("{} {}: {what}", request.method, request.url));
    let mut entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    // A body goes with its length (not chunked): every server reads that. So does no
    // body, for a method that may carry one (DELETE): without a length it would go out
    // as an empty chunked body, which a server that does not read chunked bodies takes
    // for the start of a next request.
    let bodiless = matches!(request.method.to_ascii_uppercase().as_str(), "GET" | "HEAD");
    match &request.body {
        Some(body) => entries.push(("content-length".into(), body.len().to_string().into_bytes())),
        None if !bodiless => entries.push(("content-length".into(), b"0".to_vec())),
        None => {}
    }
    let headers =
        Fields::from_list(&entries).map_err(|e| failed(&format!("invalid header: {e:?}")))?;
    let req = OutgoingRequest::new(headers);
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    req.set_method(&method)
        .map_err(|()| failed("invalid method"))?;
    req.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }))
    .map_err(|()| failed("invalid scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|()| failed("invalid host"))?;
    req.set_path_with_query(Some(&path))
        .map_err(|()| failed("invalid path"))?;
    let options = RequestOptions::new();
    if let Some(t) = request.timeout {
        let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let _ = options.set_between_bytes_timeout(Some(ns));
    }
    let body = req.body().map_err(|()| failed("no request body"))?;
    let pending = outgoing_handler::handle(req, Some(options)).map_err(|e| code(request, e))?;
    {
        let out = body
            .write()
            .map_err(|()| failed("request body not writable"))?;
        for chunk in request.body.as_deref().unwrap_or_default().chunks(4096) {
            out.blocking_write_and_flush(chunk)
                .map_err(|e| failed(&format!("writing the body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| code(request, e))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(code(request, e)),
        _ => return Err(failed("no response")),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| failed("no response body"))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| failed("no response body"))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > MAX_RESPONSE_BODY {
                        return Err(failed(&format!(
                            "the response body is larger than {MAX_RESPONSE_BODY} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Unavailable(format!(
                        "{} {}: the response was cut off: {}",
                        request.method,
                        request.url,
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    return Ok(Response {
        status,
        headers,
        body: bytes,
    });

    fn code(request: &Request, e: ErrorCode) -> HttpError {
        let at = format!("{} {}", request.method, request.url);
        match e {
            ErrorCode::HttpRequestDenied => HttpError::Denied(format!(
                "{at}: the origin is not granted to this provider, or the method is not allowed now"
            )),
            ErrorCode::ConnectionRefused => {
                HttpError::Unavailable(format!("{at}: connection refused"))
            }
            ErrorCode::TlsCertificateError
            | ErrorCode::TlsProtocolError
            | ErrorCode::TlsAlertReceived(_) => HttpError::Tls(format!("{at}: TLS failed ({e:?})")),
            ErrorCode::DnsTimeout
            | ErrorCode::DnsError(_)
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionTerminated
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::ConnectionLimitReached
            | ErrorCode::HttpResponseIncomplete
            | ErrorCode::HttpResponseTimeout => HttpError::Unavailable(format!("{at}: {e:?}")),
            other => HttpError::Failed(format!("{at}: {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a/b?c=1").expect("ok"),
            ("http", "127.0.0.1:8080", "/a/b?c=1".to_owned())
        );
        assert_eq!(
            split_url("https://api.example.com").expect("ok"),
            ("https", "api.example.com", "/".to_owned())
        );
        assert_eq!(
            split_url("http://h?x=1").expect("ok"),
            ("http", "h", "/?x=1".to_owned())
        );
        assert!(split_url("ftp://h/").is_err());
        assert!(split_url("http:///x").is_err());
    }
}
