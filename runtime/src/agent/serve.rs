//! The agent's HTTP endpoint (opt-in, loopback unless told otherwise): `GET /metrics`
//! (OpenMetrics when asked for in `Accept`, else the Prometheus text format), `GET /healthz` (alive: the loop ticks and no run is past its
//! deadline), `GET /readyz` (a run has completed; the last error if any), and
//! `POST /run` (wake the agent now; the run is coalesced like any other trigger and
//! reconciles everything — it carries no parameters, so it can ask for nothing else).
//! Two routes and a trigger need no router: hyper, already in the tree.

use super::{Health, Trigger};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// What the handlers read.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<super::metrics::Metrics>,
    pub health: Arc<Mutex<Health>>,
    pub wake: UnboundedSender<Trigger>,
}

/// Bind `addr` and serve until the runtime stops; the bound address (port 0 picks one).
pub async fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<SocketAddr> {
    crate::http::serve(addr, move |req| {
        let r = handle(req, &shared);
        async move { r }
    })
    .await
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            // OpenMetrics for who asks for it (Prometheus does), else the classic text.
            let open = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            if open {
                reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    shared.metrics.encode(),
                )
            } else {
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    shared.metrics.encode_prometheus(),
                )
            }
        }
        (&Method::GET, "/healthz") => {
            let h = shared.health.lock().map(|h| h.clone()).unwrap_or_default();
            let (status, body) = h.liveness();
            reply(status, JSON, body.to_string())
        }
        (&Method::GET, "/readyz") => {
            let h = shared.health.lock().map(|h| h.clone()).unwrap_or_default();
            let (status, body) = h.readiness();
            reply(status, JSON, body.to_string())
        }
        (&Method::POST, "/run") => {
            let _ = shared.wake.send(Trigger::Http);
            reply(StatusCode::ACCEPTED, JSON, r#"{"queued":true}"#.to_owned())
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/run") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            JSON,
            r#"{"error":"method not allowed"}"#.to_owned(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            JSON,
            r#"{"error":"not found: /metrics, /healthz, /readyz, POST /run"}"#.to_owned(),
        ),
    }
}
