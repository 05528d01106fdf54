//! Redis as production runs it, with real `redis-server` processes: TLS (`rediss://`, the
//! server's certificate checked against `state.tls_ca_file`), and Sentinel — the relay asks
//! the sentinels for the master, and after the master is killed and a replica promoted it
//! finds the new one: mail flows again without a restart, and every message that got a 250
//! reaches the next hop.

mod relay_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use relay_common::*;
use sluice_test_artifacts::RATE_LIMIT;

fn support() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}

/// The reply to one message's RCPT and DATA ("code text" of the last), in a new session.
fn send(port: u16) -> String {
    python(
        port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\ns.ehlo('c.remote.test')\ns.mail('a@remote.test')\n\
             code, text = s.rcpt('bob@example.test')\n\
             if code == 250:\n    code, text = s.data('{MESSAGE}')\nprint(code, text.decode())\ns.quit()"
        ),
    )
    .trim()
    .to_string()
}

fn body(state: &str, sink_port: u16, messages: u32) -> String {
    format!(
        "[state]\n{state}prefix = \"prod{}:\"\n{}\
         [[tenant.policy]]\npath = \"{RATE_LIMIT}\"\nconfig = {{ messages = \"{messages}\", by = \"ip\" }}\n",
        std::process::id(),
        inbound(sink_port)
    )
}

#[test]
fn rediss_checks_the_server_certificate() {
    let dir = temp_dir("redis-tls");
    let tls = free_port();
    // A certificate for 127.0.0.1 signed by the test CA.
    let (cert, key, ca) =
        (support().join("hop-cert.pem"), support().join("hop-key.pem"), support().join("ca-cert.pem"));
    let _redis = redis_server(
        tls,
        &[
            "--port",
            "0",
            "--tls-port",
            &tls.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &cert.display().to_string(),
            "--tls-key-file",
            &key.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .map(String::from),
    );
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let state = format!("backend = \"rediss://127.0.0.1:{tls}/0\"\ntls_ca_file = \"{}\"\n", ca.display());
    let r = relay(&dir, free_port(), &body(&state, sink_port, 2));
    // The counter is on the server, over TLS: the third message is over the limit of two.
    let replies: Vec<String> = (0..3).map(|_| send(r.port)).collect();
    assert!(replies[0].starts_with("250") && replies[1].starts_with("250"), "{replies:?}\n{}", log(&r.dir));
    assert!(replies[2].starts_with("451") && replies[2].contains("Rate limit"), "{replies:?}");

    // A certificate the CA file does not vouch for: the store is away, the tenant's failure
    // mode answers (tempfail), nothing is accepted unchecked.
    let other = temp_dir("redis-tls-other");
    let state = format!(
        "backend = \"rediss://127.0.0.1:{tls}/0\"\ntls_ca_file = \"{}\"\n",
        support().join("relay-cert.pem").display()
    );
    let r = relay(&other, free_port(), &body(&state, sink_port, 2));
    let reply = send(r.port);
    assert!(reply.starts_with("451 4.3.0"), "{reply}\n{}", log(&r.dir));
}

#[test]
fn a_sentinel_failover_while_mail_flows() {
    let dir = temp_dir("redis-sentinel");
    let Sentinels {
        mut master,
        master_port,
        replica_port,
        sentinel_port,
        replica: _replica,
        sentinel: _sentinel,
    } = sentinels(&dir);
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    // The URL's host is not used: the sentinels name the master.
    let state = format!(
        "backend = \"redis://127.0.0.1:1/0\"\nsentinels = [\"127.0.0.1:{sentinel_port}\"]\nsentinel_master = \"main\"\n"
    );
    let r = relay(&dir, free_port(), &body(&state, sink_port, 100_000));
    let mut accepted = 0;
    for _ in 0..3 {
        let reply = send(r.port);
        assert!(reply.starts_with("250"), "{reply}\n{}", log(&r.dir));
        accepted += 1;
    }
    assert!(!redis_cli(master_port, &["--scan"]).is_empty(), "the counters are on the master");

    // The master dies; the sentinel promotes the replica; the relay finds it.
    let killed = Instant::now();
    let _ = master.0.kill();
    let _ = master.0.wait();
    let mut refused = 0;
    loop {
        let reply = send(r.port);
        if reply.starts_with("250") {
            accepted += 1;
            break;
        }
        assert!(reply.starts_with("451"), "a failover answers 4xx, never 5xx: {reply}");
        refused += 1;
        assert!(killed.elapsed() < Duration::from_secs(60), "no master after a minute\n{}", log(&r.dir));
        std::thread::sleep(Duration::from_millis(300));
    }
    let failover = killed.elapsed();
    for _ in 0..3 {
        let reply = send(r.port);
        assert!(reply.starts_with("250"), "{reply}");
        accepted += 1;
    }
    assert!(redis_cli(replica_port, &["role"]).starts_with("master"), "the replica was promoted");
    assert!(!redis_cli(replica_port, &["--scan"]).is_empty(), "the counters go to the new master");
    eprintln!("failover: mail flowed again after {failover:?} ({refused} sessions answered 4xx meanwhile)");
    // Nothing acknowledged is lost: every 250 reaches the next hop.
    wait_for("every accepted message at the next hop", Duration::from_secs(30), || {
        files(&dir.join("sink"), ".eml").len() == accepted
    });
}

#[test]
fn a_redis_cluster_keeps_a_tenants_keys_in_one_slot() {
    let dir = temp_dir("redis-cluster");
    let ports = [free_port(), free_port(), free_port()];
    let _nodes: Vec<Proc> = ports
        .iter()
        .map(|port| {
            let data = dir.join(port.to_string());
            std::fs::create_dir_all(&data).expect("node dir");
            let args = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--dir",
                &data.display().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .map(String::from);
            redis_server(*port, &args)
        })
        .collect();
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
    wait_for("the cluster", Duration::from_secs(30), || {
        ports.iter().all(|p| redis_cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
    });

    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let state = format!("backend = \"redis://127.0.0.1:1/0\"\ncluster = [\"{}\"]\n", addresses[0]);
    let r = relay(&dir, free_port(), &body(&state, sink_port, 2));
    let replies: Vec<String> = (0..3).map(|_| send(r.port)).collect();
    assert!(replies[0].starts_with("250") && replies[1].starts_with("250"), "{replies:?}\n{}", log(&r.dir));
    assert!(replies[2].starts_with("451") && replies[2].contains("Rate limit"), "{replies:?}");
    // The tenant's counter, usage and expiries: on one node (one slot, by the hash tag).
    let holding: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| redis_cli(*p, &["--scan"]).lines().any(|k| k.contains("{example}")))
        .collect();
    assert_eq!(holding.len(), 1, "the tenant's keys are on {holding:?}");
    let keys = redis_cli(holding[0], &["--scan"]);
    assert!(keys.lines().filter(|k| k.contains("{example}")).count() >= 3, "{keys}");
}
