//! One session over a socket: the conversation ([`crate::conversation`]) driven with the
//! client's bytes, its actions carried out — replies written (held while the client's input is
//! not drained: PIPELINING), stages run, messages stored, passwords checked, TLS started,
//! timeouts kept. Everything the session decides is the conversation's; this file only moves
//! bytes and waits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use super::input::Input;
use crate::conversation::{Action, Client, Conversation, Stages};
use crate::policy::TlsInfo;
use crate::relay::Relay;

/// How a stretch of the session over one stream ended.
enum Ended {
    /// The session is over.
    Closed,
    /// The client asked for TLS: go on over a TLS stream.
    StartTls,
}

/// Who a connection is from.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The client's address (from a PROXY header when a proxy sent one).
    pub peer: SocketAddr,
    /// The listener's name (its address).
    pub listener: String,
    /// The address is a proxy's own and stands for no client ([`Client::anonymous`]).
    pub anonymous: bool,
    /// Bytes of the client's already read (past a PROXY header).
    pub buffered: Vec<u8>,
}

/// Serve one admitted client on a TCP connection until the session ends.
pub async fn serve(relay: Arc<Relay>, stream: TcpStream, arrival: Arrival) {
    let _ = stream.set_nodelay(true);
    serve_arrival(relay, stream, arrival).await;
}

/// Serve one client on any stream (a TCP connection, or an in-memory duplex in tests) until
/// the session ends: `peer` is the client's address, `listener` the name of the listener.
pub async fn serve_stream<S>(relay: Arc<Relay>, stream: S, peer: SocketAddr, listener: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve_arrival(relay, stream, Arrival { peer, listener, anonymous: false, buffered: Vec::new() }).await;
}

async fn serve_arrival<S>(relay: Arc<Relay>, stream: S, arrival: Arrival)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Arrival { peer, listener, anonymous, buffered } = arrival;
    // One snapshot for the whole session.
    let snapshot = relay.snapshot();
    // The client's name, confirmed forward (never for loopback, which has none worth asking
    // about).
    let reverse_dns = if peer.ip().is_loopback() {
        None
    } else {
        tokio::time::timeout(Duration::from_secs(5), relay.dns.verified_reverse(peer.ip()))
            .await
            .ok()
            .flatten()
    };
    let client = Client { address: peer, reverse_dns, listener, anonymous };
    let mut conversation = Conversation::new(snapshot.clone(), relay.clone(), client);
    let _active = relay.metrics.connection(conversation.session_party_name());
    let mut stages = Stages::new(snapshot.clone());
    let (read, write) = tokio::io::split(stream);
    let mut input = Input::with_buffered(read, buffered);
    let mut output = BufWriter::new(write);
    let ended = drive(&relay, &mut conversation, &mut stages, &mut input, &mut output).await;
    if !matches!(ended, Ok(Ended::StartTls)) {
        return;
    }
    let Some(acceptor) = snapshot.tls.clone() else { return };
    // Whatever the client sent after STARTTLS and before the handshake is dropped with the
    // buffer: plaintext must never be read as if it came over TLS (CVE-2011-0411).
    let stream = input.into_inner().unsplit(output.into_inner());
    let handshake = Duration::from_secs(snapshot.config.server.command_timeout_secs.min(60));
    let tenant = conversation.session_party_name().to_string();
    let tls = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(tenant = %tenant, client = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(tenant = %tenant, client = %peer, "TLS handshake timed out");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    conversation.tls_started(TlsInfo {
        version: session.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
        cipher: session.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default(),
        sni: session.server_name().map(str::to_string),
    });
    let (read, write) = tokio::io::split(tls);
    let mut input = Input::new(read);
    let mut output = BufWriter::new(write);
    if let Ok(Ended::StartTls) = drive(&relay, &mut conversation, &mut stages, &mut input, &mut output).await
    {
        // STARTTLS is never offered twice; nothing to do but end.
        let _ = output.shutdown().await;
    }
}

/// Carry out the conversation's actions over one stream.
async fn drive<R, W>(
    relay: &Arc<Relay>,
    conversation: &mut Conversation,
    stages: &mut Stages,
    input: &mut Input<R>,
    output: &mut BufWriter<W>,
) -> std::io::Result<Ended>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut closing = relay.closing.subscribe();
    loop {
        let action = conversation.next_action();
        let Some(action) = work(relay, conversation, stages, action).await else { continue };
        match action {
            Action::Send(bytes) => output.write_all(&bytes).await?,
            Action::Read { timeout, bulk } => {
                input.set_bulk(bulk);
                if input.buffer().is_empty() {
                    output.flush().await?;
                    // A shutdown's grace period over: a session between commands is closed,
                    // at once or as soon as it comes back to wait for one.
                    // (Asked first: a shutdown already under way wins over waiting input.)
                    let between_commands = conversation.awaits_command();
                    let read = tokio::time::timeout(timeout, input.fill_buf());
                    let outcome = tokio::select! {
                        biased;
                        Ok(_) = closing.wait_for(|closing| *closing), if between_commands => {
                            conversation.shutting_down();
                            continue;
                        }
                        outcome = read => outcome,
                    };
                    match outcome {
                        Err(_) => {
                            conversation.timed_out();
                            continue;
                        }
                        Ok(Ok(bytes)) if !bytes.is_empty() => {}
                        Ok(_) => {
                            conversation.client_closed();
                            continue;
                        }
                    }
                }
                let used = conversation.receive(input.buffer());
                input.consume(used);
            }
            Action::Store(request) => {
                let outcome = relay.store(*request).await;
                conversation.stored(outcome);
            }
            Action::Pause(pause) => tokio::time::sleep(pause).await,
            Action::Stage(_)
            | Action::CheckPassword { .. }
            | Action::VerifyRecipient { .. }
            | Action::CheckSender(_)
            | Action::CheckRate { .. }
            | Action::CheckAuthLock { .. }
            | Action::Finished(_)
            | Action::Learn(_) => {} // done by `work`
            Action::StartTls => {
                output.flush().await?;
                return Ok(Ended::StartTls);
            }
            Action::Close => {
                output.flush().await?;
                let _ = output.shutdown().await;
                return Ok(Ended::Closed);
            }
        }
    }
}

/// Carry out the actions that are work for the relay and the same whoever drives the
/// conversation (the SMTP listener, the milter and policy-delegation servers): stages,
/// passwords, recipients' and senders' checks, the fleet's limits, records and learning.
/// The others (replies, reads, storing, TLS, closing) are the driver's: returned.
pub async fn work(
    relay: &Arc<Relay>,
    conversation: &mut Conversation,
    stages: &mut Stages,
    action: Action,
) -> Option<Action> {
    match action {
        Action::Stage(request) => {
            let result = stages.run(&request).await;
            relay.metrics.stage(&conversation.snapshot().party(request.party).name, &result);
            conversation.stage_done(result);
        }
        Action::CheckPassword { user, password } => {
            let users = conversation.snapshot().users.clone();
            let ok = tokio::task::spawn_blocking(move || users.is_some_and(|u| u.verify(&user, &password)))
                .await
                .unwrap_or(false);
            conversation.password_checked(ok);
        }
        Action::VerifyRecipient { tenant, address } => {
            let snapshot = conversation.snapshot().clone();
            let answer = relay.verify_recipient(&snapshot, tenant, &address).await;
            conversation.recipient_verified(answer);
        }
        Action::CheckSender(request) => {
            let snapshot = conversation.snapshot().clone();
            let checks = relay.check_sender(&snapshot, &request).await;
            conversation.sender_checked(checks);
        }
        Action::CheckRate { tenant, per_minute } => {
            let ok = relay.shared_message_rate(&tenant, per_minute).await;
            conversation.rate_checked(ok);
        }
        Action::CheckAuthLock { ip, limit, window } => {
            let locked = relay.shared_auth_locked(ip, limit, window).await;
            conversation.auth_lock_checked(locked);
        }
        Action::Finished(record) => relay.record(&record),
        Action::Learn(request) => relay.autolearn(*request),
        other => return Some(other),
    }
    None
}
