//! SMTP (RFC 5321) without I/O and without policies: command lines and their framing,
//! envelope addresses and the relay tricks they can hide, the DATA framing, the AUTH
//! exchanges, replies, and the protocol state of a session. It depends on nothing else in the
//! crate; the conversation ([`crate::conversation`]) drives it and runs the policies.

pub mod address;
pub mod command;
pub mod data;
pub mod envelope;
pub mod line;
pub mod proxy;
pub mod reply;
pub mod sasl;
pub mod session;

pub use envelope::{EnvelopeAddress, EsmtpParam};
pub use reply::Reply;
