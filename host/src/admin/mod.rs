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
mod learn;
mod queue;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::relay::Relay;
use crate::tenants::Tenant;

/// Serve the admin API on `listener` until the task is dropped.
pub async fn serve(relay: Arc<Relay>, listener: tokio::net::TcpListener, tokens: auth::Tokens) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else { continue };
        let (relay, tokens) = (relay.clone(), tokens.clone());
        tokio::spawn(async move {
            let Some((head, body)) = read_request(&mut stream).await else { return };
            let (status, content_type, body) = match refusal(&tokens, &head, peer) {
                Some(refused) => refused,
                None => route(&relay, &head, body).await,
            };
            let challenge =
                if status.starts_with("401") { "WWW-Authenticate: Bearer realm=\"sluice\"\r\n" } else { "" };
            let response = format!(
                "HTTP/1.1 {status}\r\n{challenge}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// The request line and headers, and the body its `Content-Length` announces (bounded by
/// [`crate::policy::learn::MAX_LESSON_BYTES`]; a longer one is cut, and the message learned is what came).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 || data.len() > 16384 {
            break data.len();
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(crate::policy::learn::MAX_LESSON_BYTES);
    let mut body = data.split_off(end);
    while body.len() < length {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    Some((head, body))
}

/// The answer to a request its token does not allow (`401` without a valid token, `403` for
/// a change asked with the read-only one), logged without the token; none when it may go on.
fn refusal(
    tokens: &auth::Tokens,
    head: &str,
    peer: std::net::SocketAddr,
) -> Option<(&'static str, &'static str, String)> {
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let header = head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v)
    });
    let needed = if method == "GET" { auth::Access::Read } else { auth::Access::Admin };
    let error = |message: &str| serde_json::json!({ "error": message }).to_string();
    match (tokens.access(header), needed) {
        (auth::Access::Admin, _) | (auth::Access::Read, auth::Access::Read) => None,
        (auth::Access::Read, _) => {
            tracing::warn!(client = %peer, method, path, "admin API: a change asked with the read-only token; refused");
            Some(("403 Forbidden", "application/json", error("the read-only token cannot change anything")))
        }
        (auth::Access::None, _) => {
            let why = if header.is_some() { "a wrong token" } else { "no token" };
            tracing::warn!(client = %peer, method, path, "admin API: request with {why}; refused");
            Some(("401 Unauthorized", "application/json", error("Authorization: Bearer TOKEN required")))
        }
    }
}

async fn route(relay: &Arc<Relay>, head: &str, body: Vec<u8>) -> (&'static str, &'static str, String) {
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    const JSON: &str = "application/json";
    match (method, path) {
        ("GET", "/metrics") => {
            relay.metrics.set_prepared_instances(relay.generations.loader.engine.prepared_instances());
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", relay.metrics.render())
        }
        ("GET", "/api/policies") => ("200 OK", JSON, policies(relay).to_string()),
        ("GET", "/api/tenants") => ("200 OK", JSON, tenants(relay).await.to_string()),
        ("POST", "/api/reload") => {
            let report = relay.generations.reload("admin API").await;
            let status = if report.result == "failed" { "500 Internal Server Error" } else { "200 OK" };
            (status, JSON, serde_json::to_string(&report).unwrap_or_default())
        }
        ("POST", "/api/rollback") => {
            let tenant = query.split('&').find_map(|kv| kv.strip_prefix("tenant=")).unwrap_or("");
            match relay.generations.rollback(&percent_decode(tenant)).await {
                Ok(generation) => (
                    "200 OK",
                    JSON,
                    serde_json::json!({"tenant": tenant, "generation": generation}).to_string(),
                ),
                Err(e) => ("409 Conflict", JSON, serde_json::json!({"error": e}).to_string()),
            }
        }
        ("POST", "/api/learn") => {
            let (status, answer) = learn::learn(relay, query, body).await;
            (status, JSON, answer.to_string())
        }
        ("POST", "/api/release") => {
            let (status, answer) = learn::release(relay, query).await;
            (status, JSON, answer.to_string())
        }
        ("POST", "/api/queue/flush") => {
            let (status, answer) = queue::flush(relay).await;
            (status, JSON, answer.to_string())
        }
        ("POST", "/api/queue/delete") => {
            let (status, answer) = queue::delete(relay, query).await;
            (status, JSON, answer.to_string())
        }
        (
            _,
            "/metrics" | "/api/policies" | "/api/tenants" | "/api/reload" | "/api/rollback" | "/api/learn"
            | "/api/release" | "/api/queue/flush" | "/api/queue/delete",
        ) => ("405 Method Not Allowed", JSON, serde_json::json!({"error": "method not allowed"}).to_string()),
        _ => ("404 Not Found", JSON, serde_json::json!({"error": "no such endpoint"}).to_string()),
    }
}

/// `GET /api/tenants`: each tenant's domains, route, chain, generation and counters; the
/// edge's chain and counters beside them.
async fn tenants(relay: &Relay) -> serde_json::Value {
    let snapshot = relay.snapshot();
    let mut described = Vec::with_capacity(snapshot.tenants.len() + 1);
    for tenant in snapshot.parties() {
        let kv_usage = match relay.generations.loader.kv().usage(&tenant.name).await {
            Ok(u) => serde_json::json!(u),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        described.push(describe_tenant(relay, tenant, kv_usage));
    }
    let edge = described.remove(0);
    serde_json::json!({ "edge": edge, "tenants": described })
}

fn describe_tenant(relay: &Relay, tenant: &Tenant, kv_usage: serde_json::Value) -> serde_json::Value {
    use crate::policy::FailureMode;
    let chain = &tenant.chain;
    let failure_mode = match &chain.settings.failure_mode {
        FailureMode::Tempfail(_) => "tempfail",
        FailureMode::Continue => "continue",
    };
    let thresholds = &chain.settings.thresholds;
    serde_json::json!({
        "tenant": tenant.name,
        "domains": tenant.domains,
        "next_hop": tenant.next_hop.as_ref().map(ToString::to_string),
        "recipients": match &tenant.recipients {
            crate::recipients::Rule::Any => serde_json::json!({ "check": "any" }),
            crate::recipients::Rule::Verify => serde_json::json!({ "check": "verify" }),
            crate::recipients::Rule::List(list) => serde_json::json!({
                "check": "file",
                "file": list.path.display().to_string(),
                "entries": list.len(),
                "invalid_lines": list.problems.len(),
            }),
        },
        "authentication_results": tenant.authentication_results,
        "dkim": tenant.dkim.as_ref().map(|key| serde_json::json!({ "domain": key.domain(), "selector": key.selector() })),
        "reads_sender_checks": chain.reads_sender_checks(),
        "autolearn": tenant.autolearn.map(|a| serde_json::json!({ "spam_score": a.spam_score, "ham_score": a.ham_score })),
        "generation": tenant.generation,
        "previous_generation": relay.generations.previous_generation(&tenant.name),
        "failure_mode": failure_mode,
        "limits": tenant.limits,
        "kv_usage": kv_usage,
        "thresholds": {
            "add_header": thresholds.add_header,
            "quarantine": thresholds.quarantine,
            "reject": thresholds.reject,
        },
        "chain": chain
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| serde_json::json!({
                "name": p.name,
                "version": p.version,
                "mode": if chain.is_shadow(i) { "shadow" } else { "enforce" },
            }))
            .collect::<Vec<_>>(),
        "counters": relay.metrics.tenant(&tenant.name),
    })
}

/// `GET /api/policies`: the edge's and each tenant's generation and policies.
fn policies(relay: &Relay) -> serde_json::Value {
    let snapshot = relay.snapshot();
    let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut described: Vec<serde_json::Value> = snapshot
        .parties()
        .map(|tenant| {
            let policies: Vec<serde_json::Value> = tenant
                .chain
                .policies
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    serde_json::json!({
                        "name": p.name,
                        "version": p.version,
                        "hash": p.hash,
                        "mode": if tenant.chain.is_shadow(i) { "shadow" } else { "enforce" },
                        "file": p.file.display().to_string(),
                        "generation": tenant.generation,
                        "loaded_at": secs(p.loaded_at),
                        "code": p.code.as_str(),
                        "learns": p.learns,
                    })
                })
                .collect();
            serde_json::json!({
                "tenant": tenant.name,
                "generation": tenant.generation,
                "loaded_at": secs(tenant.loaded_at),
                "previous_generation": relay.generations.previous_generation(&tenant.name),
                "domains": tenant.domains,
                "policies": policies,
            })
        })
        .collect();
    let edge = described.remove(0);
    serde_json::json!({ "edge": edge, "tenants": described })
}

/// `text` with `%XX` escapes and `+` decoded.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request to a running relay's admin API (for `sluice reload` and `sluice policy
/// rollback`): the status code and the body.
pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("{addr}: timed out connecting"))?
        .map_err(|e| format!("{addr}: cannot connect: {e} (is the relay running with [admin] listen?)"))?;
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("{addr}: {e}"))?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut response))
        .await
        .map_err(|_| format!("{addr}: no answer"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
