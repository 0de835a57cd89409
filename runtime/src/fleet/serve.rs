//! `tenet fleet serve`: the ingest endpoint in front of the fleet database. Nodes never
//! hold database credentials: each authenticates with its own bearer token (issued by
//! `tenet fleet enroll`, stored only as a sha256) and can only report for itself — the
//! node a report is stored under is the token's, and a report naming another is refused.
//!
//! - `POST /v1/reports`: a JSON array of [`Report`]s (at most [`MAX_BATCH`], body at
//!   most [`MAX_BODY_BYTES`]); every report is checked before any is stored; the answer
//!   says how many were stored, already there, or past the retention.
//! - `GET /healthz`: 200 while the database answers.
//!
//! Plain HTTP, on loopback unless told otherwise: a non-loopback address needs
//! `--insecure-listen` (put a TLS-terminating proxy in front).

use super::db::{FleetDb, FleetError};
use super::{MAX_BATCH, MAX_BODY_BYTES, Report};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A database failure as a node sees it: no detail of the database (logged here).
fn unavailable(e: &FleetError) -> Response<Full<Bytes>> {
    tracing::error!("{e}");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the fleet database is unavailable; retry later",
    )
}

/// What the service counts (shown by `/healthz`).
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub refused: AtomicU64,
}

#[derive(Clone)]
struct Shared {
    db: Arc<FleetDb>,
    counters: Arc<Counters>,
}

/// Bind `addr` and serve until the runtime stops; the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    db: Arc<FleetDb>,
    counters: Arc<Counters>,
) -> std::io::Result<SocketAddr> {
    let shared = Shared { db, counters };
    crate::http::serve(addr, move |req| {
        let shared = shared.clone();
        async move { handle(req, &shared).await }
    })
    .await
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({"error": message.into()}))
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/reports") => {
            let r = ingest(req, shared).await;
            if r.status() != StatusCode::OK {
                shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
        (&Method::GET, "/healthz") => match shared.db.conn().await {
            Ok(c) => match c.simple_query("SELECT 1").await {
                Ok(_) => json(
                    StatusCode::OK,
                    serde_json::json!({
                        "status": "ok",
                        "accepted": shared.counters.accepted.load(Ordering::Relaxed),
                        "duplicates": shared.counters.duplicates.load(Ordering::Relaxed),
                        "refused": shared.counters.refused.load(Ordering::Relaxed),
                    }),
                ),
                Err(e) => unavailable(&FleetError::Invalid(e.to_string())),
            },
            Err(e) => unavailable(&e),
        },
        (_, "/v1/reports" | "/healthz") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not found: POST /v1/reports, GET /healthz",
        ),
    }
}

async fn ingest(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .map(str::to_owned);
    let Some(token) = token else {
        return error(
            StatusCode::UNAUTHORIZED,
            "a node reports with `Authorization: Bearer TOKEN` (tenet fleet enroll)",
        );
    };
    let node = match shared.db.authenticate(&token).await {
        Ok(Some(n)) => n,
        Ok(None) => return error(StatusCode::UNAUTHORIZED, "unknown or deactivated token"),
        Err(e) => return unavailable(&e),
    };
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body could not be read within {MAX_BODY_BYTES} bytes: {e}"),
            );
        }
    };
    let reports: Vec<Report> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("not a JSON array of reports: {e}"),
            );
        }
    };
    if reports.len() > MAX_BATCH {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} reports (limit {MAX_BATCH} per request)", reports.len()),
        );
    }
    let mut problems = Vec::new();
    for r in &reports {
        if r.node != node.1 {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "this token is node `{}`'s; a node reports only for itself (run {} names `{}`)",
                    node.1, r.seq, r.node
                ),
            );
        }
        if let Err(p) = r.check() {
            problems.push(format!("run {}: {p}", r.seq));
        }
    }
    if !problems.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, problems.join("\n"));
    }
    match shared.db.ingest(node.0, &reports).await {
        Ok(i) => {
            shared
                .counters
                .accepted
                .fetch_add(i.accepted as u64, Ordering::Relaxed);
            shared
                .counters
                .duplicates
                .fetch_add(i.duplicates as u64, Ordering::Relaxed);
            json(StatusCode::OK, serde_json::json!(i))
        }
        Err(FleetError::Invalid(m)) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
        Err(e) => unavailable(&e),
    }
}
