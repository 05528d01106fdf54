//! Sluice inside an existing MTA: a milter server (`[milter] listen`) for Postfix's
//! `smtpd_milters` or Sendmail's `INPUT_MAIL_FILTER`. Each SMTP session the MTA reports is
//! judged by the same conversation, tenants, chains and judge as the relay's own sessions
//! ([`session`]); the protocol is [`codec`], without I/O.

pub mod codec;
mod edits;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::MtaServerConfig;
use crate::relay::Relay;
use codec::Decoder;
use session::MilterSession;

/// Accept the MTA's connections on `listener` until the process ends.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener, settings: MtaServerConfig) {
    accept(relay, listener, settings, "milter", connection).await;
}

/// The accept loop of a server for an MTA in front (`server`: `milter` or
/// `policy_delegation`): at most `max_connections` at once, one more closed at once (the
/// MTA then applies its default action), each connection served by `serve`, counted in the
/// metrics while it is open.
pub(crate) async fn accept<F, Fut>(
    relay: Arc<Relay>,
    listener: TcpListener,
    settings: MtaServerConfig,
    server: &'static str,
    serve: F,
) where
    F: Fn(Arc<Relay>, TcpStream, String, Duration) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send,
{
    let name = format!("{server}:{}", settings.listen);
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let idle = Duration::from_secs(settings.idle_timeout_secs);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, listener = %name, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            relay.metrics.event(crate::config::EDGE, &format!("{server}_connection_refused"));
            tracing::warn!(%peer, listener = %name, "connection refused: [{server}] max_connections reached");
            continue;
        };
        let (relay, name) = (relay.clone(), name.clone());
        tokio::spawn(async move {
            let _slot = slot;
            relay.metrics.front(server, 1);
            let ended = serve(relay.clone(), stream, name, idle).await;
            relay.metrics.front(server, -1);
            if let Err(e) = ended {
                tracing::info!(%peer, error = %e, "{server} connection ended");
            }
        });
    }
}

/// One connection from the MTA: commands in, responses out, until it quits or goes silent.
async fn connection(
    relay: Arc<Relay>,
    mut stream: TcpStream,
    name: String,
    idle: Duration,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut session = MilterSession::new(relay, name);
    let mut decoder = Decoder::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match tokio::time::timeout(idle, stream.read(&mut buffer)).await {
            Ok(read) => read?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "silent past idle_timeout_secs",
                ));
            }
        };
        if read == 0 {
            return Ok(());
        }
        decoder.feed(&buffer[..read]);
        let mut out = Vec::new();
        loop {
            let command = decoder
                .next_command()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.0))?;
            let Some(command) = command else { break };
            let quit = matches!(command, codec::Command::Quit);
            for response in session.handle(command).await {
                out.extend_from_slice(&response.encode());
            }
            if quit {
                stream.write_all(&out).await?;
                return Ok(());
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
    }
}
