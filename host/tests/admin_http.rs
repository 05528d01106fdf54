//! The admin listener as HTTP clients meet it: the console's page without a token (it holds
//! no data), `413` for a body over `max_request_bytes` and `408` for one that does not
//! arrive (or headers that do not), `503` beyond `max_connections`, the recent transactions
//! after mail flows, and HTTPS with `tls_cert`, which `sluice` commands reach by pinning
//! that certificate.

mod relay_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use relay_common::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// Write `request` raw; the whole answer (the server closes the connection).
fn raw(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("admin");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn get(port: u16, path: &str) -> String {
    raw(
        port,
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

#[test]
fn limits_the_console_page_and_recent_transactions() {
    let dir = temp_dir("admin-http");
    std::fs::write(dir.join("admin.token"), TOKEN).expect("token");
    let (admin, sink_port, port) = (free_port(), free_port(), free_port());
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken_file = \"admin.token\"\nmax_connections = 3\n\
         max_request_bytes = 1000\nrequest_timeout_secs = 1\n{}",
        inbound(sink_port)
    );
    let r = relay(&dir, port, &body);

    // Headers that never end: 408 after ten seconds (checked last, waited for in between).
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = raw(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
        (answer, started.elapsed())
    });

    // The console's page loads without a token and holds no data.
    let page = raw(admin, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<title>Sluice console</title>"), "{page}");
    assert!(!page.contains("example.test"), "the page holds data");

    // A body over the limit: 413 at once, from its Content-Length.
    let big = format!(
        "POST /api/learn?class=spam HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 5000\r\n\r\n"
    );
    let answer = raw(admin, big.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("max_request_bytes"), "{answer}");
    // A body that does not come: 408 after request_timeout_secs.
    let stalled = format!(
        "POST /api/learn?class=spam HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 500\r\n\r\nabc"
    );
    let answer = raw(admin, stalled.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("connection: close"), "{answer}");

    // Beyond max_connections (3), held by connections that send nothing yet: 503.
    let idle: Vec<TcpStream> =
        (0..3).map(|_| TcpStream::connect(("127.0.0.1", admin)).expect("idle")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let answer = raw(admin, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(idle);

    // Mail flows; the recent transactions show it, with its verdict.
    let out = python(
        port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}'))"
        ),
    );
    assert_eq!(out.trim(), "{}");
    let mut recent = String::new();
    wait_for("a free admin connection", Duration::from_secs(15), || {
        recent = get(admin, "/api/transactions");
        recent.starts_with("HTTP/1.1 200")
    });
    assert!(recent.contains("\"outcome\":\"accept\"") && recent.contains("bob@example.test"), "{recent}");
    assert!(recent.contains("\"per_minute\""), "{recent}");
    let unknown = get(admin, "/api/queue/message?id=00000000000000000000");
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    let listed = get(admin, "/api/queue?limit=1");
    assert!(listed.starts_with("HTTP/1.1 200") && listed.contains("\"total\":"), "{listed}");
    let bad = get(admin, "/api/queue?limit=many");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let bad = get(admin, "/api/queue?older_than=soon");
    assert!(bad.starts_with("HTTP/1.1 400") && bad.contains("an age such as"), "{bad}");

    let (answer, took) = slow.join().expect("slow client");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(20), "{took:?}");
    let log = log(&r.dir);
    assert!(log.contains("admin API: too many connections; refused"), "{log}");
    assert!(log.contains("request headers not sent within 10s"), "{log}");
}

#[test]
fn https_with_the_commands_pinning_the_certificate() {
    let dir = temp_dir("admin-https");
    std::fs::write(dir.join("admin.token"), TOKEN).expect("token");
    let support = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let admin = free_port();
    let body = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken_file = \"admin.token\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{}",
        support.join("relay-cert.pem").display(),
        support.join("relay-key.pem").display(),
        inbound(free_port())
    );
    let _r = relay(&dir, free_port(), &body);
    // Plain HTTP gets no HTTP answer.
    let answer = raw(admin, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The command line speaks TLS to it, accepting exactly the configured certificate.
    let (ok, out) = sluice(&dir, &["reload"]);
    assert!(ok && out.contains("\"result\""), "{out}");
    // Another certificate in the configuration: the command refuses the relay's.
    let config = std::fs::read_to_string(dir.join("sluice.toml")).expect("config");
    std::fs::write(dir.join("other.toml"), config.replace("relay-cert.pem", "hop-cert.pem")).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["reload", "--config"])
        .arg(dir.join("other.toml"))
        .output()
        .expect("sluice");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("not the certificate of admin.tls_cert"), "{text}");
}
