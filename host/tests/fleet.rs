//! Limits that hold across a fleet of relays sharing one Redis: a tenant's message rate,
//! per-address connection caps and AUTH lockouts, and what applies while Redis is away. The
//! fleet's generations, a failover and a crash together: `fleet_scenario.rs`.

mod relay_common;

use std::process::Command;
use std::time::Duration;

use relay_common::*;

/// A tenant's `max_messages_per_minute` counted across three relays sharing one Redis: N
/// messages a minute in all, not N per relay; with the store gone, each relay's own count
/// applies.
#[test]
fn a_message_rate_holds_across_the_fleet() {
    let dir = temp_dir("fleet-rate");
    let (redis_port, sink_port) = (free_port(), free_port());
    let store = redis(redis_port, &dir);
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    // A minute's count must not be cut by the minute's end.
    let second =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() % 60;
    if second > 40 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
    let relays: Vec<Relay> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let node_dir = dir.join(name);
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let body = format!(
                "[state]\nbackend = \"redis://127.0.0.1:{redis_port}/0\"\nprefix = \"rate{}:\"\n{}max_messages_per_minute = 4\n",
                std::process::id(),
                inbound(sink_port)
            );
            relay(&node_dir, free_port(), &body)
        })
        .collect();
    let rcpt = |port: u16| {
        python(
            port,
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('c.remote.test')\ns.mail('a@remote.test')\nprint(s.rcpt('bob@example.test')[0])",
        )
        .trim()
        .to_string()
    };
    let codes: Vec<String> = (0..9).map(|i| rcpt(relays[i % 3].port)).collect();
    assert_eq!(codes.iter().filter(|c| *c == "250").count(), 4, "{codes:?}");
    assert!(codes[4..].iter().all(|c| c == "451"), "{codes:?}");

    // The store goes away: each relay's own count decides (here 1 or 2 of 4 taken).
    drop(store);
    assert_eq!(rcpt(relays[2].port), "250", "{}", log(&relays[2].dir));
    assert!(log(&relays[2].dir).contains("shared message rate unavailable: this relay's own count applies"));
}

/// `openssl passwd -6 -salt saltsalt secret`.
const ALICE: &str = "alice:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

/// Per-address connection caps and AUTH lockouts counted across two relays sharing one
/// Redis: connections held open on one count on the other; failures on one lock the address
/// out of the other.
#[test]
fn connection_caps_and_auth_lockouts_hold_across_the_fleet() {
    let dir = temp_dir("fleet-limits");
    let (redis_port, sink_port) = (free_port(), free_port());
    let _store = redis(redis_port, &dir);
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let relays: Vec<Relay> = ["a", "b"]
        .iter()
        .map(|name| {
            let node_dir = dir.join(name);
            std::fs::create_dir_all(&node_dir).expect("node dir");
            std::fs::write(node_dir.join("users"), format!("{ALICE}\n")).expect("users");
            let body = format!(
                "[state]\nbackend = \"redis://127.0.0.1:{redis_port}/0\"\nprefix = \"limits{}:\"\n\
                 [relay]\ntrusted_networks = []\nauth_users_file = \"users\"\nallow_plaintext_auth_on_loopback = true\n\
                 auth_failures_per_ip = 2\nauth_lockout_secs = 60\n\
                 [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n",
                std::process::id()
            );
            relay_with(&node_dir, free_port(), "max_connections_per_ip = 2\n", &body)
        })
        .collect();
    let greeting = |port: u16| {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(stream.try_clone().expect("clone")),
            &mut line,
        )
        .expect("greeting");
        (stream, line)
    };
    // The relays' own start-up probes are sessions too: wait until they are counted out.
    let settled = || {
        let key = format!("limits{}:limits:{{conn}}:127.0.0.1", std::process::id());
        let out = Command::new("redis-cli")
            .args(["-p", &redis_port.to_string(), "GET", &key])
            .output()
            .expect("redis-cli");
        let count = String::from_utf8_lossy(&out.stdout).trim().to_string();
        count.is_empty() || count == "0"
    };
    wait_for("no session counted", Duration::from_secs(10), settled);
    // Two sessions open on a: the address's third, on b, is refused.
    let (first, line) = greeting(relays[0].port);
    assert!(line.starts_with("220"), "{line}");
    let (_second, line) = greeting(relays[0].port);
    assert!(line.starts_with("220"), "{line}");
    let (_, line) = greeting(relays[1].port);
    assert!(line.starts_with("421 4.7.0") && line.contains("connections"), "{line}");
    // One ends: b takes the address again.
    drop(first);
    wait_for("a place on b", Duration::from_secs(10), || greeting(relays[1].port).1.starts_with("220"));
    drop(_second);
    wait_for("no session counted", Duration::from_secs(10), settled);

    // Two failed AUTHs on a (smtplib's login tries PLAIN, then LOGIN: two failures) lock the
    // address out of b.
    let attempt = |port: u16, password: &str| {
        python(
            port,
            &format!(
                "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('c.remote.test')\n\
                 try:\n    print(s.login('alice', '{password}')[0])\nexcept smtplib.SMTPAuthenticationError as e:\n    print(e.smtp_code)\n\
                 except smtplib.SMTPServerDisconnected:\n    print('disconnected')"
            ),
        )
        .trim()
        .to_string()
    };
    assert_eq!(attempt(relays[0].port, "wrong"), "535");
    assert_eq!(log(&relays[0].dir).matches("authentication failed").count(), 2, "{}", log(&relays[0].dir));
    let locked = attempt(relays[1].port, "secret");
    assert!(locked == "421" || locked == "disconnected", "b let a locked-out address try: {locked}");
    assert!(log(&relays[1].dir).contains("AUTH refused: too many failures from this address"));
}
