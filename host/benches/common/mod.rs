//! What the benchmarks share: the services policies get, and one message's stages run through
//! a chain the way a session runs them (a fresh chain session, connect, helo, mail, one rcpt,
//! data, the judge) — the chain's cost alone, without the SMTP conversation around it.

use std::sync::Arc;

use sluice::dns::FixtureResolver;
use sluice::policy::{
    Chain, ChainSession, Clock, EnvelopeAddress, HostServices, Judge, Judgement, LoadedPolicy, ParsedMessage,
    PolicyEngine, PolicySpec, SessionInfo, Stage, StageInput,
};
use sluice::state::kv::MemoryKv;

/// `path` loaded for the tenant `bench` with `config`, each instance serving `reuse` sessions
/// (1: a fresh instance for every session, the default).
#[allow(dead_code)]
pub fn load(
    rt: &tokio::runtime::Runtime,
    engine: &PolicyEngine,
    services: &HostServices,
    path: &str,
    config: &[(&str, &str)],
    reuse: u32,
) -> Arc<LoadedPolicy> {
    let mut spec = PolicySpec::new(path);
    spec.config = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    spec.limits.sessions_per_instance = reuse;
    rt.block_on(engine.load(&spec, "bench", services.clone())).expect("load policy")
}

/// An in-memory store, no DNS answers, the system clock.
pub fn services() -> HostServices {
    HostServices {
        kv: Arc::new(MemoryKv::new(1_000_000)),
        resolver: Arc::new(FixtureResolver::default()),
        clock: Clock::System,
    }
}

/// alice@example.org from mx.example.org (198.51.100.20) to bob@example.com, at each stage.
pub fn context(stage: Stage) -> SessionInfo {
    SessionInfo {
        tenant: "bench".into(),
        transaction_id: "bench".into(),
        client_ip: "198.51.100.20".parse().expect("ip"),
        client_port: 49152,
        reverse_dns: None,
        helo: (stage != Stage::Connect).then(|| "mx.example.org".into()),
        tls: None,
        authenticated_user: None,
        listener: "127.0.0.1:25".into(),
        hostname: "sluice.test".into(),
        mail_from: (stage >= Stage::Mail).then(|| EnvelopeAddress::plain("alice@example.org")),
        recipients: match stage {
            Stage::Data => vec![EnvelopeAddress::plain("bob@example.com")],
            _ => Vec::new(),
        },
    }
}

/// One message through `chain` in a session of its own.
pub async fn one_message(chain: &Arc<Chain>, message: &Arc<ParsedMessage>) -> Judgement {
    let mut session = ChainSession::new(chain.clone());
    let mut judge = Judge::new();
    for stage in [Stage::Connect, Stage::Helo, Stage::Mail] {
        let _ = judge.absorb(&session.run(stage, &context(stage), StageInput::Session).await);
    }
    let bob = EnvelopeAddress::plain("bob@example.com");
    let _ = judge.absorb(&session.run(Stage::Rcpt, &context(Stage::Rcpt), StageInput::Recipient(&bob)).await);
    let data = session.run(Stage::Data, &context(Stage::Data), StageInput::Message(message)).await;
    judge.finish(&data, &chain.settings.thresholds)
}
