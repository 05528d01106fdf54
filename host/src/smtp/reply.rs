//! SMTP replies (RFC 5321 §4.2) with RFC 3463 enhanced status codes: the type, every reply the
//! relay gives by name, and their wire form.
//!
//! A reply the relay sends is named here once; handlers use the name, never a code and text
//! written out in place. Replies whose text carries a detail (a policy's words, a queue id) are
//! made by the functions at the end.

use std::borrow::Cow;

/// An SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reply {
    /// Three-digit code.
    pub code: u16,
    /// Enhanced status, e.g. `5.7.1`.
    pub enhanced: Option<Cow<'static, str>>,
    /// One line of text.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply fixed at compile time.
    pub const fn fixed(code: u16, enhanced: &'static str, text: &'static str) -> Self {
        Self { code, enhanced: Some(Cow::Borrowed(enhanced)), text: Cow::Borrowed(text) }
    }

    /// A reply from its parts.
    pub fn new(code: u16, enhanced: &str, text: &str) -> Self {
        Self { code, enhanced: Some(Cow::Owned(enhanced.to_string())), text: Cow::Owned(text.to_string()) }
    }

    /// A reply with a fixed code and a text made at run time.
    pub fn with_text(code: u16, enhanced: &'static str, text: String) -> Self {
        Self { code, enhanced: Some(Cow::Borrowed(enhanced)), text: Cow::Owned(text) }
    }

    /// A reply without an enhanced code (the greeting, 354, the EHLO lines).
    pub fn plain(code: u16, text: String) -> Self {
        Self { code, enhanced: None, text: Cow::Owned(text) }
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Wire form: `code enhanced text CRLF`.
    pub fn render(&self) -> Vec<u8> {
        render_lines(self.code, self.enhanced.as_deref(), &[&self.text])
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

/// Wire form of a multi-line reply: `code-` on every line but the last.
pub fn render_lines(code: u16, enhanced: Option<&str>, lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let count = lines.len().max(1);
    for i in 0..count {
        let text = lines.get(i).copied().unwrap_or("");
        let sep = if i + 1 == count { ' ' } else { '-' };
        let line = match enhanced {
            Some(e) => format!("{code}{sep}{e} {text}\r\n"),
            None => format!("{code}{sep}{text}\r\n"),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

// --- Success and intermediate replies.

/// `250 2.0.0 Ok`: RSET, NOOP.
pub const OK: Reply = Reply::fixed(250, "2.0.0", "Ok");
/// `250 2.1.0 Ok`: MAIL accepted.
pub const SENDER_OK: Reply = Reply::fixed(250, "2.1.0", "Ok");
/// `250 2.1.5 Ok`: RCPT accepted.
pub const RECIPIENT_OK: Reply = Reply::fixed(250, "2.1.5", "Ok");
/// `354`: send the message.
pub const START_MAIL_INPUT: Reply =
    Reply { code: 354, enhanced: None, text: Cow::Borrowed("End data with <CR><LF>.<CR><LF>") };
/// `220 2.0.0`: STARTTLS accepted, the handshake follows.
pub const READY_FOR_TLS: Reply = Reply::fixed(220, "2.0.0", "Ready to start TLS");
/// `235 2.7.0`: AUTH succeeded.
pub const AUTHENTICATED: Reply = Reply::fixed(235, "2.7.0", "Authentication successful");
/// `252 2.1.5`: VRFY, answered without looking anything up.
pub const CANNOT_VERIFY: Reply =
    Reply::fixed(252, "2.1.5", "Cannot verify the user, but will accept the message and attempt delivery");
/// `214 2.0.0`: HELP.
pub const HELP: Reply =
    Reply::fixed(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");

// --- Closing the connection.

/// `421 4.7.0`: the relay is at its connection limit.
pub const TOO_MANY_CONNECTIONS: Reply = Reply::fixed(421, "4.7.0", "Too many connections, try again later");
/// `421 4.7.0`: the client's address is at its connection limit.
pub const TOO_MANY_CONNECTIONS_FROM_YOU: Reply =
    Reply::fixed(421, "4.7.0", "Too many connections from your address, try again later");
/// `421 4.4.2`: no command within the command timeout.
pub const COMMAND_TIMEOUT: Reply = Reply::fixed(421, "4.4.2", "Timeout waiting for a command, closing");
/// `421 4.7.0`: too many protocol errors in one session.
pub const TOO_MANY_ERRORS: Reply = Reply::fixed(421, "4.7.0", "Too many errors, closing connection");
/// `421 4.7.0`: AUTH from an address locked out after failures.
pub const AUTH_LOCKED_OUT: Reply =
    Reply::fixed(421, "4.7.0", "Too many failed authentication attempts, try again later");
/// `421 4.3.2`: the relay is shutting down.
pub const SHUTTING_DOWN: Reply = Reply::fixed(421, "4.3.2", "Service shutting down, try again later");

// --- Command syntax and sequence.

/// `500 5.5.2`: not a command.
pub const UNKNOWN_COMMAND: Reply = Reply::fixed(500, "5.5.2", "Command not recognized");
/// `500 5.5.2`: a command line that is not UTF-8.
pub const NOT_UTF8: Reply = Reply::fixed(500, "5.5.2", "Command is not valid UTF-8");
/// `500 5.5.6`: a command line over the limit.
pub const LINE_TOO_LONG: Reply = Reply::fixed(500, "5.5.6", "Line too long");
/// `500 5.5.6`: a line still without an end long after the limit; the connection closes.
pub const RUNAWAY_LINE: Reply = Reply::fixed(500, "5.5.6", "Line too long, closing connection");
/// `500 5.5.2`: a command line with a bare CR or LF.
pub const BARE_LINE_ENDING_IN_COMMAND: Reply =
    Reply::fixed(500, "5.5.2", "Commands must end with CRLF; bare CR or LF is not allowed");
/// `501 5.5.4`: EHLO/HELO with something that is not a host name.
pub const INVALID_HOST_NAME: Reply = Reply::fixed(501, "5.5.4", "Syntax error: invalid host name");
/// `501 5.5.4`: SIZE without a number.
pub const SIZE_NOT_A_NUMBER: Reply = Reply::fixed(501, "5.5.4", "Syntax error: SIZE needs a number");
/// `502 5.5.1`: EXPN.
pub const EXPN_REFUSED: Reply = Reply::fixed(502, "5.5.1", "EXPN is not supported");
/// `502 5.5.1`: STARTTLS without a certificate.
pub const TLS_NOT_AVAILABLE: Reply = Reply::fixed(502, "5.5.1", "STARTTLS is not available");
/// `502 5.5.1`: AUTH without users, or over plaintext where it is not offered.
pub const AUTH_NOT_AVAILABLE: Reply = Reply::fixed(502, "5.5.1", "AUTH is not available");
/// `503 5.5.1`: STARTTLS twice.
pub const TLS_ALREADY_ACTIVE: Reply = Reply::fixed(503, "5.5.1", "TLS is already active");
/// `503 5.5.1`: AUTH twice.
pub const ALREADY_AUTHENTICATED: Reply = Reply::fixed(503, "5.5.1", "Already authenticated");
/// `503 5.5.1`: a command that needs EHLO first.
pub const EHLO_FIRST: Reply = Reply::fixed(503, "5.5.1", "Bad sequence of commands: EHLO first");
/// `503 5.5.1`: a command that needs MAIL first.
pub const MAIL_FIRST: Reply = Reply::fixed(503, "5.5.1", "Bad sequence of commands: MAIL first");
/// `503 5.5.1`: a second MAIL in one transaction.
pub const MAIL_ALREADY_GIVEN: Reply =
    Reply::fixed(503, "5.5.1", "Bad sequence of commands: MAIL already given");
/// `503 5.5.1`: STARTTLS or AUTH inside a transaction.
pub const NOT_DURING_A_TRANSACTION: Reply =
    Reply::fixed(503, "5.5.1", "Bad sequence of commands: not during a transaction");
/// `503 5.5.1`: DATA after BDAT in one transaction.
pub const DATA_AFTER_BDAT: Reply = Reply::fixed(503, "5.5.1", "Bad sequence of commands: DATA after BDAT");
/// `504 5.5.4`: an AUTH mechanism other than PLAIN and LOGIN.
pub const UNKNOWN_MECHANISM: Reply = Reply::fixed(504, "5.5.4", "Unrecognized authentication mechanism");
/// `530 5.7.0`: AUTH before STARTTLS where TLS is required for it.
pub const STARTTLS_FIRST: Reply = Reply::fixed(530, "5.7.0", "Must issue a STARTTLS command first");
/// `554 5.5.1`: DATA or BDAT without an accepted recipient.
pub const NO_VALID_RECIPIENTS: Reply = Reply::fixed(554, "5.5.1", "No valid recipients");
/// `555 5.5.4`: ESMTP parameters after HELO.
pub const PARAMETERS_NEED_EHLO: Reply = Reply::fixed(555, "5.5.4", "Parameters need EHLO");

// --- AUTH.

/// `501 5.7.0`: the client cancelled the exchange with `*`.
pub const AUTH_CANCELLED: Reply = Reply::fixed(501, "5.7.0", "Authentication cancelled");
/// `501 5.5.2`: an AUTH response that is not valid base64 or PLAIN.
pub const AUTH_UNDECODABLE: Reply = Reply::fixed(501, "5.5.2", "Cannot decode the response");
/// `535 5.7.8`: wrong user or password.
pub const AUTH_FAILED: Reply = Reply::fixed(535, "5.7.8", "Authentication credentials invalid");

// --- Recipients and relaying.

/// `554 5.7.1`: a foreign recipient from a client that may not relay.
pub const RELAYING_DENIED: Reply = Reply::fixed(554, "5.7.1", "Relaying denied");
/// `550 5.1.1`: bare `postmaster` where no tenant has a domain.
pub const NO_POSTMASTER: Reply = Reply::fixed(550, "5.1.1", "No postmaster here");
/// `452 4.5.3`: more recipients than a message may have.
pub const TOO_MANY_RECIPIENTS: Reply = Reply::fixed(452, "4.5.3", "Too many recipients");
/// `452 4.5.3`: a recipient of another tenant than the transaction's (RFC 5321 §4.5.3.1.10:
/// clients send it again in a new transaction).
pub const ANOTHER_TRANSACTION: Reply = Reply::fixed(
    452,
    "4.5.3",
    "Too many recipients: this one belongs elsewhere, send it in another transaction",
);
/// `451 4.7.1`: the tenant's message rate is used up for this minute.
pub const RATE_EXCEEDED: Reply =
    Reply::fixed(451, "4.7.1", "Message rate exceeded for this domain, try again later");

// --- The message.

/// `552 5.3.4`: the message (or its declared SIZE) is over the limit.
pub const MESSAGE_TOO_BIG: Reply = Reply::fixed(552, "5.3.4", "Message size exceeds the fixed maximum");
/// `552 5.3.4`: the declared SIZE is over this recipient's tenant's limit.
pub const MESSAGE_TOO_BIG_FOR_RECIPIENT: Reply =
    Reply::fixed(552, "5.3.4", "Message size exceeds the fixed maximum for this recipient");
/// `521 5.5.2`: a bare CR or LF in DATA; the connection closes.
pub const BARE_LINE_ENDING_IN_DATA: Reply =
    Reply::fixed(521, "5.5.2", "Bare CR or LF in message data is not allowed (RFC 5321 §2.3.8), closing");
/// `550 5.6.11`: a bare CR or LF in a BDAT message.
pub const BARE_LINE_ENDING_IN_CHUNKS: Reply =
    Reply::fixed(550, "5.6.11", "Bare CR or LF in message data is not allowed");
/// `550 5.6.0`: a NUL byte in the message: not text (RFC 5321 §2.3.8), and a next hop that
/// drops NULs could see an end of data (`CRLF NUL . CRLF`) where this relay saw none.
pub const NUL_IN_DATA: Reply = Reply::fixed(550, "5.6.0", "NUL characters in message data are not allowed");
/// `554 5.4.6`: more `Received` fields than `server.max_received_headers`: a mail loop.
pub const MAIL_LOOP: Reply = Reply::fixed(554, "5.4.6", "Too many Received headers: mail loop detected");
/// `554 5.7.0`: a PROXY header from a client not in `server.proxy_trusted_networks`; the
/// connection closes.
pub const PROXY_NOT_TRUSTED: Reply =
    Reply::fixed(554, "5.7.0", "PROXY header not accepted from this address, closing");
/// `550 5.1.1`: the recipient is not one of its tenant's users.
pub const UNKNOWN_RECIPIENT: Reply =
    Reply::fixed(550, "5.1.1", "Recipient address rejected: user unknown in this domain");
/// `450 4.1.1`: the tenant's next hop could not say whether the recipient exists.
pub const RECIPIENT_UNVERIFIED: Reply =
    Reply::fixed(450, "4.1.1", "Recipient address rejected: cannot verify it now, try again later");

// --- Local trouble.

/// `452 4.3.1`: the spool has no room.
pub const INSUFFICIENT_STORAGE: Reply =
    Reply::fixed(452, "4.3.1", "Insufficient system storage, please try again later");
/// `451 4.3.0`: the message could not be stored.
pub const LOCAL_ERROR: Reply = Reply::fixed(451, "4.3.0", "Temporary local problem, please try again later");
/// `451 4.3.0`: a policy faulted and its tenant's failure mode is `tempfail`.
pub const POLICY_FAILURE: Reply =
    Reply::fixed(451, "4.3.0", "Temporary policy failure, please try again later");

// --- Replies with details.

/// `250 2.0.0 Ok: queued as ID`.
pub fn queued(id: &str) -> Reply {
    Reply::with_text(250, "2.0.0", format!("Ok: queued as {id}"))
}

/// `250 2.0.0 N octets received`: a BDAT chunk that is not the last.
pub fn chunk_received(size: u64) -> Reply {
    Reply::with_text(250, "2.0.0", format!("{size} octets received"))
}

/// `221 2.0.0`: QUIT.
pub fn closing(hostname: &str) -> Reply {
    Reply::with_text(221, "2.0.0", format!("{hostname} closing connection"))
}

/// `501 5.5.4`: a command with bad arguments.
pub fn syntax_error(why: &str) -> Reply {
    Reply::with_text(501, "5.5.4", format!("Syntax error: {why}"))
}

/// `501 5.1.7`: a path that does not parse.
pub fn bad_address_syntax(why: &str) -> Reply {
    Reply::with_text(501, "5.1.7", format!("Bad address syntax: {why}"))
}

/// `553 5.1.7`: MAIL FROM with a bad sender address.
pub fn bad_sender(why: &str) -> Reply {
    Reply::with_text(553, "5.1.7", format!("Bad sender address: {why}"))
}

/// `553 5.1.3`: RCPT TO with a bad recipient address.
pub fn bad_recipient(why: &str) -> Reply {
    Reply::with_text(553, "5.1.3", format!("Bad recipient address: {why}"))
}

/// `554 5.7.1 Relaying denied: why`: an address trick.
pub fn relaying_denied(why: &str) -> Reply {
    Reply::with_text(554, "5.7.1", format!("Relaying denied: {why}"))
}

/// `555 5.5.4`: an ESMTP parameter the relay does not support.
pub fn unsupported_parameter(name: &str) -> Reply {
    Reply::with_text(555, "5.5.4", format!("Unsupported parameter {name}"))
}

/// `550 5.7.1`: the message scored at or above the tenant's reject threshold.
pub fn spam_rejected(score: f64) -> Reply {
    Reply::with_text(550, "5.7.1", format!("Message rejected as spam (score {score:.1})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        assert_eq!(OK.render(), b"250 2.0.0 Ok\r\n");
        assert_eq!(render_lines(250, None, &["a", "b"]), b"250-a\r\n250 b\r\n");
        assert_eq!(START_MAIL_INPUT.render(), b"354 End data with <CR><LF>.<CR><LF>\r\n");
        assert_eq!(queued("X1").to_string(), "250 2.0.0 Ok: queued as X1");
    }
}
