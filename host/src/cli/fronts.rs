//! The listeners of `sluice serve`: the SMTP listeners (the listener room) and the servers for
//! an MTA in front (`[milter]`, `[policy_delegation]`), bound at start and bound again when a
//! reload changes them — a server whose settings changed stops accepting (its connections
//! finish) and starts anew; a new address that cannot be bound is logged and reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{Config, MtaServerConfig};
use crate::listener::Listeners;
use crate::relay::Relay;

/// Every listener of the relay.
pub struct AllListeners {
    /// SMTP.
    pub smtp: Arc<Listeners>,
    relay: Arc<Relay>,
    /// By server: its settings and its accept loop.
    fronts: Mutex<HashMap<&'static str, (MtaServerConfig, tokio::task::AbortHandle)>>,
}

impl AllListeners {
    /// For `relay`, its SMTP listeners being `smtp`.
    pub fn new(relay: Arc<Relay>, smtp: Arc<Listeners>) -> Arc<Self> {
        Arc::new(Self { smtp, relay, fronts: Mutex::new(HashMap::new()) })
    }

    /// The servers for an MTA in front as `config` says; the errors of those that could not
    /// be bound.
    async fn apply_fronts(&self, config: &Config) -> Vec<String> {
        let mut errors = Vec::new();
        for (key, wanted) in config.mta_servers() {
            let running =
                self.fronts.lock().unwrap_or_else(|p| p.into_inner()).get(key).map(|(s, _)| s.clone());
            if running.as_ref() == wanted {
                continue;
            }
            if let Some((settings, task)) = self.fronts.lock().unwrap_or_else(|p| p.into_inner()).remove(key)
            {
                task.abort();
                tracing::info!(listen = %settings.listen, "{key} server stopped accepting");
            }
            let Some(settings) = wanted.cloned() else { continue };
            let listener = match tokio::net::TcpListener::bind(settings.listen).await {
                Ok(listener) => listener,
                Err(e) => {
                    let error = format!("{key}.listen: cannot listen on {}: {e}", settings.listen);
                    tracing::error!("{error}");
                    errors.push(error);
                    continue;
                }
            };
            tracing::info!(listen = %settings.listen, "{key} server listening");
            let relay = self.relay.clone();
            let task = match key {
                "milter" => tokio::spawn(crate::milter::serve(relay, listener, settings.clone())),
                _ => tokio::spawn(crate::delegation::serve(relay, listener, settings.clone())),
            };
            self.fronts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, (settings, task.abort_handle()));
        }
        errors
    }
}

#[async_trait::async_trait]
impl crate::reload::Listen for AllListeners {
    async fn listen(&self, config: &Config) -> Vec<String> {
        let mut errors = self.smtp.apply(&config.server.listen).await;
        errors.extend(self.apply_fronts(config).await);
        errors
    }
}
