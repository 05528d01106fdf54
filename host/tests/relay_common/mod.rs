//! Helpers of the relay's end-to-end tests: the `sluice` binary on loopback, Python's smtplib
//! as the client, `tests/support/sink.py` as the next hop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-relay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a script of `tests/support` and wait for its "ready" line.
pub fn support(script: &str, args: &[String]) -> Proc {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support").join(script);
    let mut child =
        Command::new("python3").arg(path).args(args).stdout(Stdio::piped()).spawn().expect(script);
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    assert_eq!(line.trim(), "ready", "{script}");
    Proc(child)
}

pub fn sink(port: u16, dir: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![port.to_string(), dir.display().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    support("sink.py", &args)
}

pub struct Relay {
    pub proc: Proc,
    pub port: u16,
    pub dir: PathBuf,
}

pub fn relay(dir: &Path, port: u16, body: &str) -> Relay {
    relay_with(dir, port, "", body)
}

/// [`relay`] with more `[server]` keys.
pub fn relay_with(dir: &Path, port: u16, server: &str, body: &str) -> Relay {
    write_config(dir, port, server, body);
    start(dir, port)
}

/// `DIR/sluice.toml`: a relay on `port` spooling to `DIR/spool`, then `body`.
pub fn write_config(dir: &Path, port: u16, server: &str, body: &str) {
    let config = format!(
        "[server]\nhostname = \"relay.test\"\nlisten = [\"127.0.0.1:{port}\"]\nmax_message_bytes = 100000\n\
         {server}[spool]\ndir = \"spool\"\n{body}"
    );
    std::fs::write(dir.join("sluice.toml"), config).expect("config");
}

pub fn start(dir: &Path, port: u16) -> Relay {
    start_with(dir, port, &[])
}

pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Relay {
    start_env(dir, port, extra, &[])
}

/// [`start_with`] with more environment variables.
pub fn start_env(dir: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Relay {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(dir.join("sluice.toml"))
        .args(extra)
        .envs(env.iter().copied())
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .env("SLUICE_LOG", "info")
        .stderr(std::fs::File::create(dir.join("relay.log")).expect("log"))
        .spawn()
        .expect("start sluice");
    let mut proc = Proc(child);
    // Long enough for a cold compile of the large JavaScript and Python components.
    let deadline = Instant::now() + Duration::from_secs(300);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "relay did not start: {}", log(dir));
        if let Ok(Some(status)) = proc.0.try_wait() {
            panic!("relay exited ({status}): {}", log(dir));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Relay { proc, port, dir: dir.to_path_buf() }
}

pub fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default()
}

/// Run a Python snippet with `PORT` defined; returns its stdout.
pub fn python(port: u16, code: &str) -> String {
    let program = format!("import smtplib, socket\nPORT = {port}\n{code}");
    let out = Command::new("python3").arg("-c").arg(program).output().expect("python3");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files in `dir` ending in `suffix`, sorted.
pub fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(suffix)).collect())
        .unwrap_or_default();
    found.sort();
    found
}

pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub const MESSAGE: &str = "From: Alice <alice@remote.test>\\r\\nTo: bob@example.test\\r\\nSubject: Lunch\\r\\n\
Date: Sat, 28 Nov 2026 00:00:00 +0000\\r\\nMessage-ID: <1.2@remote.test>\\r\\n\\r\\nShall we meet at noon?\\r\\n";

/// Loopback is not trusted here: the client is "the internet".
pub fn inbound(sink_port: u16) -> String {
    format!(
        "[relay]\ntrusted_networks = []\n[delivery]\nretry_base_secs = 1\nretry_max_secs = 2\n\
         smarthost = \"smtp:127.0.0.1:{sink_port}\"\n\
         [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{sink_port}\"\n"
    )
}

pub fn sluice(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--config")
        .arg(dir.join("sluice.toml"))
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .output()
        .expect("sluice");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The sink's counters: connections, transactions, most connections open at once.
pub fn sink_stats(dir: &Path) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(dir.join("stats.json")).unwrap_or_default();
    let field = |name: &str| {
        text.split(&format!("\"{name}\": "))
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("sessions"), field("transactions"), field("max_open"))
}

/// The vectors of nmap's smtp-open-relay script and the classic relay tests, with
/// example.test local, elsewhere.test foreign and 127.0.0.1 the relay's own address.
pub const RELAY_VECTORS: [&str; 19] = [
    "<relaytest@elsewhere.test>",
    "<relaytest%elsewhere.test@example.test>",
    "<relaytest%elsewhere.test@[127.0.0.1]>",
    "<\"relaytest@elsewhere.test\">",
    "<\"relaytest%elsewhere.test\">",
    "<relaytest@elsewhere.test@example.test>",
    "<relaytest@elsewhere.test@[127.0.0.1]>",
    "<\"relaytest@elsewhere.test\"@example.test>",
    "<\"relaytest@elsewhere.test\"@[127.0.0.1]>",
    "<elsewhere.test!relaytest>",
    "<elsewhere.test!relaytest@example.test>",
    "<elsewhere.test!relaytest@[127.0.0.1]>",
    "<@example.test:relaytest@elsewhere.test>",
    "<@[127.0.0.1]:relaytest@elsewhere.test>",
    "<relaytest@[127.0.0.1]>",
    "<relaytest@127.0.0.1>",
    "<relaytest@elsewhere.test.>",
    "<relaytest@example.test.>",
    "<relaytest@sub.example.test>",
];

/// The relay vectors as a Python list literal.
pub fn relay_vectors_python() -> String {
    RELAY_VECTORS.iter().map(|v| format!("'{}'", v.replace('\'', "\\'"))).collect::<Vec<_>>().join(",")
}

/// `redis-server` on loopback, without persistence, on `port`.
pub fn redis(port: u16, dir: &Path) -> Proc {
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

/// Debian's `docker-registry` (the CNCF distribution server) on loopback, storing in `dir`.
pub fn registry(dir: &std::path::Path, port: u16) -> Proc {
    registry_with(dir, port, "")
}

/// [`registry`] with more of its configuration (YAML, e.g. an `auth:` section).
pub fn registry_with(dir: &std::path::Path, port: u16, extra: &str) -> Proc {
    std::fs::write(
        dir.join("registry.yml"),
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nlog:\n  level: warn\n{extra}",
            dir.join("registry").display()
        ),
    )
    .expect("registry config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("registry.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (Debian package docker-registry) must be installed");
    wait_for("the registry", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Proc(child)
}

/// A Redis-family process (`redis-server ARGS`), waited for on `port`.
pub fn redis_server(port: u16, args: &[String]) -> Proc {
    let child = Command::new("redis-server").args(args).stdout(Stdio::null()).spawn().expect("redis-server");
    wait_for("redis-server", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).is_ok());
    Proc(child)
}

pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out =
        Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A master, its replica and one sentinel watching them as `main` (the master declared down
/// after a second).
pub struct Sentinels {
    pub master: Proc,
    pub replica: Proc,
    pub sentinel: Proc,
    pub master_port: u16,
    pub replica_port: u16,
    pub sentinel_port: u16,
}

impl Sentinels {
    /// The `[state]` keys that reach the master through the sentinel (the URL's host is
    /// not used).
    pub fn state(&self) -> String {
        format!(
            "backend = \"redis://127.0.0.1:1/0\"\nsentinels = [\"127.0.0.1:{}\"]\nsentinel_master = \"main\"\n",
            self.sentinel_port
        )
    }
}

pub fn sentinels(dir: &Path) -> Sentinels {
    let (master_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
    let common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(String::from);
    // Each its own folder: a replica's first sync writes a dump.
    let own = |name: &str, port: u16| {
        let own = dir.join(name);
        std::fs::create_dir_all(&own).expect("redis dir");
        ["--port".to_string(), port.to_string(), "--dir".to_string(), own.display().to_string()]
    };
    let master = redis_server(master_port, &[&own("master", master_port)[..], &common].concat());
    let replica_of = ["--replicaof".to_string(), "127.0.0.1".into(), master_port.to_string()];
    let replica =
        redis_server(replica_port, &[&own("replica", replica_port)[..], &replica_of, &common].concat());
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds main 1000\nsentinel failover-timeout main 3000\n"
        ),
    )
    .expect("sentinel.conf");
    let sentinel = redis_server(sentinel_port, &[conf.display().to_string(), "--sentinel".into()]);
    wait_for("the sentinel to know the replica", Duration::from_secs(30), || {
        redis_cli(sentinel_port, &["sentinel", "replicas", "main"]).contains(&replica_port.to_string())
    });
    Sentinels { master, replica, sentinel, master_port, replica_port, sentinel_port }
}

/// One admin API request over a plain socket (fast enough to time a convergence closely).
pub fn admin_api(port: u16, method: &str, path: &str) -> serde_json::Value {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return serde_json::Value::Null;
    };
    let request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
    let mut text = String::new();
    if std::io::Write::write_all(&mut stream, request.as_bytes()).is_err()
        || std::io::Read::read_to_string(&mut stream, &mut text).is_err()
    {
        return serde_json::Value::Null;
    }
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// The generations of the nodes `GET /api/fleet` shows alive, sorted.
pub fn fleet_generations(port: u16) -> Vec<String> {
    let view = admin_api(port, "GET", "/api/fleet");
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

/// A private Postfix instance (configuration and queue under `dir`), listening on `port`,
/// relaying `example.test`, `faulty.test`, `closed.test`, `held.test` and `dropped.test` from anyone to the next hop on
/// `next_hop`; `main` adds `main.cf` settings. Stopped on drop.
pub struct Postfix {
    pub conf: PathBuf,
    pub port: u16,
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(&self.conf).arg("stop").output();
    }
}

impl Postfix {
    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.conf.parent().expect("dir").join("maillog")).unwrap_or_default()
    }
}

pub fn postfix(dir: &Path, port: u16, next_hop: u16, main: &[&str]) -> Postfix {
    let (conf, spool, data) = (dir.join("etc"), dir.join("spool"), dir.join("data"));
    for d in [&conf, &spool, &data] {
        std::fs::create_dir_all(d).expect("postfix dir");
    }
    let _ = Command::new("chown").arg("postfix").arg(&data).status();
    std::fs::copy("/etc/postfix/master.cf", conf.join("master.cf"))
        .expect("/etc/postfix/master.cf (Debian package postfix) must be installed");
    let _ = std::fs::copy("/etc/postfix/dynamicmaps.cf", conf.join("dynamicmaps.cf"));
    let hop = format!("[127.0.0.1]:{next_hop}");
    let mut text = format!(
        "compatibility_level = 3.6\nconfig_directory = {conf}\nqueue_directory = {spool}\ndata_directory = {data}\n\
         myhostname = mx.test\nmydomain = mx.test\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
         mynetworks = 127.0.0.2/32\nmydestination =\nlocal_recipient_maps =\nalias_maps =\nalias_database =\n\
         relay_domains = example.test, faulty.test, closed.test, held.test, dropped.test\nrelay_transport = smtp:{hop}\nrelayhost = {hop}\n\
         smtp_dns_support_level = disabled\nsmtp_host_lookup = native\n\
         smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
         queue_run_delay = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n\
         biff = no\nnotify_classes =\nmaillog_file = {log}\nmaillog_file_prefixes = /var, /dev/stdout, {dir}\n",
        conf = conf.display(),
        spool = spool.display(),
        data = data.display(),
        log = dir.join("maillog").display(),
        dir = dir.display(),
    );
    for line in main {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(conf.join("main.cf"), text).expect("main.cf");
    let postconf = |args: &[&str]| {
        let out = Command::new("postconf").arg("-c").arg(&conf).args(args).output().expect("postconf");
        assert!(out.status.success(), "postconf {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let _ = Command::new("postconf").arg("-c").arg(&conf).args(["-M#", "smtp/inet"]).output();
    postconf(&["-Me", &format!("127.0.0.1:{port}/inet=127.0.0.1:{port} inet n - n - - smtpd")]);
    postconf(&["-F", "*/*/chroot = n"]);
    let started = Command::new("postfix").arg("-c").arg(&conf).arg("start").output().expect("postfix");
    assert!(started.status.success(), "postfix start: {}", String::from_utf8_lossy(&started.stderr));
    let instance = Postfix { conf, port };
    wait_for("postfix to listen", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    instance
}

/// Dovecot in the foreground with `config` (written to `DIR/dovecot.conf`), once `ready`.
pub fn dovecot(dir: &Path, config: &str, ready: impl FnMut() -> bool) -> Proc {
    std::fs::write(dir.join("dovecot.conf"), config).expect("dovecot.conf");
    let child = Command::new("dovecot")
        .args(["-F", "-c"])
        .arg(dir.join("dovecot.conf"))
        .stdout(std::fs::File::create(dir.join("dovecot.out")).expect("out"))
        .stderr(std::fs::File::create(dir.join("dovecot.err")).expect("err"))
        .spawn()
        .expect("dovecot (Debian packages dovecot-core and dovecot-lmtpd; scripts/test.sh installs them)");
    let proc = Proc(child);
    wait_for("dovecot", Duration::from_secs(20), ready);
    proc
}
