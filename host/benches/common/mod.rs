//! What the benchmarks share: the services policies get and the envelope of the message.

use std::sync::Arc;

use sluice::dns::FixtureResolver;
use sluice::policy::simulate::Envelope;
use sluice::policy::{Clock, HostServices};
use sluice::state::kv::MemoryKv;

/// An in-memory store, no DNS answers, the system clock.
pub fn services() -> HostServices {
    HostServices {
        kv: Arc::new(MemoryKv::new(1_000_000)),
        resolver: Arc::new(FixtureResolver::default()),
        clock: Clock::System,
    }
}

/// alice@example.org from mx.example.org (198.51.100.20) to bob@example.com.
pub fn envelope() -> Envelope {
    Envelope {
        client_ip: "198.51.100.20".parse().expect("ip"),
        helo: "mx.example.org".into(),
        from: "alice@example.org".into(),
        to: vec!["bob@example.com".into()],
        authenticated_user: None,
        transaction_id: "bench".into(),
    }
}
