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
        let uri = request.uri();
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
            let sent = tokio::time::timeout_at(
                deadline.into(),
                wasmtime_wasi_http::default_send_request(request, Some(options)),
            )
            .await
            .map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)?;
            let (response, io) = sent?;
            let io = async move {
                tokio::time::timeout_at(deadline.into(), io)
                    .await
                    .map_err(|_| wasmtime_wasi_http::Error::ConnectionReadTimeout)?
            };
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            ))
        })
    }
}
