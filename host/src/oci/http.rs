//! The few HTTP requests an OCI registry needs (the distribution API), over hyper's HTTP/1.1
//! client: plain for the registries `[oci] insecure_registries` names (a registry on one's
//! own machine or network), TLS with the system's roots for the others.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// How long one request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A response: status, headers and body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// A header's value, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `method url` with `headers` and `body`; `plain`: without TLS.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    plain: bool,
) -> Result<Answer, String> {
    let failed = |e: &dyn std::fmt::Display| format!("{method} {url}: {e}");
    let send = async {
        let uri: hyper::Uri = url.parse().map_err(|e| failed(&e))?;
        let host = uri.host().ok_or_else(|| failed(&"no host"))?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(if plain { 80 } else { 443 });
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| failed(&e))?;
        let mut request =
            hyper::Request::builder().method(method).uri(uri.path_and_query().map_or("/", |p| p.as_str()));
        request = request.header("host", uri.authority().map_or(host.as_str(), |a| a.as_str()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| failed(&e))?;
        let response = if plain {
            exchange(TokioIo::new(stream), request).await
        } else {
            let connector = crate::tls::verifying_connector(None)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| failed(&e))?;
            let stream = connector.connect(name, stream).await.map_err(|e| failed(&e))?;
            exchange(TokioIo::new(stream), request).await
        };
        response.map_err(|e| failed(&e))
    };
    tokio::time::timeout(TIMEOUT, send)
        .await
        .map_err(|_| format!("{method} {url}: no answer within {}s", TIMEOUT.as_secs()))?
}

async fn exchange<S>(io: TokioIo<S>, request: hyper::Request<Full<Bytes>>) -> Result<Answer, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body })
}
