//! # Sluice
//!
//! An SMTP relay whose spam and relay rules are sandboxed WebAssembly components.
//!
//! # Layout
//!
//! The rooms, in the order a message meets them (`docs/architecture.md` walks one message
//! through them):
//!
//! - [`listener`]: sockets, admission (connection limits), TLS and timers; it drives a
//!   conversation over each connection and stops accepting on shutdown.
//! - [`conversation`]: the SMTP conversation of one session without I/O — the session's state,
//!   once — which asks for stages, stores and replies; `sluice policy test` drives it too.
//! - [`smtp`]: the protocol core the conversation uses: commands, line and DATA framing,
//!   addresses and relay tricks, AUTH exchanges, replies by name, the protocol state. It
//!   depends on nothing else here.
//! - [`tenants`]: who is who — the edge and the tenants with their chains and limits, the
//!   domain map, the snapshot a session runs on, shared counters.
//! - [`recipients`]: which recipients of a tenant's domains exist (a list, or its next hop
//!   asked), checked at RCPT before any policy.
//! - [`sender`]: sender authentication — SPF, DKIM, DMARC and ARC checked once per inbound
//!   message, the `Authentication-Results` field, DKIM signing of outbound mail.
//! - [`policy`]: the policy engine — loading components, running a chain at each stage, the
//!   host capabilities, judging a transaction.
//! - [`relay`]: what every session shares (snapshot, spool, counters, DNS, the queue into
//!   delivery) and what they ask of it.
//! - [`spool`]: the durable queue; [`delivery`]: taking it to the next hops, retries, bounces.
//! - [`reload`]: generations, rollback and the file watcher.
//! - [`tls`]: the TLS clients towards next hops; [`net`]: the TCP connections to them
//!   (keepalive).
//! - [`config`]: the TOML configuration, parsed once into typed values, and its embedded
//!   default.
//! - [`state`]: the key-value store behind policies; [`dns`]: resolvers; [`auth`]: AUTH users
//!   and the STARTTLS certificate; [`mail`]: RFC 5322 dates and header fields.
//! - [`metrics`]: counters served to Prometheus; [`admin`]: the admin listener's HTTP API.
//! - [`cli`]: the `sluice` command line, including `sluice policy test`.
#![deny(missing_docs)]

pub mod admin;
pub mod auth;
pub mod builtin;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod delegation;
pub mod delivery;
pub mod dns;
pub mod fleet;
pub mod listener;
pub mod mail;
pub mod metrics;
pub mod milter;
pub mod net;
pub mod oci;
pub mod panics;
pub mod policy;
pub mod recent;
pub mod recipients;
pub mod relay;
pub mod reload;
pub mod sender;
pub mod smtp;
pub mod spool;
pub mod state;
mod sync;
pub mod tenants;
pub mod tls;
