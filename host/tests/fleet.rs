//! Three relays as one fleet (`[fleet] node`), one Redis, one registry, all on loopback: each
//! node's policy is the same OCI tag; the tag moves, a reload is asked of one node, and every
//! node runs the new generation within a second or so (`GET /api/fleet` says so); a node
//! killed with `kill -9` stops heart-beating and the others keep serving.

mod relay_common;

use std::process::Command;
use std::time::{Duration, Instant};

use relay_common::*;
use sluice_test_artifacts::{PROBE, RATE_LIMIT};

fn fleet(admin: u16) -> serde_json::Value {
    let out = python(
        admin,
        "import urllib.request\nprint(urllib.request.urlopen(f'http://127.0.0.1:{PORT}/api/fleet').read().decode())",
    );
    serde_json::from_str(out.trim()).expect("json")
}

fn generations(view: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["alive"] == true)
        .map(|n| n["generation"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn three_relays_converge_on_one_generation() {
    let dir = temp_dir("fleet");
    let (redis_port, registry_port, sink_port) = (free_port(), free_port(), free_port());
    let _redis = redis(redis_port, &dir);
    let _registry = registry(&dir, registry_port);
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let target = format!("oci://127.0.0.1:{registry_port}/policies/filter:prod");
    let push = |file: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["policy", "push", file, &target, "--insecure"])
            .output()
            .expect("push");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    push(PROBE);

    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let admin = free_port();
        let body = format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[fleet]\nnode = \"{name}\"\n\
             [state]\nbackend = \"redis://127.0.0.1:{redis_port}/0\"\nprefix = \"fleet{}:\"\n\
             [oci]\ninsecure_registries = [\"127.0.0.1:{registry_port}\"]\n{}\
             [[tenant.policy]]\npath = \"{target}\"\n",
            std::process::id(),
            inbound(sink_port)
        );
        nodes.push((relay(&node_dir, free_port(), &body), admin));
    }
    let admins: Vec<u16> = nodes.iter().map(|(_, a)| *a).collect();
    wait_for("three nodes on one generation", Duration::from_secs(20), || {
        let view = fleet(admins[0]);
        let names = generations(&view);
        names.len() == 3 && view["converged"] == true
    });
    let before = generations(&fleet(admins[0]))[0].clone();

    // The tag moves; a reload asked of node a reaches b and c.
    push(RATE_LIMIT);
    let asked = Instant::now();
    let out = python(
        admins[0],
        "import urllib.request\nreq = urllib.request.Request(f'http://127.0.0.1:{PORT}/api/reload', method='POST')\nprint(urllib.request.urlopen(req).read().decode())",
    );
    assert!(out.contains("\"applied\"") && out.contains("\"announced\""), "{out}");
    wait_for("every node on the new generation", Duration::from_secs(10), || {
        let names = generations(&fleet(admins[1]));
        names.len() == 3 && names.iter().all(|n| *n != before) && names.windows(2).all(|w| w[0] == w[1])
    });
    let took = asked.elapsed();
    eprintln!("fleet: all three nodes on the new generation {took:?} after the reload was asked of one");
    assert!(took < Duration::from_secs(3), "convergence took {took:?}");
    for (r, _) in &nodes {
        assert!(log(&r.dir).contains("policy pulled from its registry"), "{}", log(&r.dir));
    }

    // A node dies: the others keep serving, and the fleet view says it is gone.
    let (mut dead, _) = nodes.remove(2);
    let _ = dead.proc.0.kill();
    let _ = dead.proc.0.wait();
    for (r, _) in &nodes {
        let out = python(
            r.port,
            &format!(
                "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.sendmail('a@remote.test', ['bob@example.test'], '{MESSAGE}'))"
            ),
        );
        assert_eq!(out.trim(), "{}");
    }
    wait_for("node c marked gone", Duration::from_secs(20), || {
        fleet(admins[0])["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["node"] == "c" && n["alive"] == false)
    });
}

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
