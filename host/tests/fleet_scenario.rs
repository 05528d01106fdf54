//! The fleet as docs/fleet.md promises it, in one run: three relays on loopback, one Redis
//! master with a replica and a sentinel, one registry, one next hop. Each node takes its name
//! from the environment (`node = "${SLUICE_TEST_NODE}"`, as pods sharing one ConfigMap do).
//!
//! 1. A policy pushed under a tag and a reload asked of one node: all three run it within a
//!    second; a SIGHUP to one node after the tag moved back brings all three back.
//! 2. A tenant limited to N messages a minute gets N through the three relays, not 3N.
//! 3. The Redis master is killed with `kill -9`: every relay accepts again once the sentinel
//!    has promoted the replica (4xx meanwhile, never 5xx, never a 250 unchecked).
//! 4. A relay holding queued mail is killed with `kill -9`: the others keep serving; started
//!    again on its spool, it delivers what it had acknowledged.
//! 5. Every message that got a 250 anywhere reaches the next hop.

mod relay_common;

use std::process::Command;
use std::time::{Duration, Instant};

use relay_common::*;
use sluice_test_artifacts::{PROBE, RATE_LIMIT};

/// One message in a new session: the reply to its RCPT when that is not 250, else to its
/// DATA, as "CODE TEXT" ("disconnected" when the session ended without one).
fn send(port: u16, rcpt: &str, id: &str) -> String {
    let message = format!(
        "From: alice@remote.test\\r\\nTo: {rcpt}\\r\\nSubject: fleet\\r\\nMessage-ID: <{id}@remote.test>\\r\\n\\r\\nHello.\\r\\n"
    );
    python(
        port,
        &format!(
            "try:\n    s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\n    s.ehlo('c.remote.test')\n    s.mail('a@remote.test')\n\
             \x20   code, text = s.rcpt('{rcpt}')\n\
             \x20   if code == 250:\n        code, text = s.data('{message}')\n\
             \x20   print(code, text.decode())\n\
             except (smtplib.SMTPServerDisconnected, ConnectionError) as e:\n    print('disconnected', e)"
        ),
    )
    .trim()
    .to_string()
}

/// The Message-IDs the next hop holds in `dirs`.
fn delivered(dirs: &[std::path::PathBuf]) -> std::collections::BTreeSet<String> {
    dirs.iter()
        .flat_map(|dir| files(dir, ".eml"))
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .filter_map(|text| {
            let line = text.lines().find(|l| l.to_ascii_lowercase().starts_with("message-id:"))?;
            Some(line.split(['<', '@']).nth(1)?.to_string())
        })
        .collect()
}

#[test]
fn a_fleet_of_three_through_a_deploy_a_failover_and_a_crash() {
    let dir = temp_dir("fleet-scenario");
    let redis = sentinels(&dir);
    let (registry_port, sink_port) = (free_port(), free_port());
    let _registry = registry(&dir, registry_port);
    let sink_dirs = [dir.join("sink"), dir.join("sink-again")];
    let mut next_hop = Some(sink(sink_port, &sink_dirs[0], &[]));
    let target = format!("oci://127.0.0.1:{registry_port}/policies/filter:prod");
    let push = |file: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["policy", "push", file, &target, "--insecure"])
            .output()
            .expect("push");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    push(RATE_LIMIT);

    const LIMIT: usize = 5;
    let body = |admin_port: u16| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[fleet]\nnode = \"${{SLUICE_TEST_NODE}}\"\n\
             [state]\n{}prefix = \"scenario{}:\"\n\
             [oci]\ninsecure_registries = [\"127.0.0.1:{registry_port}\"]\n\
             [relay]\ntrusted_networks = []\n[delivery]\nretry_base_secs = 1\nretry_max_secs = 2\n\
             [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
             [[tenant.policy]]\npath = \"{target}\"\n\
             [[tenant]]\nname = \"limited\"\ndomains = [\"limited.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
             max_messages_per_minute = {LIMIT}\n",
            redis.state(),
            std::process::id()
        )
    };
    let names = ["a", "b", "c"];
    let mut nodes: Vec<(Relay, u16)> = names
        .iter()
        .map(|name| {
            let node_dir = dir.join(name);
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let (port, admin_port) = (free_port(), free_port());
            write_config(&node_dir, port, "", &body(admin_port));
            (start_env(&node_dir, port, &[], &[("SLUICE_TEST_NODE", name)]), admin_port)
        })
        .collect();
    let admins: Vec<u16> = nodes.iter().map(|(_, a)| *a).collect();
    wait_for("three nodes on one generation", Duration::from_secs(30), || {
        let view = admin_api(admins[0], "GET", "/api/fleet");
        fleet_generations(admins[0]).len() == 3 && view["converged"] == true
    });
    let view = admin_api(admins[0], "GET", "/api/fleet");
    let mut shown: Vec<&str> =
        view["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["node"].as_str()).collect();
    shown.sort();
    assert_eq!(shown, names, "each node named from its environment");
    let before = fleet_generations(admins[0])[0].clone();

    // 1. A new component under the same tag; a reload asked of node a.
    push(PROBE);
    let asked = Instant::now();
    let outcome = admin_api(admins[0], "POST", "/api/reload");
    assert!(outcome.to_string().contains("announced"), "{outcome}");
    let converged = loop {
        let names = fleet_generations(admins[2]);
        if names.len() == 3 && names.iter().all(|n| *n != before) && names.windows(2).all(|w| w[0] == w[1]) {
            break asked.elapsed();
        }
        assert!(asked.elapsed() < Duration::from_secs(10), "no convergence: {names:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("scenario: three nodes on the new generation {converged:?} after the reload was asked of one");
    for (relay, _) in &nodes {
        assert!(log(&relay.dir).contains("policy pulled from its registry"), "{}", log(&relay.dir));
    }
    assert!(converged < Duration::from_secs(1), "convergence took {converged:?}");
    // An operator's SIGHUP to one node is the fleet's too: the tag back, all three back (to
    // the rate-limit policy, whose counters in Redis put the failover below in mail's path).
    push(RATE_LIMIT);
    let hup = Command::new("kill").args(["-HUP", &nodes[1].0.proc.0.id().to_string()]).status();
    assert!(hup.expect("kill").success());
    wait_for("every node back on the first generation", Duration::from_secs(10), || {
        fleet_generations(admins[0]) == vec![before.clone(); 3]
    });

    let mut acknowledged: Vec<String> = Vec::new();
    let mut serial = 0;
    let mut next_id = || {
        serial += 1;
        format!("m{serial}")
    };

    // 2. N a minute across the fleet: the count must not straddle a minute's end.
    let second =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() % 60;
    if second > 40 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
    let mut limited = Vec::new();
    for i in 0..LIMIT + 4 {
        let id = next_id();
        let reply = send(nodes[i % 3].0.port, "bob@limited.test", &id);
        if reply.starts_with("250") {
            acknowledged.push(id);
        }
        limited.push(reply);
    }
    let passed = limited.iter().filter(|r| r.starts_with("250")).count();
    assert_eq!(passed, LIMIT, "{limited:#?}");
    assert!(limited[LIMIT..].iter().all(|r| r.starts_with("451")), "{limited:#?}");
    eprintln!(
        "scenario: {} transactions over three relays, limit {LIMIT} a minute: {passed} accepted",
        limited.len()
    );

    // 3. The Redis master dies with mail flowing.
    let Sentinels { mut master, replica_port, .. } = redis;
    let killed = Instant::now();
    let _ = master.0.kill();
    let _ = master.0.wait();
    let mut back = [false; 3];
    let mut deferred = 0;
    while !back.iter().all(|b| *b) {
        for (i, (relay, _)) in nodes.iter().enumerate() {
            let id = next_id();
            let reply = send(relay.port, "bob@example.test", &id);
            if reply.starts_with("250") {
                acknowledged.push(id);
                back[i] = true;
            } else {
                assert!(reply.starts_with('4'), "a failover answers 4xx, never 5xx: {reply}");
                deferred += 1;
            }
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "the fleet did not recover: {back:?}");
    }
    let recovered = killed.elapsed();
    eprintln!(
        "scenario: Redis master killed; all three relays accepting again after {recovered:?} ({deferred} deferred)"
    );
    assert!(redis_cli(replica_port, &["role"]).starts_with("master"), "the replica was promoted");
    wait_for("heartbeats on the new master", Duration::from_secs(20), || {
        fleet_generations(admins[1]).len() == 3
    });

    // 4. The next hop is away, so node c holds what it acknowledges; then c is killed.
    drop(next_hop.take());
    let c = nodes[2].0.port;
    for _ in 0..3 {
        let id = next_id();
        let reply = send(c, "bob@example.test", &id);
        assert!(reply.starts_with("250"), "{reply}");
        acknowledged.push(id);
    }
    let (mut dead, _) = nodes.remove(2);
    let _ = Command::new("kill").args(["-9", &dead.proc.0.id().to_string()]).status();
    let _ = dead.proc.0.wait();
    let _next_hop = sink(sink_port, &sink_dirs[1], &[]);
    for (relay, _) in &nodes {
        for _ in 0..2 {
            let id = next_id();
            let reply = send(relay.port, "bob@example.test", &id);
            assert!(reply.starts_with("250"), "a surviving relay refused: {reply}");
            acknowledged.push(id);
        }
    }
    wait_for("node c shown as gone", Duration::from_secs(20), || {
        admin_api(admins[0], "GET", "/api/fleet")["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["node"] == "c" && n["alive"] == false)
    });
    let _again = start_env(&dead.dir, dead.port, &[], &[("SLUICE_TEST_NODE", "c")]);

    // 5. Nothing acknowledged is lost.
    wait_for("every acknowledged message at the next hop", Duration::from_secs(60), || {
        let held = delivered(&sink_dirs);
        acknowledged.iter().all(|id| held.contains(id))
    });
    eprintln!(
        "scenario: {} messages acknowledged, all {} at the next hop",
        acknowledged.len(),
        acknowledged.len()
    );
}

/// `sluice check` with `env`, on `text` written to `dir/NAME`; its output.
fn check(dir: &std::path::Path, name: &str, text: &str, env: (&str, &str)) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&path)
        .env(env.0, env.1)
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .output()
        .expect("sluice check");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name}: {text}");
    text
}

/// The example deployment's configurations (docs/deploy) pass `sluice check` as written, with
/// only the names that exist in a cluster (the registry, the token's path, the signing key)
/// pointed at this machine's; the compose file and the manifests are YAML of the kinds named.
#[test]
fn the_example_deployments_configurations_check() {
    let dir = temp_dir("fleet-examples");
    let registry_port = free_port();
    let _registry = registry(&dir, registry_port);
    let local = format!("127.0.0.1:{registry_port}");
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy");
    let token = dir.join("admin-token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").expect("token");
    let key = dir.join("key.pem");
    let made = Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&key).status();
    assert!(made.expect("openssl").success());
    let push = |target: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["policy", "push", PROBE, target, "--insecure", "--sign-key"])
            .arg(&key)
            .output()
            .expect("push");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("public_keys = ").nth(1).expect("the key's line").trim().to_string()
    };

    // compose: three relays from one file, each named by SLUICE_NODE.
    push(&format!("oci://{local}/policies/filter:prod"));
    let compose = std::fs::read_to_string(deploy.join("compose/sluice.toml")).expect("compose config");
    let text = compose
        .replace("registry:5000", &local)
        .replace("/run/secrets/admin-token", &token.display().to_string());
    let out = check(&dir, "compose.toml", &text, ("SLUICE_NODE", "relay-1"));
    eprintln!("{out}");
    assert!(out.contains("configuration ok: 1 tenant(s), 3 policy component(s) loaded"), "{out}");

    // Kubernetes: the ConfigMap's file, its signed policy, each pod named by POD_NAME.
    let manifests = python(
        0,
        &format!(
            "import yaml\nkinds = []\nfor f in ['sluice.yaml', 'redis.yaml']:\n    for d in yaml.safe_load_all(open('{0}/kubernetes/' + f)):\n        kinds.append(d['kind'] + '/' + d['metadata']['name'])\n        if d['kind'] == 'ConfigMap' and d['metadata']['name'] == 'sluice':\n            open('{1}/k8s.toml', 'w').write(d['data']['sluice.toml'])\n\
             c = yaml.safe_load(open('{0}/compose/compose.yaml'))\nnodes = sorted(s['environment']['SLUICE_NODE'] for s in c['services'].values() if 'environment' in s)\nprint(' '.join(kinds), nodes)",
            deploy.display(),
            dir.display()
        ),
    );
    assert_eq!(
        manifests.trim(),
        "ConfigMap/sluice StatefulSet/sluice Service/sluice-smtp Service/sluice Service/inside \
         ConfigMap/redis StatefulSet/redis Service/redis ['relay-1', 'relay-2', 'relay-3']"
    );
    let signer = push(&format!("oci://{local}/mail/filter:prod"));
    let k8s = std::fs::read_to_string(dir.join("k8s.toml")).expect("k8s config");
    let text = k8s
        .replace("registry.example.com", &local)
        .replace("[oci]\n", &format!("[oci]\ninsecure_registries = [\"{local}\"]\n"))
        .replace("[\"LlbQHyBJbSix4/mni7pG4oZ48sHoD3OAW40twLatvq4=\"]", &signer)
        .replace("/etc/sluice-secrets/admin-token", &token.display().to_string());
    let out = check(&dir, "k8s.toml", &text, ("POD_NAME", "sluice-0"));
    assert!(out.contains("configuration ok: 1 tenant(s), 3 policy component(s) loaded"), "{out}");
}
