//! Shared state for more than one node: two `sluice serve` processes on one real
//! `redis-server` share the rate-limit counter; the server going away and coming back is
//! survived (no crash, no hang, the counters resume).

mod relay_common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_common::*;
use sluice_test_artifacts::RATE_LIMIT;

/// `redis-server` on loopback, without persistence, on `port`.
fn redis(port: u16, dir: &Path) -> Proc {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server) must be installed");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// The reply to MAIL FROM in a new session, and how long the session took.
fn mail(port: u16) -> (String, Duration) {
    let started = Instant::now();
    let out = python(
        port,
        "s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\ns.ehlo('c.remote.test')\n\
         print(s.mail('a@remote.test')[0])\ns.quit()",
    );
    (out.trim().to_string(), started.elapsed())
}

#[test]
fn two_relays_share_one_counter_on_redis_and_survive_its_restart() {
    let dir = temp_dir("shared-state");
    let redis_port = free_port();
    let mut server = redis(redis_port, &dir);
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let body = format!(
        "[state]\nbackend = \"redis://127.0.0.1:{redis_port}/0\"\nprefix = \"test{}:\"\n{}\
         [[tenant.policy]]\npath = \"{RATE_LIMIT}\"\nconfig = {{ messages = \"3\", by = \"ip\" }}\n",
        std::process::id(),
        inbound(sink_port)
    );
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a_dir).expect("dir");
    std::fs::create_dir_all(&b_dir).expect("dir");
    let a = relay(&a_dir, free_port(), &body);
    let b = relay(&b_dir, free_port(), &body);

    // One counter for both: the fourth message from this address, wherever it arrives, is
    // over the limit of three.
    let replies: Vec<String> = [a.port, b.port, a.port, b.port].map(|p| mail(p).0).to_vec();
    assert_eq!(replies, ["250", "250", "250", "451"], "{}\n{}", log(&a.dir), log(&b.dir));
    assert_eq!(mail(a.port).0, "451");

    // The server goes away: the rate limit cannot count, so it lets mail through (its
    // documented choice) and says so in the log, promptly; nothing crashes.
    drop(server);
    let (reply, took) = mail(a.port);
    assert_eq!(reply, "250", "{}", log(&a.dir));
    assert!(took < Duration::from_secs(10), "a session took {took:?} with the store away");
    assert!(log(&a.dir).contains("rate counter unavailable"), "{}", log(&a.dir));

    // It comes back (empty): both relays reconnect and count again, together.
    server = redis(redis_port, &dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut replies = Vec::new();
    // Until both have counted on the new server: 3 accepted in all, then refused.
    while Instant::now() < deadline {
        replies = [a.port, b.port, a.port, b.port].map(|p| mail(p).0).to_vec();
        if replies.contains(&"451".to_string()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(replies.contains(&"451".to_string()), "{replies:?}\n{}", log(&a.dir));
    assert_eq!(mail(b.port).0, "451");
    assert!(!log(&a.dir).contains("panicked") && !log(&b.dir).contains("panicked"));
    drop(server);
}
