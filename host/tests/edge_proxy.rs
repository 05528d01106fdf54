//! The relay behind a real load balancer: HAProxy (Debian's `haproxy`) in front, sending
//! PROXY protocol headers (`send-proxy`, `send-proxy-v2`); clients on other loopback
//! addresses (127.0.0.2: the internet, 127.0.0.3: a trusted network) connect through it.

mod relay_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use relay_common::*;

/// HAProxy in the foreground with two frontends: v1 headers on `v1`, v2 on `v2`.
fn haproxy(dir: &Path, v1: u16, v2: u16, relay: u16) -> Proc {
    let config = format!(
        "global\n  maxconn 100\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend one\n  bind 127.0.0.1:{v1}\n  default_backend relay_v1\n\
         frontend two\n  bind 127.0.0.1:{v2}\n  default_backend relay_v2\n\
         backend relay_v1\n  server relay 127.0.0.1:{relay} send-proxy\n\
         backend relay_v2\n  server relay 127.0.0.1:{relay} send-proxy-v2\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).expect("haproxy.cfg");
    let child = std::process::Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(std::fs::File::create(dir.join("haproxy.log")).expect("log"))
        .stderr(std::fs::File::create(dir.join("haproxy.err")).expect("log"))
        .spawn()
        .expect("haproxy (Debian package haproxy; scripts/test.sh installs it)");
    let proc = Proc(child);
    wait_for("haproxy", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", v1)).is_ok() && TcpStream::connect(("127.0.0.1", v2)).is_ok()
    });
    proc
}

/// The relay: the proxy (127.0.0.1) is trusted to send PROXY headers, and is in
/// `trusted_networks` too — which must not let the internet relay through it.
fn proxied_relay(dir: &Path, sink_port: u16) -> Relay {
    relay_with(
        dir,
        free_port(),
        "proxy_trusted_networks = [\"127.0.0.1/32\"]\nproxy_header_timeout_secs = 1\n",
        &format!(
            "[relay]\ntrusted_networks = [\"127.0.0.1/32\", \"127.0.0.3/32\"]\n\
             [delivery]\nretry_base_secs = 1\nsmarthost = \"smtp:127.0.0.1:{sink_port}\"\n\
             [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n"
        ),
    )
}

#[test]
fn through_haproxy_the_client_address_is_the_real_one() {
    let dir = temp_dir("proxy-haproxy");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let r = proxied_relay(&dir, sink_port);
    let (v1, v2) = (free_port(), free_port());
    let _proxy = haproxy(&dir, v1, v2, r.port);
    let list = relay_vectors_python();
    for port in [v1, v2] {
        // The internet (127.0.0.2): every relay vector refused, though the proxy's own address
        // is trusted.
        let out = python(
            port,
            &format!(
                "for rcpt in [{list}]:\n\
                 \x20   s = smtplib.SMTP('127.0.0.1', PORT, source_address=('127.0.0.2', 0))\n\
                 \x20   s.ehlo('client.remote.test')\n\
                 \x20   s.docmd('MAIL FROM:<relaytest@remote.test>')\n\
                 \x20   code, text = s.docmd('RCPT TO:' + rcpt)\n\
                 \x20   print(code, rcpt, text.decode())\n\
                 \x20   s.close()\n"
            ),
        );
        assert_eq!(out.lines().count(), RELAY_VECTORS.len(), "{out}");
        for line in out.lines() {
            assert!(line.starts_with('5'), "relay vector accepted through the proxy (port {port}): {line}");
        }
        // A trusted network's client (127.0.0.3) may relay; the internet's mail for a local
        // domain is delivered with the client's own address in Received.
        let out = python(
            port,
            &format!(
                "s = smtplib.SMTP('127.0.0.1', PORT, source_address=('127.0.0.3', 0))\n\
                 s.ehlo('inside.test')\n\
                 print(s.sendmail('a@example.test', ['someone@elsewhere.test'], 'Subject: out\\r\\n\\r\\nx\\r\\n'))\n\
                 s.quit()\n\
                 s = smtplib.SMTP('127.0.0.1', PORT, source_address=('127.0.0.2', 0))\n\
                 s.ehlo('client.remote.test')\n\
                 print(s.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}'))\n\
                 s.quit()\n"
            ),
        );
        assert_eq!(out.trim(), "{}\n{}", "{out}");
    }
    wait_for("four deliveries", Duration::from_secs(20), || files(&dir.join("sink"), ".eml").len() == 4);
    let mut inbound = 0;
    for file in files(&dir.join("sink"), ".eml") {
        let text = std::fs::read_to_string(&file).expect("message");
        if text.contains("Subject: Lunch") {
            inbound += 1;
            assert!(text.starts_with("Received: from client.remote.test (unknown [127.0.0.2])"), "{text}");
        } else {
            assert!(text.starts_with("Received: from inside.test (unknown [127.0.0.3])"), "{text}");
        }
    }
    assert_eq!(inbound, 2);
    let log = log(&dir);
    assert!(log.contains("127.0.0.2"), "{log}");
}

/// Raw bytes to the relay from 127.0.0.1 (a trusted proxy): what it answers before closing.
fn exchange(port: u16, bytes: &[u8], then: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(bytes).expect("write");
    std::thread::sleep(Duration::from_millis(100));
    let _ = s.write_all(then);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20 | command, family]);
    h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    h.extend_from_slice(addresses);
    h
}

#[test]
fn bad_or_missing_proxy_headers_close_the_connection() {
    let dir = temp_dir("proxy-bad");
    let sink_port = free_port();
    let r = proxied_relay(&dir, sink_port);
    let ipv4 = [127, 0, 0, 2, 127, 0, 0, 1, 0x9c, 0x40, 0, 25];
    let cases: [(&str, Vec<u8>); 6] = [
        ("no header", b"EHLO client.test\r\n".to_vec()),
        ("truncated v1", b"PROXY TCP4 127.0.0.2 127.0.0".to_vec()),
        ("bad v1", b"PROXY TCP4 127.0.0.2 127.0.0.1 99999 25\r\n".to_vec()),
        ("v2 shorter than its addresses", v2(1, 0x11, &ipv4[..6])),
        ("v2 unknown family", v2(1, 0x51, &ipv4)),
        ("truncated v2", v2(1, 0x11, &ipv4)[..20].to_vec()),
    ];
    for (what, bytes) in &cases {
        // Truncated headers get nothing more: the relay's timeout ends them.
        let then: &[u8] = if what.starts_with("truncated") {
            b""
        } else {
            b"EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\n"
        };
        let answer = exchange(r.port, bytes, then);
        assert_eq!(answer, "", "{what}: a session began");
    }
    let log = log(&dir);
    assert!(log.contains("does not begin with a PROXY header"), "{log}");
    assert!(log.contains("unknown address family"), "{log}");
    assert!(log.contains("within 1 s"), "{log}");
    assert!(log.contains("shorter than its addresses"), "{log}");

    // A LOCAL header (a health check) gets a session as the proxy itself, which may not relay
    // though its address is trusted.
    let answer = exchange(
        r.port,
        &v2(0, 0x00, &[]),
        b"EHLO check.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<x@elsewhere.test>\r\nQUIT\r\n",
    );
    assert!(answer.starts_with("220 "), "{answer}");
    assert!(answer.contains("554 5.7.1"), "{answer}");

    // A PROXY header from an address that is not a trusted proxy is refused.
    let out = python(
        r.port,
        "s = socket.create_connection(('127.0.0.1', PORT), source_address=('127.0.0.2', 0))\n\
         s.settimeout(10)\n\
         s.sendall(b'PROXY TCP4 127.0.0.3 127.0.0.1 40000 25\\r\\n')\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = s.recv(4096)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(data.decode())\n",
    );
    assert!(out.contains("554 5.7.0"), "{out}");
    assert!(log_has(&dir, "not in server.proxy_trusted_networks"));
}

fn log_has(dir: &Path, text: &str) -> bool {
    let mut found = false;
    wait_for(text, Duration::from_secs(5), || {
        found = log(dir).contains(text);
        found
    });
    found
}
