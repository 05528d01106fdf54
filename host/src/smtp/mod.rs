//! SMTP (RFC 5321) without I/O: command parsing, envelope addresses and the relay tricks they
//! can hide, the DATA framing, replies, and the session state machine. The server in
//! [`crate::server`] drives these over sockets.

pub mod address;
pub mod command;
pub mod data;
pub mod reply;
pub mod session;
