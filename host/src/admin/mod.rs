//! The admin listener (`[admin] listen`): a small HTTP/1.1 API for operators and scrapers.
//!
//! - `GET /metrics`: the metrics, OpenMetrics text (see [`crate::metrics`]).
//! - `GET /api/policies`: for the edge and per tenant, its generation and each policy's name,
//!   version, content hash, mode, file and load time (JSON).
//! - `GET /api/tenants`: each tenant (and the edge) with its domains, route, limits, chain and
//!   counters.
//! - `POST /api/reload`: reload the configuration and policies now (what SIGHUP and the file
//!   watcher do); answers the [`crate::reload::ReloadReport`].
//! - `POST /api/rollback?tenant=NAME`: put that tenant's previous generation back.
//! - `POST /api/learn?class=spam|ham|forget[&tenant=NAME][&id=ID]`: teach the tenant's
//!   learning policies the message in the body, or queued/quarantined message ID.
//! - `POST /api/release?id=ID[&learn=ham]`: release a message from quarantine (see
//!   [`learn`]).
//! - `POST /api/queue/flush`, `POST /api/queue/delete?id=ID`: every queued message due now;
//!   one message deleted from the queue or the quarantine (see [`queue`]).
//!
//! Every request carries `Authorization: Bearer TOKEN` when `[admin] token_file` is set
//! (see [`auth`]); without it the API is open: bind it to loopback or a management network.

pub mod auth;
mod console;
mod learn;
mod queue;
mod views;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::config::AdminConfig;
use crate::relay::Relay;

/// How long a client may take to send a request's line and headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request line and headers taken (a longer one gets `431`).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What the admin listener serves with.
struct Admin {
    relay: Arc<Relay>,
    tokens: auth::Tokens,
    /// Largest request body taken (`413` beyond).
    max_body: usize,
    /// How long a request's body may take to arrive (`408` beyond).
    body_timeout: Duration,
}

/// Serve the admin API on `listener` until the task is dropped: HTTP/1.1 (hyper), over TLS
/// when `tls` is given, at most `settings.max_connections` connections at once (one more is
/// answered `503` and closed).
pub async fn serve(
    relay: Arc<Relay>,
    listener: tokio::net::TcpListener,
    tokens: auth::Tokens,
    settings: &AdminConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let admin = Arc::new(Admin {
        relay,
        tokens,
        max_body: settings.max_request_bytes,
        body_timeout: Duration::from_secs(settings.request_timeout_secs),
    });
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "admin API: too many connections; refused");
            tokio::spawn(turn_away(stream));
            continue;
        };
        let (admin, tls) = (admin.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => plain(admin, peer, stream).await,
                Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        if connection(admin, peer, stream).await {
                            tracing::warn!(client = %peer, "admin API: request headers not sent in time; closed");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer, error = %e, "admin API: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(client = %peer, "admin API: TLS handshake timed out"),
                },
            }
        });
    }
}

/// A plain connection; one whose request line and headers take longer than
/// [`HEADER_TIMEOUT`] is answered `408` (through a second handle on the socket, hyper having
/// closed its own) and closed.
async fn plain(admin: Arc<Admin>, peer: SocketAddr, stream: tokio::net::TcpStream) {
    let spare = stream.into_std().and_then(|s| Ok((s.try_clone()?, s)));
    let Ok((spare, stream)) = spare else { return };
    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { return };
    if connection(admin, peer, stream).await {
        tracing::warn!(client = %peer, "admin API: request headers not sent within {}s; closed", HEADER_TIMEOUT.as_secs());
        let Ok(mut spare) = tokio::net::TcpStream::from_std(spare) else { return };
        let body = format!(
            r#"{{"error":"the request headers did not arrive within {}s"}}"#,
            HEADER_TIMEOUT.as_secs()
        );
        let answer = format!(
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), spare.write_all(answer.as_bytes())).await;
        let _ = spare.shutdown().await;
    }
}

/// A connection over the cap: `503` and closed.
async fn turn_away(mut stream: tokio::net::TcpStream) {
    let body = r#"{"error":"too many connections to the admin API"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// One connection's request (one each: an idle connection never holds one of the
/// `max_connections`); one whose headers take longer than [`HEADER_TIMEOUT`] is closed (and
/// `true` returned).
async fn connection<S>(admin: Arc<Admin>, peer: SocketAddr, stream: S) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(answer(&admin, peer, request).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    match served {
        Ok(()) => false,
        Err(e) if e.is_timeout() || e.to_string().contains("timeout") => true,
        Err(e) => {
            tracing::debug!(client = %peer, error = %e, "admin API: connection ended");
            false
        }
    }
}

/// A response: status, content type, body.
type Reply = (StatusCode, &'static str, Bytes);

const JSON: &str = "application/json";

fn json_reply(status: &str, value: &serde_json::Value) -> Reply {
    let code = status.get(..3).and_then(|c| c.parse().ok()).and_then(|c| StatusCode::from_u16(c).ok());
    (code.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), JSON, Bytes::from(value.to_string()))
}

fn error_reply(status: StatusCode, message: &str) -> Reply {
    (status, JSON, Bytes::from(serde_json::json!({ "error": message }).to_string()))
}

/// The answer to one request.
async fn answer(admin: &Admin, peer: SocketAddr, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let (status, content_type, body) = match (method.as_str(), path.as_str()) {
        // The console's page holds no data: it asks for the token and sends it with each call.
        ("GET" | "HEAD", "/" | "/index.html") => {
            (StatusCode::OK, "text/html; charset=utf-8", console::page())
        }
        _ => {
            let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            match refusal(&admin.tokens, &method, &path, header, peer) {
                Some(refused) => refused,
                None => match read_body(admin, request).await {
                    Ok(body) => route(&admin.relay, &method, &path, &query, body).await,
                    Err(refused) => {
                        tracing::warn!(client = %peer, method, path, status = %refused.0, "admin API: request body refused");
                        refused
                    }
                },
            }
        }
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sluice\""));
    }
    if matches!(status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The request's body: at most [`Admin::max_body`] bytes (`413`), within
/// [`Admin::body_timeout`] (`408`).
async fn read_body(admin: &Admin, request: Request<Incoming>) -> Result<Vec<u8>, Reply> {
    let too_large = || {
        error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is over the {} bytes admin.max_request_bytes allows", admin.max_body),
        )
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > admin.max_body as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), admin.max_body);
    match tokio::time::timeout(admin.body_timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(error_reply(StatusCode::BAD_REQUEST, &format!("the request body: {e}"))),
        Err(_) => Err(error_reply(
            StatusCode::REQUEST_TIMEOUT,
            &format!("the request body did not arrive within {}s", admin.body_timeout.as_secs()),
        )),
    }
}

/// The answer to a request its token does not allow (`401` without a valid token, `403` for
/// a change asked with the read-only one), logged without the token; none when it may go on.
fn refusal(
    tokens: &auth::Tokens,
    method: &str,
    path: &str,
    header: Option<&str>,
    peer: SocketAddr,
) -> Option<Reply> {
    let needed = if matches!(method, "GET" | "HEAD") { auth::Access::Read } else { auth::Access::Admin };
    match (tokens.access(header), needed) {
        (auth::Access::Admin, _) | (auth::Access::Read, auth::Access::Read) => None,
        (auth::Access::Read, _) => {
            tracing::warn!(client = %peer, method, path, "admin API: a change asked with the read-only token; refused");
            Some(error_reply(StatusCode::FORBIDDEN, "the read-only token cannot change anything"))
        }
        (auth::Access::None, _) => {
            let why = if header.is_some() { "a wrong token" } else { "no token" };
            tracing::warn!(client = %peer, method, path, "admin API: request with {why}; refused");
            Some(error_reply(StatusCode::UNAUTHORIZED, "Authorization: Bearer TOKEN required"))
        }
    }
}

async fn route(relay: &Arc<Relay>, method: &str, path: &str, query: &str, body: Vec<u8>) -> Reply {
    let answer = match (method, path) {
        ("GET", "/metrics") => {
            relay.metrics.set_prepared_instances(relay.generations.loader.engine.prepared_instances());
            let text = relay.metrics.render();
            return (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                Bytes::from(text),
            );
        }
        ("GET", "/api/policies") => ("200 OK", views::policies(relay)),
        ("GET", "/api/listeners") => ("200 OK", views::listeners(relay)),
        ("GET", "/api/tenants") => ("200 OK", views::tenants(relay).await),
        ("GET", "/api/transactions") => ("200 OK", relay.recent.to_json(query)),
        ("GET", "/api/queue") => queue::list(relay, query).await,
        ("GET", "/api/queue/message") => queue::message(relay, query).await,
        ("GET", "/api/fleet") => match relay.fleet.get() {
            Some(fleet) => match fleet.describe().await {
                Ok(described) => ("200 OK", described),
                Err(e) => (
                    "503 Service Unavailable",
                    serde_json::json!({ "error": format!("the fleet's store: {e}") }),
                ),
            },
            None => (
                "404 Not Found",
                serde_json::json!({ "error": "this relay is not a fleet node ([fleet] node)" }),
            ),
        },
        ("POST", "/api/reload") => {
            let report = relay.generations.reload("admin API").await;
            let status = if report.result == "failed" { "500 Internal Server Error" } else { "200 OK" };
            let mut answer = serde_json::to_value(&report).unwrap_or_default();
            if let Some(fleet) = relay.fleet.get() {
                answer["fleet"] = announced(fleet.announce("reload", None).await);
            }
            (status, answer)
        }
        ("POST", "/api/rollback") => {
            let tenant = learn::param(query, "tenant").unwrap_or_default();
            match relay.generations.rollback(&tenant).await {
                Ok(generation) => {
                    let mut answer = serde_json::json!({"tenant": tenant, "generation": generation});
                    if let Some(fleet) = relay.fleet.get() {
                        answer["fleet"] = announced(fleet.announce("rollback", Some(&tenant)).await);
                    }
                    ("200 OK", answer)
                }
                Err(e) => ("409 Conflict", serde_json::json!({"error": e})),
            }
        }
        ("POST", "/api/learn") => learn::learn(relay, query, body).await,
        ("POST", "/api/release") => learn::release(relay, query).await,
        ("POST", "/api/queue/flush") => queue::flush(relay, query).await,
        ("POST", "/api/queue/delete") => queue::delete(relay, query).await,
        ("POST", "/api/queue/hold") => queue::hold(relay, query).await,
        (
            _,
            "/metrics" | "/api/policies" | "/api/listeners" | "/api/tenants" | "/api/transactions"
            | "/api/queue" | "/api/fleet" | "/api/queue/message" | "/api/reload" | "/api/rollback"
            | "/api/learn" | "/api/release" | "/api/queue/flush" | "/api/queue/delete" | "/api/queue/hold",
        ) => return error_reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => return error_reply(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    json_reply(answer.0, &answer.1)
}

/// What announcing a change to the fleet came to, for the answer.
fn announced(result: Result<i64, String>) -> serde_json::Value {
    match result {
        Ok(seq) => serde_json::json!({ "announced": seq }),
        Err(e) => serde_json::json!({ "error": format!("not announced to the fleet: {e}") }),
    }
}

pub(crate) use crate::spool::filter::decode as percent_decode;

/// A request to a running relay's admin API (for `sluice reload`, `policy rollback` and
/// `queue`): the status code and the body. Over TLS when `pinned` names the certificate file
/// the relay serves (its `[admin] tls_cert`), which is then the only one accepted.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    pinned: Option<&std::path::Path>,
) -> Result<(u16, String), String> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("{addr}: timed out connecting"))?
        .map_err(|e| format!("{addr}: cannot connect: {e} (is the relay running with [admin] listen?)"))?;
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let response = match pinned {
        None => exchange(stream, &request).await,
        Some(cert) => {
            let connector = crate::tls::pinned_connector(cert)?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream))
                .await
                .map_err(|_| format!("{addr}: TLS handshake timed out"))?
                .map_err(|e| format!("{addr}: TLS: {e}"))?;
            exchange(stream, &request).await
        }
    }
    .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Write `request`, read the answer to its end.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<Vec<u8>, String> {
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut response))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(response)
}
