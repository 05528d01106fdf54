//! Test fixture for the host's tests: one policy that can misbehave in every way the host
//! must survive, and report what it sees, depending on its configuration.
//!
//! - `fault`: `trap` (panic), `loop` (spin forever), `alloc` (grow memory without bound),
//!   `print` (write to stdout without end), `log` (log without end) — at `fault_stage`
//!   (default `data`).
//! - `refuse_init`: a message; `init` refuses the configuration with it.
//! - `verdict` at `verdict_stage` (default `data`): `accept`, `reject`, `tempfail`, `discard`,
//!   `quarantine`, with `disconnect = true` to ask for the connection to close.
//! - `symbol` (`NAME=SCORE`), `header` (`Name: value`), `add_recipient` and
//!   `remove_recipient` (an address) at data.
//! - `session_header` (a field name): at data, that field with `tls=VERSION CIPHER; user=USER`
//!   (`none` for either missing): what the policy was told of the client's session.
//! - `kv_set` (`key=value`) and `kv_get` (`key`) at data: the value read comes back as the
//!   symbol `KV_<value>` or `KV_NONE`.
//! - `kv_fill` (any value): at rcpt, writes one key per recipient and tempfails with
//!   `4.7.0 probe: key-value quota exceeded` once the store refuses it.
//! - `dns` (a name): at connect, A lookups of it until the budget runs out; the count of
//!   answers and the last error come back as symbols at data.
//! - `calls` (any value): at data, the symbol `CALLS_<n>` counts the hooks this instance
//!   ran, proving one instance serves one whole session and no more.

use sluice_policy::{
    Config, Context, Decision, Message, Policy, Recipient, Stage, dns, export_policy, kv, log,
};

/// The fixture policy.
pub struct Probe {
    config: Config,
    calls: u32,
    dns_answers: u32,
    dns_error: Option<String>,
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Connect => "connect",
        Stage::Helo => "helo",
        Stage::Mail => "mail",
        Stage::Rcpt => "rcpt",
        Stage::Data => "data",
    }
}

impl Probe {
    fn at(&mut self, stage: Stage) -> Decision {
        self.calls += 1;
        let name = stage_name(stage);
        if self.config.get("fault_stage").unwrap_or("data") == name {
            match self.config.get("fault") {
                Some("trap") => panic!("probe trapped on purpose"),
                Some("loop") => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                Some("alloc") => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        // Reserve without touching: the cap must stop it, not the deadline.
                        let mut chunk: Vec<u8> = Vec::with_capacity(1 << 20);
                        chunk.push(1);
                        hoard.push(chunk);
                        std::hint::black_box(&hoard);
                    }
                }
                Some("print") => loop {
                    println!("probe prints without end");
                },
                Some("log") => {
                    let mut i: u64 = 0;
                    loop {
                        i += 1;
                        log::info("probe logs without end", &[("i", &i.to_string())]);
                    }
                }
                _ => {}
            }
        }
        if self.config.get("verdict_stage").unwrap_or("data") == name {
            let decision = match self.config.get("verdict") {
                Some("accept") => Decision::accept(),
                Some("reject") => Decision::reject("5.7.1 probe rejects"),
                Some("tempfail") => Decision::tempfail("4.7.1 probe tempfails"),
                Some("discard") => Decision::discard(),
                Some("quarantine") => Decision::quarantine("probe quarantines"),
                _ => Decision::no_opinion(),
            };
            if self.config.bool_or("disconnect", false).unwrap_or(false) {
                return decision.disconnect();
            }
            return decision;
        }
        Decision::no_opinion()
    }
}

impl Policy for Probe {
    const STAGES: &'static [Stage] = &[Stage::Connect, Stage::Helo, Stage::Mail, Stage::Rcpt, Stage::Data];

    fn init(config: &Config) -> Result<Self, String> {
        if let Some(message) = config.get("refuse_init") {
            return Err(message.to_string());
        }
        Ok(Self { config: config.clone(), calls: 0, dns_answers: 0, dns_error: None })
    }

    fn on_connect(&mut self, _ctx: &Context) -> Decision {
        if let Some(name) = self.config.get("dns").map(str::to_string) {
            for _ in 0..100 {
                match dns::a(&name) {
                    Ok(answers) => self.dns_answers += answers.len() as u32,
                    Err(e) => {
                        self.dns_error = Some(format!("{e:?}"));
                        if e == dns::DnsError::BudgetExceeded {
                            break;
                        }
                    }
                }
            }
        }
        self.at(Stage::Connect)
    }

    fn on_helo(&mut self, _ctx: &Context) -> Decision {
        self.at(Stage::Helo)
    }

    fn on_mail(&mut self, _ctx: &Context) -> Decision {
        self.at(Stage::Mail)
    }

    fn on_rcpt(&mut self, _ctx: &Context, rcpt: &Recipient) -> Decision {
        if self.config.get("kv_fill").is_some()
            && let Err(e) = kv::set(&format!("rcpt:{}", rcpt.address), b"seen", None)
        {
            return match e {
                kv::KvError::QuotaExceeded => Decision::tempfail("4.7.0 probe: key-value quota exceeded"),
                other => Decision::tempfail(&format!("4.7.0 probe: {other}")),
            };
        }
        self.at(Stage::Rcpt)
    }

    fn on_data(&mut self, ctx: &Context, message: &Message) -> Decision {
        let mut decision = self.at(Stage::Data);
        if let Some(name) = self.config.get("session_header") {
            // What the policy was told of the client's session: its TLS and its AUTH user.
            let client = &ctx.client;
            let tls =
                client.tls.as_ref().map_or("none".to_string(), |t| format!("{} {}", t.version, t.cipher));
            let user = client.authenticated_user.as_deref().unwrap_or("none");
            decision = decision.add_header(name, &format!("tls={tls}; user={user}"));
        }
        if self.config.get("calls").is_some() {
            decision = decision.symbol(&format!("CALLS_{}", self.calls), 0.0, None);
        }
        if let Some((name, score)) = self.config.get("symbol").and_then(|s| s.split_once('=')) {
            decision = decision.symbol(name, score.parse().unwrap_or(0.0), message.subject().as_deref());
        }
        if let Some((name, value)) = self.config.get("header").and_then(|h| h.split_once(':')) {
            decision = decision.add_header(name.trim(), value.trim());
        }
        if let Some(address) = self.config.get("add_recipient") {
            decision = decision.add_recipient(address);
        }
        if let Some(address) = self.config.get("remove_recipient") {
            decision = decision.remove_recipient(address);
        }
        if let Some((key, value)) = self.config.get("kv_set").and_then(|s| s.split_once('='))
            && let Err(e) = kv::set(key, value.as_bytes(), None)
        {
            decision = decision.symbol(&format!("KV_ERROR_{e:?}"), 0.0, None);
        }
        if let Some(key) = self.config.get("kv_get") {
            let name = match kv::get(key) {
                Ok(Some(value)) => format!("KV_{}", String::from_utf8_lossy(&value)),
                Ok(None) => "KV_NONE".to_string(),
                Err(e) => format!("KV_ERROR_{e:?}"),
            };
            decision = decision.symbol(&name, 0.0, None);
        }
        if self.config.get("escape").is_some() {
            // Every way out of the sandbox the standard library offers: each must fail.
            let outcome =
                |name: &str, got: bool| format!("ESCAPE_{name}_{}", if got { "OPEN" } else { "DENIED" });
            let file = std::fs::read("/etc/passwd").is_ok() || std::fs::read_dir("/").is_ok();
            let write = std::fs::write("/tmp/sluice-probe-escape", b"x").is_ok();
            let env = std::env::vars().next().is_some() || std::env::var("HOME").is_ok();
            let args = std::env::args().next().is_some();
            let socket = std::net::TcpStream::connect(("127.0.0.1", 25)).is_ok()
                || std::net::UdpSocket::bind(("127.0.0.1", 0)).is_ok()
                || std::net::TcpListener::bind(("127.0.0.1", 0)).is_ok();
            let lookup = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 25)).is_ok();
            for (name, got) in [
                ("FILE", file),
                ("WRITE", write),
                ("ENV", env),
                ("ARGS", args),
                ("SOCKET", socket),
                ("LOOKUP", lookup),
            ] {
                decision = decision.symbol(&outcome(name, got), 0.0, None);
            }
        }
        if self.config.get("dns").is_some() {
            decision = decision.symbol(&format!("DNS_ANSWERS_{}", self.dns_answers), 0.0, None);
            if let Some(error) = &self.dns_error {
                decision = decision.symbol(&format!("DNS_{error}"), 0.0, None);
            }
        }
        decision
    }
}

export_policy!(Probe);
