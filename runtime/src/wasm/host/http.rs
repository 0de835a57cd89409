//! Outgoing HTTP (`wasi:http/outgoing-handler`), filtered by the provider's `net` grants:
//! a request goes out only to a granted origin, and during `read` and `diff` only as GET
//! or HEAD. Everything else is refused before a connection is made, with the error code
//! `HTTP-request-denied` for the guest and a logged denial naming provider, resource,
//! operation and capability. Sockets and DNS for the guest itself stay off.

use super::{CallInfo, Denial, Denials, denial_text};
use crate::wasm::grants::{Capabilities, Denied, Mode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// Default connect timeout for outgoing requests; the call's deadline bounds the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What drives a sent request's connection.
type SendIo = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

/// The `wasi:http` hooks of one instance.
pub struct Hooks {
    grants: Arc<Capabilities>,
    mode: Mode,
    call: CallInfo,
    denials: Denials,
}

impl Hooks {
    pub fn new(grants: Arc<Capabilities>, mode: Mode, call: CallInfo) -> Self {
        Hooks {
            grants,
            mode,
            call,
            denials: Denials::default(),
        }
    }

    pub fn begin_call(&mut self, call: CallInfo) {
        self.call = call;
        self.denials = Denials::default();
    }

    pub fn take_denials(&mut self) -> Denials {
        std::mem::take(&mut self.denials)
    }
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let mut request = request;
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let method = request.method().as_str().to_owned();
        // `user@host`: the connection would be made to the whole authority, not to the
        // host that was checked. Refused outright.
        let userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
        let checked = if userinfo {
            Err(Denied::Net {
                provider: self.grants.provider().to_owned(),
                origin: format!("{uri} (user information in the address)"),
            })
        } else {
            self.grants
                .check_http(&method, &scheme, &host, port, self.mode)
        };
        let (credentials, ca) = match &checked {
            Ok(b) => (b.credentials.clone(), b.ca.clone()),
            Err(_) => (None, None),
        };
        if let Err(denied) = checked {
            let mutation = matches!(denied, Denied::Method { .. });
            let message = denial_text(&format!("{method} {uri}"), &denied, &self.call, "net");
            let provider = self.grants.provider().to_owned();
            self.denials.record(
                &provider,
                &self.call,
                Denial {
                    capability: "net",
                    message,
                    mutation_during_plan: mutation,
                },
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // Brokered credentials: whatever the guest put under that header is replaced.
        if let Some(c) = &credentials
            && let (Ok(name), Ok(mut value)) = (
                http::HeaderName::from_bytes(c.header.as_bytes()),
                http::HeaderValue::from_str(&c.value),
            )
        {
            value.set_sensitive(true);
            let headers = request.headers_mut();
            headers.remove(&name);
            headers.insert(name, value);
            // The response is searched for the secret byte for byte: it must come back
            // whole and as sent — not compressed, not a slice of it.
            headers.insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static("identity"),
            );
            headers.remove(http::header::RANGE);
        }
        // Nothing of the request outlives the call's deadline: connect, TLS, first byte
        // and the gaps between body chunks are all bounded by the time left, and the whole
        // exchange by the deadline itself.
        let deadline = self.call.deadline;
        let left = deadline.saturating_duration_since(Instant::now());
        let mut options = options.unwrap_or_default();
        options.connect_timeout =
            Some(options.connect_timeout.unwrap_or(CONNECT_TIMEOUT).min(left));
        options.first_byte_timeout = Some(options.first_byte_timeout.unwrap_or(left).min(left));
        options.between_bytes_timeout =
            Some(options.between_bytes_timeout.unwrap_or(left).min(left));
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io): (http::Response<WasiBody>, SendIo) = match ca {
                None => {
                    let sent = tokio::time::timeout_at(
                        deadline.into(),
                        wasmtime_wasi_http::default_send_request(request, Some(options)),
                    )
                    .await
                    .map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)??;
                    (
                        sent.0.map(BodyExt::boxed_unsync),
                        Box::new(sent.1) as SendIo,
                    )
                }
                Some(ca) => {
                    tokio::time::timeout_at(deadline.into(), send_with_roots(request, &ca, options))
                        .await
                        .map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)??
                }
            };
            let io = Box::into_pin(io);
            let io = async move {
                tokio::time::timeout_at(deadline.into(), io)
                    .await
                    .map_err(|_| wasmtime_wasi_http::Error::ConnectionReadTimeout)?
            };
            let Some(c) = credentials else {
                return Ok((response, Box::new(io) as SendIo));
            };
            // A server may echo what it was sent (a debug endpoint, an error page): the
            // secret is taken out of the response before the guest can read it.
            let io = Driver(tokio::spawn(io));
            let (parts, body) = redact_response(response, &c.forms, deadline).await?;
            Ok((
                http::Response::from_parts(parts, body),
                Box::new(io.finish()) as SendIo,
            ))
        })
    }
}

/// Most bytes of a response from an origin with brokered credentials: such a response is
/// read whole (to take the secret out of it) before the guest sees it.
pub const MAX_BROKERED_RESPONSE: usize = 16 * 1024 * 1024;

/// What replaces a secret in a response.
const REDACTED: &[u8] = b"(redacted)";

/// Replace every occurrence of `forms` (longest first) in `bytes`.
fn redact(bytes: &[u8], forms: &[String]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for form in forms.iter().map(String::as_bytes).filter(|f| !f.is_empty()) {
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(form) {
                next.extend_from_slice(REDACTED);
                i += form.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

/// The response with the secret taken out of its headers and its body (read whole, up to
/// [`MAX_BROKERED_RESPONSE`], before the deadline).
async fn redact_response<B>(
    response: http::Response<B>,
    forms: &[String],
    deadline: Instant,
) -> wasmtime_wasi_http::Result<(http::response::Parts, WasiBody)>
where
    B: hyper::body::Body<Data = bytes::Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
{
    use http_body_util::{BodyExt, Full, Limited};
    let (mut parts, body) = response.into_parts();
    // Asked for `identity`: anything else could hide the secret from the search.
    if let Some(coding) = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .filter(|c| !c.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(wasmtime_wasi_http::Error::HttpResponseContentCoding(Some(
            String::from_utf8_lossy(coding.as_bytes()).into_owned(),
        )));
    }
    for value in parts.headers.values_mut() {
        let redacted = redact(value.as_bytes(), forms);
        if redacted != value.as_bytes()
            && let Ok(v) = http::HeaderValue::from_bytes(&redacted)
        {
            *value = v;
        }
    }
    let collected = tokio::time::timeout_at(
        deadline.into(),
        Limited::new(body, MAX_BROKERED_RESPONSE).collect(),
    )
    .await
    .map_err(|_| wasmtime_wasi_http::Error::ConnectionReadTimeout)?
    .map_err(|_| wasmtime_wasi_http::Error::HttpResponseBodySize(None))?;
    let bytes = redact(&collected.to_bytes(), forms);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    let body = Full::new(bytes::Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok((parts, body))
}

/// Send `request` over HTTPS trusting only the certificates of `ca` (a net grant's
/// `ca:`): wasmtime-wasi-http's own client trusts the public web's roots, which a
/// private CA is not among. The same steps: connect, TLS, an HTTP/1 handshake, the
/// request with its path only; the caller bounds it all by the call's deadline.
async fn send_with_roots(
    mut request: http::Request<WasiBody>,
    ca: &crate::manifest::CaBundle,
    options: RequestOptions,
) -> wasmtime_wasi_http::Result<(http::Response<WasiBody>, SendIo)> {
    use http_body_util::BodyExt;
    use wasmtime_wasi_http::Error;
    let uri = request.uri().clone();
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    if uri.scheme_str() != Some("https") {
        return Err(Error::HttpRequestUriInvalid);
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in &ca.certificates {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|_| Error::TlsCertificateError)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| Error::TlsProtocolError)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connect = options.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
    let host_only = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tcp = tokio::time::timeout(
        connect,
        tokio::net::TcpStream::connect((host_only.as_str(), port)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(|_| Error::ConnectionRefused)?;
    let name = rustls::pki_types::ServerName::try_from(host_only)
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|_| Error::TlsCertificateError)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, WasiBody>(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|_| Error::ConnectionTerminated)?;
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    // The connection is driven by a task of its own (so the response can arrive while
    // this waits for it), stopped when the guest lets go of the exchange.
    let io = Driver(tokio::spawn(async move {
        conn.await.map_err(|_| Error::ConnectionTerminated)
    }));
    let first_byte = options.first_byte_timeout.unwrap_or(CONNECT_TIMEOUT);
    let response = tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(|_| Error::HttpResponseIncomplete)?;
    Ok((
        response.map(|b| b.map_err(|_| Error::HttpResponseIncomplete).boxed_unsync()),
        Box::new(io.finish()),
    ))
}

/// A connection's task, aborted when dropped (the guest let go of the exchange).
struct Driver(tokio::task::JoinHandle<wasmtime_wasi_http::Result<()>>);

impl Driver {
    async fn finish(mut self) -> wasmtime_wasi_http::Result<()> {
        (&mut self.0)
            .await
            .map_err(|_| wasmtime_wasi_http::Error::ConnectionTerminated)?
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn every_form_of_the_secret_is_taken_out() {
        let forms = vec!["Bearer s3cr3t-token".to_owned(), "s3cr3t-token".to_owned()];
        assert_eq!(
            redact(b"auth=Bearer s3cr3t-token; raw=s3cr3t-token.", &forms),
            b"auth=(redacted); raw=(redacted).".to_vec()
        );
        assert_eq!(redact(b"nothing here", &forms), b"nothing here".to_vec());
    }
}
