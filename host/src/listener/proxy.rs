//! The PROXY protocol (HAProxy's, versions 1 and 2): how a load balancer in front of the relay
//! tells it the address of the client it stands for.
//!
//! A connection from `server.proxy_trusted_networks` must begin with a header, read here
//! before anything else: its source address then stands for the client everywhere (policies,
//! per-IP limits, `trusted_networks`, Received, logs). A header that is missing, malformed or
//! late closes the connection with a logged reason. A `LOCAL` header (v2) or `UNKNOWN`
//! protocol (v1) — the balancer's own health checks — names no client: the session runs as
//! the proxy's address and that address grants nothing (see [`Origin::Proxy`]).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

pub use crate::smtp::proxy::Origin;
use crate::smtp::proxy::{Parsed, parse};

/// Read the header a proxied connection begins with, within `timeout`: whose address it
/// gave, and any bytes read past it (the client's, to be served first).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(Origin, Vec<u8>), String> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            match parse(&buf) {
                Parsed::Header(origin, used) => return Ok((origin, buf.split_off(used))),
                Parsed::Invalid(why) => return Err(why),
                Parsed::Incomplete => {}
            }
            let n = stream.read(&mut chunk).await.map_err(|e| format!("reading the PROXY header: {e}"))?;
            if n == 0 {
                return Err(if buf.is_empty() {
                    "closed before sending a PROXY header".into()
                } else {
                    "closed in the middle of the PROXY header".into()
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| Err(format!("no complete PROXY header within {} s", timeout.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[tokio::test]
    async fn reading_keeps_what_follows_and_gives_up_in_time() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        client.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 ").await.unwrap();
        let reader = tokio::spawn(async move { read_header(&mut server, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"40000 25\r\nEHLO x\r\n").await.unwrap();
        let (origin, rest) = reader.await.unwrap().unwrap();
        assert_eq!(origin, Origin::Client(SocketAddr::from(([192, 0, 2, 7], 40000))));
        assert_eq!(rest, b"EHLO x\r\n");

        let (_client, mut server) = tokio::io::duplex(1024);
        let e = read_header(&mut server, Duration::from_millis(50)).await.unwrap_err();
        assert!(e.contains("within"), "{e}");
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        let e = read_header(&mut server, Duration::from_secs(1)).await.unwrap_err();
        assert!(e.contains("closed before"), "{e}");
    }
}
