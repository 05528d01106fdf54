//! The listener: sockets, admission, TLS and timers, and nothing the session decides.
//!
//! It binds the `server.listen` addresses (and rebinds them when a reload changes them),
//! admits each connection within the relay's limits ([`admission`]), and serves it with a
//! conversation ([`connection`]). On shutdown it stops accepting, lets the sessions in progress
//! finish up to `server.shutdown_timeout_secs`, and returns; mail that got its 250 is on disk
//! whatever happens to the sessions still open then.

pub mod admission;
pub mod connection;
pub mod input;
pub mod proxy;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::relay::Relay;
use crate::sync::lock;
use admission::Admission;
use connection::Arrival;

/// The relay's listening sockets.
pub struct Listeners {
    relay: Arc<Relay>,
    admission: Arc<Admission>,
    accepting: Mutex<HashMap<SocketAddr, tokio::task::AbortHandle>>,
}

impl Listeners {
    /// Listeners for `relay`, admitting `server.max_connections` sessions at once (read at
    /// start).
    pub fn new(relay: Arc<Relay>) -> Arc<Self> {
        let total = relay.snapshot().config.server.max_connections;
        Arc::new(Self {
            relay,
            admission: Arc::new(Admission::new(total)),
            accepting: Mutex::new(HashMap::new()),
        })
    }

    /// Listen on exactly `addrs`: new addresses are bound (a failure is logged), addresses no
    /// longer listed stop accepting (their open sessions go on). Returns the bind errors.
    pub async fn apply(&self, addrs: &[SocketAddr]) -> Vec<String> {
        let mut errors = Vec::new();
        let wanted: HashSet<SocketAddr> = addrs.iter().copied().collect();
        let running: Vec<SocketAddr> = lock(&self.accepting).keys().copied().collect();
        for addr in &running {
            if !wanted.contains(addr)
                && let Some(task) = lock(&self.accepting).remove(addr)
            {
                task.abort();
                tracing::info!(%addr, "stopped listening");
            }
        }
        for addr in addrs {
            if running.contains(addr) {
                continue;
            }
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    let task = tokio::spawn(accept(self.relay.clone(), self.admission.clone(), listener))
                        .abort_handle();
                    lock(&self.accepting).insert(*addr, task);
                    tracing::info!(%addr, "listening");
                }
                Err(e) => {
                    let error = format!("server.listen: cannot listen on {addr}: {e}");
                    tracing::error!(error = %error);
                    errors.push(error);
                }
            }
        }
        errors
    }

    /// Stop accepting, and wait up to `timeout` for the sessions in progress to end; after
    /// `grace`, sessions between commands get `421 4.3.2` and are closed (`closing`), and
    /// those receiving or storing a message finish. Returns how many were still open.
    pub async fn shutdown(&self, grace: Duration, timeout: Duration, closing: &watch::Sender<bool>) -> usize {
        for (_, task) in lock(&self.accepting).drain() {
            task.abort();
        }
        let active = self.admission.active();
        if active == 0 {
            return 0;
        }
        let grace = grace.min(timeout);
        tracing::info!(
            sessions = active,
            grace_seconds = grace.as_secs(),
            seconds = timeout.as_secs(),
            "waiting for sessions in progress to end"
        );
        if self.admission.drained(grace).await {
            return 0;
        }
        tracing::info!(
            sessions = self.admission.active(),
            "grace period over: sessions waiting for a command get 421 4.3.2; messages being received finish"
        );
        closing.send_replace(true);
        if self.admission.drained(timeout - grace).await { 0 } else { self.admission.active() }
    }
}

/// Accept connections on `listener` until the task is aborted.
async fn accept(relay: Arc<Relay>, admission: Arc<Admission>, listener: tokio::net::TcpListener) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let listener_name = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let arrival = Arrival { peer, listener: listener_name, anonymous: false, buffered: Vec::new() };
        let server = &relay.snapshot().config.server;
        if server.proxy_trusted_networks.iter().any(|net| net.contains(peer.ip())) {
            let timeout = Duration::from_secs(server.proxy_header_timeout_secs);
            let (relay, admission) = (relay.clone(), admission.clone());
            tokio::spawn(async move {
                let Some(arrival) = through_proxy(&relay, &mut stream, arrival, timeout).await else {
                    return;
                };
                admit(relay, &admission, stream, arrival).await;
            });
        } else {
            admit(relay.clone(), &admission, stream, arrival).await;
        }
    }
}

/// Read the PROXY header of a connection from a trusted proxy: the client it stands for, or
/// `None` (logged, counted, the connection closed) when there is no valid header.
async fn through_proxy(
    relay: &Relay,
    stream: &mut tokio::net::TcpStream,
    mut arrival: Arrival,
    timeout: Duration,
) -> Option<Arrival> {
    match proxy::read_header(stream, timeout).await {
        Ok((origin, buffered)) => {
            match origin {
                proxy::Origin::Client(client) => arrival.peer = client,
                proxy::Origin::Proxy => arrival.anonymous = true,
            }
            arrival.buffered = buffered;
            Some(arrival)
        }
        Err(reason) => {
            tracing::warn!(proxy = %arrival.peer, reason = %reason, "connection from a trusted proxy closed: no valid PROXY header");
            relay.metrics.proxy_header_refused();
            let _ = stream.shutdown().await;
            None
        }
    }
}

/// Admit a client within the relay's limits (per-IP ones by its own address) and serve it,
/// or refuse it with a reply.
async fn admit(
    relay: Arc<Relay>,
    admission: &Arc<Admission>,
    mut stream: tokio::net::TcpStream,
    arrival: Arrival,
) {
    let per_ip = relay.snapshot().config.server.max_connections_per_ip;
    match admission.admit(arrival.peer.ip(), per_ip) {
        Ok(admitted) => {
            tokio::spawn(async move {
                // Counted across the fleet too, when the relays share a store.
                let ip = arrival.peer.ip();
                if !relay.shared_connection_opened(ip, per_ip).await {
                    let _ =
                        stream.write_all(&crate::smtp::reply::TOO_MANY_CONNECTIONS_FROM_YOU.render()).await;
                    return;
                }
                connection::serve(relay.clone(), stream, arrival).await;
                relay.shared_connection_closed(ip);
                drop(admitted);
            });
        }
        Err(refusal) => {
            tokio::spawn(async move {
                let _ = stream.write_all(&refusal.render()).await;
            });
        }
    }
}

#[async_trait::async_trait]
impl crate::reload::Listen for Listeners {
    async fn listen(&self, config: &crate::config::Config) -> Vec<String> {
        self.apply(&config.server.listen).await
    }
}
