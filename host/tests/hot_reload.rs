//! Hot deployment end to end: a running `sluice serve` whose policy files and configuration
//! change under it — through the file watcher, `sluice reload` and the admin API — with real
//! SMTP sessions before, during and after.

mod relay_common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relay_common::*;
use sluice_test_artifacts::{PROBE, SPAM_HEURISTICS, WRONG_VERSION};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A relay whose only tenant runs `policies/filter.wasm` (a copy of `initial`), with an
/// admin listener and instances made ahead of sessions (so every swap below also retires a
/// pool of prepared instances). Returns the relay, the admin port and the policy file.
fn setup(name: &str, initial: &str, extra_policy: &str) -> (Relay, u16, PathBuf, Proc) {
    let dir = temp_dir(name);
    let sink_port = free_port();
    let sink = sink(sink_port, &dir.join("sink"), &[]);
    std::fs::create_dir_all(dir.join("policies")).expect("policies dir");
    let filter = dir.join("policies/filter.wasm");
    std::fs::copy(initial, &filter).expect("copy policy");
    let admin = free_port();
    let body = config_body(sink_port, admin, extra_policy, "example.test");
    let r = relay_with(&dir, free_port(), "prepared_instances = 8\n", &body);
    (r, admin, filter, sink)
}

fn config_body(sink_port: u16, admin: u16, extra_policy: &str, domains: &str) -> String {
    let domains = domains.split(',').map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [relay]\ntrusted_networks = []\n\
         [delivery]\nretry_base_secs = 1\nretry_max_secs = 2\n\
         [[tenant]]\nname = \"example\"\ndomains = [{domains}]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant.policy]]\npath = \"policies/filter.wasm\"\n{extra_policy}"
    )
}

/// Put `bytes` in place the way deployers should: a temporary file renamed over the target.
fn deploy(target: &Path, bytes: &[u8]) {
    let tmp = target.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, target).expect("rename");
}

/// The DATA reply code for a GTUBE message in a new session.
fn gtube(port: u16) -> u16 {
    let out = python(
        port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('client.remote.test')\ns.mail('alice@remote.test')\n\
             s.rcpt('bob@example.test')\ncode, _ = s.data('Subject: test\\r\\nFrom: alice@remote.test\\r\\n\\r\\n{GTUBE}\\r\\n')\n\
             print(code)\ns.quit()"
        ),
    );
    out.trim().parse().expect("code")
}

fn http(admin: u16, method: &str, target: &str) -> String {
    python(
        admin,
        &format!(
            "import urllib.request\nreq = urllib.request.Request(f'http://127.0.0.1:{{PORT}}{target}', method='{method}')\n\
             try:\n    print(urllib.request.urlopen(req).read().decode())\n\
             except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())"
        ),
    )
}

fn metric(admin: u16, name: &str) -> u64 {
    http(admin, "GET", "/metrics")
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// An SMTP session kept open across changes: greeted and EHLO'd.
struct OpenSession {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl OpenSession {
    fn new(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut session = Self { reader: BufReader::new(stream.try_clone().expect("clone")), writer: stream };
        session.reply();
        session.command("EHLO client.remote.test");
        session
    }

    /// The code of the next reply (multi-line replies read whole).
    fn reply(&mut self) -> u16 {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("reply");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.get(..3).and_then(|c| c.parse().ok()).expect("code");
            }
        }
    }

    fn command(&mut self, line: &str) -> u16 {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).expect("write");
        self.reply()
    }

    fn gtube(&mut self) -> u16 {
        assert_eq!(self.command("MAIL FROM:<alice@remote.test>"), 250);
        assert_eq!(self.command("RCPT TO:<bob@example.test>"), 250);
        assert_eq!(self.command("DATA"), 354);
        self.command(&format!("Subject: test\r\nFrom: alice@remote.test\r\n\r\n{GTUBE}\r\n."))
    }
}

fn policy_name(admin: u16) -> String {
    let listing = http(admin, "GET", "/api/policies");
    let at = listing.find("\"name\":\"").map(|i| i + 8).unwrap_or(0);
    listing[at..].split('"').next().unwrap_or("").to_string()
}

#[test]
fn a_new_policy_applies_to_new_sessions_while_open_ones_keep_theirs() {
    let (r, admin, filter, _sink) = setup("hot-swap", PROBE, "");
    assert_eq!(gtube(r.port), 250, "the probe lets GTUBE through");
    let (first, none) = generations(admin, "example");
    assert_eq!(none, None, "no previous generation yet");
    let mut open = OpenSession::new(r.port);

    let started = Instant::now();
    deploy(&filter, &std::fs::read(SPAM_HEURISTICS).expect("policy"));
    wait_for("the new policy", Duration::from_secs(20), || policy_name(admin) == "spam-heuristics");
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(5), "reload took {latency:?}");
    assert_eq!(gtube(r.port), 550, "a new session runs the new generation");
    assert_eq!(open.gtube(), 250, "the open session keeps its generation");

    let listing = http(admin, "GET", "/api/policies");
    for field in ["\"tenant\":\"example\"", "\"mode\":\"enforce\"", "\"hash\":\""] {
        assert!(listing.contains(field), "{field} missing: {listing}");
    }
    let (second, previous) = generations(admin, "example");
    assert!(second > first, "a new generation: {listing}");
    assert_eq!(previous, Some(first), "{listing}");
    let log = log(&r.dir);
    assert!(log.contains("reason=\"file change\""), "{log}");
    let judged: Vec<&str> = log.lines().filter(|l| l.contains(" transaction id=")).collect();
    assert!(judged.iter().any(|l| l.contains(&format!("generation={first} "))), "{log}");
    assert!(judged.iter().any(|l| l.contains(&format!("generation={second} "))), "{log}");

    // Rollback, from the command line, puts the probe back.
    let (ok, out) = sluice(&r.dir, &["policy", "rollback", "--tenant", "example"]);
    assert!(ok, "{out}");
    assert_eq!(policy_name(admin), "probe");
    assert_eq!(gtube(r.port), 250);
    assert_eq!(generations(admin, "example"), (first, Some(second)));
    // `cp` over the file in place (truncate, then write) is taken too, once complete.
    std::fs::copy(SPAM_HEURISTICS, &filter).expect("cp");
    wait_for("the copied policy", Duration::from_secs(20), || policy_name(admin) == "spam-heuristics");
    assert_eq!(gtube(r.port), 550);
    // An unknown tenant is an error.
    let (ok, out) = sluice(&r.dir, &["policy", "rollback", "--tenant", "nobody"]);
    assert!(!ok && out.contains("no tenant named"), "{out}");
}

/// `component` with a custom section appended: the same code under a content hash no cache
/// has seen.
fn never_seen(component: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let name = b"sluice-test";
    let payload = format!("{:?}-{}", std::time::SystemTime::now(), std::process::id());
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(payload.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

#[test]
fn a_policy_never_compiled_before_applies_at_once_then_gets_optimised_code() {
    let (r, admin, filter, _sink) = setup("hot-tier", PROBE, "");
    let (first, _) = generations(admin, "example");
    let started = Instant::now();
    deploy(&filter, &never_seen(&std::fs::read(SPAM_HEURISTICS).expect("policy")));
    wait_for("the new policy", Duration::from_secs(20), || policy_name(admin) == "spam-heuristics");
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(5), "reload took {latency:?}");
    assert_eq!(gtube(r.port), 550, "the new policy judges at once");
    wait_for("optimised code", Duration::from_secs(30), || {
        http(admin, "GET", "/api/policies").contains("\"code\":\"optimized\"")
    });
    assert_eq!(gtube(r.port), 550, "and goes on judging on the optimised code");
    let log = log(&r.dir);
    assert!(log.contains("policy compiled by the baseline compiler"), "{log}");
    assert!(log.contains("policy now runs on optimised code"), "{log}");
    // The generation is the one the reload made: only the code under it changed.
    let (now, previous) = generations(admin, "example");
    assert_eq!(previous, Some(first));
    let reloaded: Vec<&str> = log.lines().filter(|l| l.contains("result=\"applied\"")).collect();
    assert_eq!(reloaded.len(), 1, "{log}");
    assert!(reloaded[0].contains(&format!("changed=example@{now}")), "{log}");
}

/// A tenant's generation and previous generation, as `GET /api/policies` lists them.
fn generations(admin: u16, tenant: &str) -> (u64, Option<u64>) {
    let listing: serde_json::Value =
        serde_json::from_str(&http(admin, "GET", "/api/policies")).expect("json");
    let entry = listing["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == tenant)
        .expect("the tenant is listed")
        .clone();
    (entry["generation"].as_u64().expect("generation"), entry["previous_generation"].as_u64())
}

/// SHA-256 of the certificate a new STARTTLS handshake presents, and of the one in `pem`.
fn presented_certificate(port: u16, pem: &Path) -> (String, String) {
    let out = python(
        port,
        &format!(
            "import ssl, hashlib\n\
             ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
             s = smtplib.SMTP('127.0.0.1', PORT); s.ehlo('client.remote.test'); s.starttls(context=ctx)\n\
             print(hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest())\n\
             print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(open('{}').read())).hexdigest())\n\
             s.quit()",
            pem.display()
        ),
    );
    let mut lines = out.lines().map(str::to_string);
    (lines.next().unwrap_or_default(), lines.next().unwrap_or_default())
}

#[test]
fn a_renewed_certificate_is_used_by_new_handshakes() {
    let dir = temp_dir("hot-tls");
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    std::fs::create_dir_all(dir.join("tls")).expect("tls dir");
    std::fs::copy(support.join("relay-cert.pem"), dir.join("tls/cert.pem")).expect("cert");
    std::fs::copy(support.join("relay-key.pem"), dir.join("tls/key.pem")).expect("key");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let config = format!(
        "[tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n\
         [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n"
    );
    let r = relay(&dir, free_port(), &config);
    let (presented, first) = presented_certificate(r.port, &support.join("relay-cert.pem"));
    assert_eq!(presented, first, "{}", log(&r.dir));

    // A renewal the way deploy hooks do it: the key, then the certificate, each renamed
    // into place. No reload command: the watcher sees the files.
    let open = OpenSession::new(r.port);
    deploy(&dir.join("tls/key.pem"), &std::fs::read(support.join("renewed-key.pem")).expect("key"));
    deploy(&dir.join("tls/cert.pem"), &std::fs::read(support.join("renewed-cert.pem")).expect("cert"));
    let renewed = support.join("renewed-cert.pem");
    wait_for("the renewed certificate", Duration::from_secs(20), || {
        let (presented, wanted) = presented_certificate(r.port, &renewed);
        presented == wanted
    });
    drop(open);
    let log = log(&r.dir);
    assert!(log.contains("reason=\"file change\""), "{log}");
}

#[test]
fn bad_files_and_configs_keep_the_running_generation() {
    let (r, admin, filter, _sink) = setup("hot-bad", SPAM_HEURISTICS, "");
    assert_eq!(gtube(r.port), 550);
    let good = std::fs::read(SPAM_HEURISTICS).expect("policy");
    let config = r.dir.join("sluice.toml");
    let good_config = std::fs::read_to_string(&config).expect("config");
    let failed = || metric(admin, "sluice_reloads_total{result=\"failed\"}");

    let truncated = good[..good.len() / 2].to_vec();
    let wrong_version = std::fs::read(WRONG_VERSION).expect("fixture");
    type Breakage<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Breakage)> = vec![
        ("truncated component", Box::new(|| deploy(&filter, &truncated))),
        ("not wasm", Box::new(|| deploy(&filter, b"this is not a component"))),
        ("another WIT version", Box::new(|| deploy(&filter, &wrong_version))),
        (
            "init refuses its config",
            Box::new(|| {
                let extra = format!(
                    "[[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ refuse_init = \"not today\" }}\n"
                );
                std::fs::write(&config, format!("{good_config}{extra}")).expect("config");
            }),
        ),
        ("config syntax error", Box::new(|| std::fs::write(&config, "[server\nlisten = ").expect("config"))),
        ("policy file deleted", Box::new(|| std::fs::remove_file(&filter).expect("remove"))),
    ];
    for (what, break_it) in cases {
        let before = failed();
        break_it();
        wait_for(what, Duration::from_secs(20), || failed() > before);
        assert_eq!(gtube(r.port), 550, "{what}: the running generation must keep serving");
        assert_eq!(policy_name(admin), "spam-heuristics", "{what}");
        // Put things right again (the watcher may or may not count that as a change).
        std::fs::write(&config, &good_config).expect("config");
        if !filter.exists() || std::fs::read(&filter).expect("read") != good {
            deploy(&filter, &good);
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    let log = log(&r.dir);
    for cause in ["filter.wasm", "not today", "line 1", "cannot read"] {
        assert!(log.contains(cause), "{cause} missing from the log:\n{log}");
    }
    assert!(log.contains("reload failed; the running generation stays"), "{log}");
    // `sluice reload` works once everything is good again (and says what it did).
    let (ok, out) = sluice(&r.dir, &["reload"]);
    assert!(ok, "{out}");
    assert!(out.contains("\"result\""), "{out}");
}

/// The reply code to `RCPT TO:<to>` in a new session.
fn rcpt(port: u16, to: &str) -> u16 {
    python(
        port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\ns.ehlo('c.remote.test')\ns.mail('a@remote.test')\n\
             print(s.rcpt('{to}')[0])"
        ),
    )
    .trim()
    .parse::<u16>()
    .expect("code")
}

#[test]
fn a_config_reload_changes_domains_and_listeners() {
    let (r, admin, _filter, sink) = setup("hot-config", PROBE, "");
    assert_eq!(rcpt(r.port, "carol@new.test"), 554, "not a local domain yet");
    let second = free_port();
    let sink_port = {
        let text = std::fs::read_to_string(r.dir.join("sluice.toml")).expect("config");
        text.split("smtp:127.0.0.1:")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .and_then(|p| p.parse().ok())
            .expect("port")
    };
    let body = config_body(sink_port, admin, "", "example.test,new.test");
    let config = format!(
        "[server]\nhostname = \"relay.test\"\nlisten = [\"127.0.0.1:{}\", \"127.0.0.1:{second}\"]\nmax_message_bytes = 100000\n\
         prepared_instances = 8\n[spool]\ndir = \"spool\"\n{body}",
        r.port
    );
    std::fs::write(r.dir.join("sluice.toml"), config).expect("config");
    wait_for("the new domain", Duration::from_secs(20), || rcpt(r.port, "carol@new.test") == 250);
    assert_eq!(rcpt(second, "carol@new.test"), 250, "the new listener accepts");
    // SIGHUP takes the same path (nothing changed since: the report says so).
    let pid = r.proc.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    wait_for("the SIGHUP reload", Duration::from_secs(20), || {
        log(&r.dir).lines().any(|l| l.contains("reason=\"SIGHUP\"") && l.contains("result=\"unchanged\""))
    });
    drop(sink);
}

#[test]
fn shadow_decisions_are_logged_and_counted_but_never_applied() {
    let extra = format!(
        "[[tenant.policy]]\npath = \"{PROBE}\"\nname = \"strict\"\nmode = \"shadow\"\n\
         config = {{ verdict = \"reject\", verdict_stage = \"mail\" }}\n"
    );
    let (r, admin, _filter, _sink) = setup("hot-shadow", PROBE, &extra);
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.sendmail('alice@remote.test', ['bob@example.test'], '{MESSAGE}'))"
        ),
    );
    assert_eq!(out.trim(), "{}", "the shadow reject is not applied");
    wait_for("delivery", Duration::from_secs(20), || !files(&r.dir.join("sink"), ".eml").is_empty());
    let log = log(&r.dir);
    let line = log.lines().find(|l| l.contains("shadow decision")).expect("a shadow decision line");
    assert!(line.contains("strict") && line.contains("verdict=\"reject\""), "{line}");
    assert_eq!(
        metric(
            admin,
            "sluice_shadow_verdicts_total{tenant=\"example\",policy=\"strict\",verdict=\"reject\"}"
        ),
        1
    );
    assert_eq!(metric(admin, "sluice_shadow_disagreements_total{tenant=\"example\",policy=\"strict\"}"), 1);
    assert!(http(admin, "GET", "/api/policies").contains("\"mode\":\"shadow\""));
}

/// A configuration mounted the way Kubernetes mounts a ConfigMap — `sluice.toml` →
/// `..data/sluice.toml`, `..data` → a timestamped folder, updated by renaming a new `..data`
/// over the old one and removing the old folder — reloads once per update.
#[test]
fn a_kubernetes_style_symlink_swap_reloads_once() {
    let dir = temp_dir("hot-k8s");
    let (sink_port, admin, port) = (free_port(), free_port(), free_port());
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    std::fs::create_dir_all(dir.join("policies")).expect("policies dir");
    std::fs::copy(PROBE, dir.join("policies/filter.wasm")).expect("copy policy");
    let config = |domains: &str| {
        format!(
            "[server]\nhostname = \"relay.test\"\nlisten = [\"127.0.0.1:{port}\"]\n[spool]\ndir = \"spool\"\n{}",
            config_body(sink_port, admin, "", domains)
        )
    };
    let version = |name: &str, domains: &str| {
        std::fs::create_dir_all(dir.join(name)).expect("version dir");
        std::fs::write(dir.join(name).join("sluice.toml"), config(domains)).expect("config");
    };
    version("..2026_12_04_10_00_00.1", "example.test");
    std::os::unix::fs::symlink("..2026_12_04_10_00_00.1", dir.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/sluice.toml", dir.join("sluice.toml")).expect("link");
    let r = start(&dir, port);
    assert_eq!(rcpt(port, "carol@new.test"), 554, "not a local domain yet");

    // The update, as the kubelet makes it.
    version("..2026_12_04_10_05_00.2", "example.test,new.test");
    std::os::unix::fs::symlink("..2026_12_04_10_05_00.2", dir.join("..data_tmp")).expect("link");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    std::fs::remove_dir_all(dir.join("..2026_12_04_10_00_00.1")).expect("old version");
    wait_for("the new domain", Duration::from_secs(20), || rcpt(port, "carol@new.test") == 250);
    std::thread::sleep(Duration::from_secs(1));
    let reloads = log(&r.dir).lines().filter(|l| l.contains("reason=\"file change\"")).count();
    assert_eq!(reloads, 1, "{}", log(&r.dir));
}
