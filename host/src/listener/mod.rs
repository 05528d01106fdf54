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

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::relay::Relay;
use admission::Admission;

/// The relay's listening sockets.
pub struct Listeners {
    relay: Arc<Relay>,
    admission: Arc<Admission>,
    accepting: Mutex<HashMap<SocketAddr, tokio::task::AbortHandle>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Stop accepting, and wait up to `timeout` for the sessions in progress to end. Returns
    /// how many were still open.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        for (_, task) in lock(&self.accepting).drain() {
            task.abort();
        }
        let active = self.admission.active();
        if active > 0 {
            tracing::info!(
                sessions = active,
                seconds = timeout.as_secs(),
                "waiting for sessions in progress to end"
            );
        }
        if self.admission.drained(timeout).await { 0 } else { self.admission.active() }
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
        let per_ip = relay.snapshot().config.server.max_connections_per_ip;
        let session_relay = relay.clone();
        match admission.admit(peer.ip(), per_ip) {
            Ok(admitted) => {
                tokio::spawn(async move {
                    connection::serve(session_relay, stream, peer).await;
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
}

#[async_trait::async_trait]
impl crate::reload::Listen for Listeners {
    async fn listen(&self, addrs: &[SocketAddr]) -> Vec<String> {
        self.apply(addrs).await
    }
}
