//! # Sluice
//!
//! An SMTP relay whose spam and relay rules are sandboxed WebAssembly components.
//!
//! # Layout
//!
//! - [`policy`]: the policy engine — loading components, running a tenant's chain at each
//!   SMTP stage, the host capabilities, and judging a transaction.
//! - [`state`]: state that outlives a session (the key-value store behind policies).
//! - [`dns`]: DNS for policies: the resolver trait and the fixture resolver of `policy test`.
//! - [`auth`]: SMTP AUTH users and exchanges, the STARTTLS certificate.
//! - [`config`]: the relay's TOML configuration and its embedded default.
//! - [`smtp`]: the SMTP protocol core without I/O (commands, addresses, DATA framing, session).
//! - [`server`]: the SMTP server that drives the core over sockets and the chains.
//! - [`live`]: the snapshot sessions run on, and hot reload (watch, generations, rollback).
//! - [`metrics`]: counters served to Prometheus; [`admin`]: the admin listener's HTTP API.
//! - [`spool`]: the durable queue; [`delivery`]: taking it to the next hops, retries, bounces.
//! - [`cli`]: the `sluice` command line, including the offline `sluice policy test` runner.
#![deny(missing_docs)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod domains;
pub mod input;
pub mod live;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod state;
