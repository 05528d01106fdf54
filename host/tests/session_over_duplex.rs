//! Whole sessions through the listener's session code over an in-memory stream: no port, a real
//! relay (spool, policies) built in the test, the client's bytes written and the replies read
//! on the other end of a `tokio::io::duplex`. Timeouts run on paused time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice::config::Config;
use sluice::listener::connection::serve_stream;
use sluice::relay::Relay;
use sluice::spool::Store;
use sluice_test_artifacts::PROBE;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-duplex-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn relay(name: &str) -> Arc<Relay> {
    let dir = temp_dir(name);
    let text = format!(
        "[server]\nhostname = \"relay.test\"\ncommand_timeout_secs = 30\n[spool]\ndir = \"spool\"\n\
         [state]\nbackend = \"memory\"\n[relay]\ntrusted_networks = []\n\
         [[tenant]]\nname = \"a\"\ndomains = [\"a.test\"]\nnext_hop = \"maildir:mail\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ header = \"X-Judged-By:a\" }}\n\
         [[tenant]]\nname = \"b\"\ndomains = [\"b.test\"]\nnext_hop = \"maildir:mail\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ verdict = \"reject\", verdict_stage = \"connect\" }}\n"
    );
    let config = Config::parse(&text, "duplex.toml", dir).expect("config");
    let (relay, _delivery) = Relay::build(config, None).await.expect("relay");
    relay
}

/// A session over a duplex stream: the client's end and the session's task.
fn connect(relay: &Arc<Relay>) -> (BufReader<DuplexStream>, tokio::task::JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = "192.0.2.7:40000".parse().expect("peer");
    let task = tokio::spawn(serve_stream(relay.clone(), server, peer, "duplex".into()));
    (BufReader::new(client), task)
}

/// Read one reply (every line of it); its code and last line.
async fn reply(client: &mut BufReader<DuplexStream>) -> (u16, String) {
    loop {
        let mut line = String::new();
        if client.read_line(&mut line).await.expect("read") == 0 {
            return (0, String::new());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return (line[..3].parse().expect("code"), line.trim_end().to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_session_is_judged_and_spooled() {
    let relay = relay("whole").await;
    let (mut client, task) = connect(&relay);
    assert_eq!(reply(&mut client).await.0, 220);
    // Pipelined: the replies come in order.
    client
        .get_mut()
        .write_all(b"EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<v@b.test>\r\nRCPT TO:<u@a.test>\r\nDATA\r\n")
        .await
        .expect("write");
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(reply(&mut client).await.0);
    }
    // b's connect hook refuses b's recipient at RCPT; a takes the message.
    assert_eq!(codes, [250, 250, 550, 250, 354]);
    client.get_mut().write_all(b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n").await.expect("write");
    let (code, text) = reply(&mut client).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(reply(&mut client).await.0, 221);
    task.await.expect("session");
    let queued = relay.spool.list(Store::Queue).expect("list");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].tenant, "a");
    let message =
        String::from_utf8(relay.spool.message(Store::Queue, &queued[0].id).expect("message")).expect("utf8");
    assert!(message.contains("X-Judged-By: a\r\n") && message.ends_with("\r\n\r\nhello\r\n"), "{message}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_idle_client_is_told_and_let_go() {
    let relay = relay("idle").await;
    let (mut client, task) = connect(&relay);
    assert_eq!(reply(&mut client).await.0, 220);
    client.get_mut().write_all(b"EHLO c.test\r\n").await.expect("write");
    assert_eq!(reply(&mut client).await.0, 250);
    // Thirty seconds of silence (paused time: this takes no time).
    tokio::time::sleep(Duration::from_secs(31)).await;
    let (code, text) = reply(&mut client).await;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.4.2"), "{text}");
    assert_eq!(reply(&mut client).await.0, 0, "the session closed");
    task.await.expect("session");
}
