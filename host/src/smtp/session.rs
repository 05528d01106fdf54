//! The protocol core of one SMTP session, without I/O: it takes parsed commands and says what
//! to answer or what the driver must decide (a policy stage, the DATA section). Sequence
//! rules, limits, ESMTP parameters and relay authorization live here, so they are tested
//! without sockets.

use crate::domains::DomainMap;
use crate::policy::context::{EnvelopeAddress, EsmtpParam};
use crate::policy::decision::Reply;

use super::address::{PathError, check_domain, parse_mailbox};
use super::command::{Command, CommandError};
use super::reply::reply;

/// Fixed facts of a session.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Our host name.
    pub hostname: String,
    /// Largest message, bytes.
    pub max_message_bytes: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Errors before hanging up.
    pub max_errors: u32,
}

/// Where a recipient's mail goes, decided before any policy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local domain of this tenant (index into the configured tenants).
    Local(usize),
    /// Another domain: relaying, allowed only to trusted or authenticated clients.
    Relay,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this reply.
    Reply(Reply),
    /// Send this reply and close the connection.
    Close(Reply),
    /// Run the helo stage for this name; on success call [`Session::greeted`] and send
    /// [`Session::greeting_reply`].
    Helo {
        /// Name given.
        name: String,
        /// EHLO (not HELO).
        extended: bool,
    },
    /// Run the mail stage; on success call [`Session::mail_accepted`].
    Mail(EnvelopeAddress),
    /// Run the rcpt stage; on success call [`Session::rcpt_accepted`].
    Rcpt(EnvelopeAddress, Destination),
    /// Answer 354 and read the message.
    Data,
    /// Read a BDAT chunk of `size` bytes into the message (RFC 3030).
    Chunk {
        /// Bytes that follow the command.
        size: u64,
        /// The last chunk: judge and queue the message.
        last: bool,
    },
    /// Read and discard a BDAT chunk of `size` bytes, then send the reply (a refused BDAT
    /// still has its data on the wire).
    SkipChunk {
        /// Bytes that follow the command.
        size: u64,
        /// The refusal.
        reply: Reply,
    },
    /// Answer 220 and start the TLS handshake; on success call [`Session::tls_started`].
    StartTls,
    /// Run the AUTH exchange; on success call [`Session::authenticated`].
    Auth {
        /// `PLAIN` or `LOGIN`.
        mechanism: String,
        /// The initial response, if given.
        initial: Option<String>,
    },
}

/// A recipient accepted in the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedRecipient {
    /// Address and parameters.
    pub address: EnvelopeAddress,
    /// Where it goes.
    pub destination: Destination,
}

/// The protocol state of one session.
#[derive(Debug)]
pub struct Session {
    limits: SessionLimits,
    local_domains: std::sync::Arc<DomainMap>,
    /// May relay to any domain (trusted network or authenticated).
    relay_allowed: bool,
    helo: Option<String>,
    extended: bool,
    mail_from: Option<EnvelopeAddress>,
    recipients: Vec<AcceptedRecipient>,
    errors: u32,
    declared_size: Option<usize>,
    /// STARTTLS can be offered (a certificate is configured and TLS is not on yet).
    tls_offered: bool,
    tls_active: bool,
    /// AUTH can be offered on this connection (users configured, and TLS on or plaintext
    /// allowed here).
    auth_possible: bool,
    auth_needs_tls: bool,
    authenticated: Option<String>,
    /// A BDAT transfer is under way in this transaction.
    chunking: bool,
}

impl Session {
    /// A new session. `local_domains` maps each local domain to its tenant.
    pub fn new(limits: SessionLimits, local_domains: std::sync::Arc<DomainMap>, relay_allowed: bool) -> Self {
        Self {
            limits,
            local_domains,
            relay_allowed,
            helo: None,
            extended: false,
            mail_from: None,
            recipients: Vec::new(),
            errors: 0,
            declared_size: None,
            tls_offered: false,
            tls_active: false,
            auth_possible: false,
            auth_needs_tls: true,
            authenticated: None,
            chunking: false,
        }
    }

    /// Offer STARTTLS (a certificate is configured).
    pub fn offer_tls(&mut self) {
        self.tls_offered = true;
    }

    /// Offer AUTH: always after STARTTLS, and before it too when `plaintext_allowed`.
    pub fn offer_auth(&mut self, plaintext_allowed: bool) {
        self.auth_possible = true;
        self.auth_needs_tls = !plaintext_allowed;
    }

    fn auth_offered(&self) -> bool {
        self.auth_possible && (self.tls_active || !self.auth_needs_tls) && self.authenticated.is_none()
    }

    /// TLS is up: the client starts over with EHLO (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        self.tls_active = true;
        self.tls_offered = false;
        self.helo = None;
        self.extended = false;
        self.reset();
    }

    /// AUTH succeeded: the client may relay.
    pub fn authenticated(&mut self, user: String) {
        self.authenticated = Some(user);
        self.relay_allowed = true;
    }

    /// The greeting banner.
    pub fn banner(&self) -> Reply {
        Reply { code: 220, enhanced: None, text: format!("{} ESMTP Sluice", self.limits.hostname) }
    }

    /// MAIL FROM of the current transaction.
    pub fn mail_from(&self) -> Option<&EnvelopeAddress> {
        self.mail_from.as_ref()
    }

    /// Recipients accepted so far.
    pub fn recipients(&self) -> &[AcceptedRecipient] {
        &self.recipients
    }

    /// The SIZE the client declared, if any.
    pub fn declared_size(&self) -> Option<usize> {
        self.declared_size
    }

    /// Largest message accepted.
    pub fn max_message_bytes(&self) -> usize {
        self.limits.max_message_bytes
    }

    /// Whether the session used EHLO.
    pub fn extended(&self) -> bool {
        self.extended
    }

    /// Count a protocol error; the reply, or a closing 421 when there were too many.
    pub fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors >= self.limits.max_errors {
            Step::Close(self::reply(421, "4.7.0", "Too many errors, closing connection"))
        } else {
            Step::Reply(reply)
        }
    }

    /// A line that was not a command.
    pub fn bad_command(&mut self, error: &CommandError) -> Step {
        let r = match error {
            CommandError::Unknown => reply(500, "5.5.2", "Command not recognized"),
            CommandError::Syntax(why) => reply(501, "5.5.4", &format!("Syntax error: {why}")),
            CommandError::Path(e) => reply(501, "5.1.7", &format!("Bad address syntax: {e}")),
            CommandError::Encoding => reply(500, "5.5.2", "Command is not valid UTF-8"),
        };
        self.error(r)
    }

    /// Handle one command.
    pub fn command(&mut self, command: Command) -> Step {
        match command {
            Command::Ehlo(name) | Command::Helo(name) if check_helo(&name).is_err() => {
                self.error(reply(501, "5.5.4", "Syntax error: invalid host name"))
            }
            Command::Ehlo(name) => {
                self.reset();
                Step::Helo { name, extended: true }
            }
            Command::Helo(name) => {
                self.reset();
                Step::Helo { name, extended: false }
            }
            Command::Mail { path, params } => self.mail(path, params),
            Command::Rcpt { path, params } => self.rcpt(path, params),
            Command::Data if self.chunking => {
                self.error(reply(503, "5.5.1", "Bad sequence of commands: DATA after BDAT"))
            }
            Command::Data => {
                if self.mail_from.is_none() {
                    self.error(reply(503, "5.5.1", "Bad sequence of commands: MAIL first"))
                } else if self.recipients.is_empty() {
                    self.error(reply(554, "5.5.1", "No valid recipients"))
                } else {
                    Step::Data
                }
            }
            Command::Rset => {
                self.reset();
                Step::Reply(reply(250, "2.0.0", "Ok"))
            }
            Command::Noop => Step::Reply(reply(250, "2.0.0", "Ok")),
            Command::Quit => {
                Step::Close(reply(221, "2.0.0", &format!("{} closing connection", self.limits.hostname)))
            }
            Command::Vrfy => Step::Reply(reply(
                252,
                "2.1.5",
                "Cannot verify the user, but will accept the message and attempt delivery",
            )),
            Command::Expn => self.error(reply(502, "5.5.1", "EXPN is not supported")),
            Command::Help => Step::Reply(reply(
                214,
                "2.0.0",
                "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
            )),
            Command::StartTls if !self.tls_offered => {
                if self.tls_active {
                    self.error(reply(503, "5.5.1", "TLS is already active"))
                } else {
                    self.error(reply(502, "5.5.1", "STARTTLS is not available"))
                }
            }
            Command::StartTls if self.mail_from.is_some() => {
                self.error(reply(503, "5.5.1", "Bad sequence of commands: not during a transaction"))
            }
            Command::StartTls => Step::StartTls,
            Command::Auth { .. } if self.authenticated.is_some() => {
                self.error(reply(503, "5.5.1", "Already authenticated"))
            }
            Command::Auth { .. } if self.auth_possible && !self.tls_active && self.auth_needs_tls => {
                self.error(reply(530, "5.7.0", "Must issue a STARTTLS command first"))
            }
            Command::Auth { .. } if !self.auth_offered() => {
                self.error(reply(502, "5.5.1", "AUTH is not available"))
            }
            Command::Auth { .. } if self.helo.is_none() || !self.extended => {
                self.error(reply(503, "5.5.1", "Bad sequence of commands: EHLO first"))
            }
            Command::Auth { .. } if self.mail_from.is_some() => {
                self.error(reply(503, "5.5.1", "Bad sequence of commands: not during a transaction"))
            }
            Command::Auth { mechanism, initial } => {
                if mechanism == "PLAIN" || mechanism == "LOGIN" {
                    Step::Auth { mechanism, initial }
                } else {
                    self.error(reply(504, "5.5.4", "Unrecognized authentication mechanism"))
                }
            }
            Command::Bdat { size, last } => {
                let refusal = if self.mail_from.is_none() {
                    Some(reply(503, "5.5.1", "Bad sequence of commands: MAIL first"))
                } else if self.recipients.is_empty() {
                    Some(reply(554, "5.5.1", "No valid recipients"))
                } else {
                    None
                };
                match refusal {
                    Some(r) => match self.error(r) {
                        Step::Reply(reply) => Step::SkipChunk { size, reply },
                        close => close,
                    },
                    None => {
                        self.chunking = true;
                        Step::Chunk { size, last }
                    }
                }
            }
        }
    }

    /// The helo stage passed.
    pub fn greeted(&mut self, name: String, extended: bool) {
        self.helo = Some(name);
        self.extended = extended;
    }

    /// The reply to a successful EHLO/HELO.
    pub fn greeting_reply(&self, client: &str) -> Vec<u8> {
        if !self.extended {
            return super::reply::render(&Reply {
                code: 250,
                enhanced: None,
                text: format!("{} Hello {client}", self.limits.hostname),
            });
        }
        let first = format!("{} Hello {client}", self.limits.hostname);
        let size = format!("SIZE {}", self.limits.max_message_bytes);
        let mut lines = vec![
            first.as_str(),
            "PIPELINING",
            size.as_str(),
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ];
        if self.tls_offered {
            lines.push("STARTTLS");
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN");
        }
        super::reply::render_lines(250, None, &lines)
    }

    fn mail(&mut self, path: String, params: Vec<EsmtpParam>) -> Step {
        if self.helo.is_none() {
            return self.error(reply(503, "5.5.1", "Bad sequence of commands: EHLO first"));
        }
        if self.mail_from.is_some() {
            return self.error(reply(503, "5.5.1", "Bad sequence of commands: MAIL already given"));
        }
        let mut declared = None;
        for p in &params {
            match (p.name.as_str(), p.value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<usize>() {
                    Ok(size) if size > self.limits.max_message_bytes => {
                        return Step::Reply(reply(552, "5.3.4", "Message size exceeds the fixed maximum"));
                    }
                    Ok(size) => declared = Some(size),
                    Err(_) => return self.error(reply(501, "5.5.4", "Syntax error: SIZE needs a number")),
                },
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {
                }
                ("SMTPUTF8", None) if self.extended => {}
                _ if !self.extended => {
                    return self.error(reply(555, "5.5.4", "Parameters need EHLO"));
                }
                _ => return self.error(reply(555, "5.5.4", &format!("Unsupported parameter {}", p.name))),
            }
        }
        if !path.is_empty() {
            // The sender is not a relay target; only its syntax is checked.
            if let Err(e) = parse_mailbox(&path)
                && e != PathError::Routing
            {
                return self.error(reply(553, "5.1.7", &format!("Bad sender address: {e}")));
            }
        }
        self.declared_size = declared;
        Step::Mail(EnvelopeAddress { address: path, params })
    }

    /// The mail stage passed.
    pub fn mail_accepted(&mut self, from: EnvelopeAddress) {
        // Taken again from the command: the caller may have reset the session in between.
        self.declared_size =
            from.params.iter().find(|p| p.name == "SIZE").and_then(|p| p.value.as_deref()?.parse().ok());
        self.mail_from = Some(from);
    }

    fn rcpt(&mut self, path: String, params: Vec<EsmtpParam>) -> Step {
        if self.mail_from.is_none() {
            return self.error(reply(503, "5.5.1", "Bad sequence of commands: MAIL first"));
        }
        if self.recipients.len() >= self.limits.max_recipients {
            return Step::Reply(reply(452, "4.5.3", "Too many recipients"));
        }
        if let Some(p) = params.first() {
            return self.error(reply(555, "5.5.4", &format!("Unsupported parameter {}", p.name)));
        }
        // Postmaster without a domain (RFC 5321 §4.5.1) goes to the first tenant.
        let mailbox = if path.eq_ignore_ascii_case("postmaster") {
            let domain = self.local_domains.first_domain_of(0).map(str::to_string);
            match domain {
                Some(d) => super::address::Mailbox { local: "postmaster".into(), domain: d },
                None => return Step::Reply(reply(550, "5.1.1", "No postmaster here")),
            }
        } else {
            match parse_mailbox(&path) {
                Ok(m) => m,
                Err(PathError::IpLiteral) if self.relay_allowed => {
                    return Step::Rcpt(EnvelopeAddress { address: path, params }, Destination::Relay);
                }
                Err(e @ (PathError::Routing | PathError::SourceRoute | PathError::IpLiteral)) => {
                    return self.error(reply(554, "5.7.1", &format!("Relaying denied: {e}")));
                }
                Err(e) => return self.error(reply(553, "5.1.3", &format!("Bad recipient address: {e}"))),
            }
        };
        let destination = match self.local_domains.tenant_of(&mailbox.domain) {
            Some(tenant) => Destination::Local(tenant),
            None if self.relay_allowed => Destination::Relay,
            None => return self.error(reply(554, "5.7.1", "Relaying denied")),
        };
        Step::Rcpt(EnvelopeAddress { address: mailbox.address(), params }, destination)
    }

    /// The rcpt stage passed.
    pub fn rcpt_accepted(&mut self, address: EnvelopeAddress, destination: Destination) {
        self.recipients.push(AcceptedRecipient { address, destination });
    }

    /// End the transaction (after DATA or RSET).
    pub fn reset(&mut self) {
        self.chunking = false;
        self.mail_from = None;
        self.recipients.clear();
        self.declared_size = None;
    }
}

fn check_helo(name: &str) -> Result<(), ()> {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return ip.parse::<std::net::IpAddr>().map(|_| ()).map_err(|_| ());
    }
    match check_domain(name) {
        Ok(_) | Err(PathError::IpLiteral) => Ok(()),
        // Single-label and underscore names are common from misconfigured but legitimate
        // clients; policies judge them.
        Err(_) if name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.')) => Ok(()),
        Err(_) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::smtp::command::parse;

    fn session(relay: bool) -> Session {
        session_with(relay, 10)
    }

    fn session_with(relay: bool, max_errors: u32) -> Session {
        let mut domains = DomainMap::default();
        domains.insert("local.example", 0);
        domains.insert("other-tenant.example", 1);
        Session::new(
            SessionLimits {
                hostname: "mx.test".into(),
                max_message_bytes: 1000,
                max_recipients: 2,
                max_errors,
            },
            Arc::new(domains),
            relay,
        )
    }

    fn run(s: &mut Session, line: &str) -> Step {
        match parse(line.as_bytes()) {
            Ok(cmd) => {
                let step = s.command(cmd);
                match &step {
                    Step::Helo { name, extended } => s.greeted(name.clone(), *extended),
                    Step::Mail(from) => s.mail_accepted(from.clone()),
                    Step::Rcpt(to, dest) => s.rcpt_accepted(to.clone(), dest.clone()),
                    _ => {}
                }
                step
            }
            Err(e) => s.bad_command(&e),
        }
    }

    fn code(step: &Step) -> u16 {
        match step {
            Step::Reply(r) | Step::Close(r) => r.code,
            Step::Helo { .. } | Step::Mail(_) | Step::Rcpt(..) => 250,
            Step::Data => 354,
            Step::StartTls => 220,
            Step::Chunk { .. } => 250,
            Step::SkipChunk { reply, .. } => reply.code,
            Step::Auth { .. } => 334,
        }
    }

    #[test]
    fn a_transaction() {
        let mut s = session(false);
        assert_eq!(code(&run(&mut s, "EHLO client.example")), 250);
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@remote.example> SIZE=100")), 250);
        assert_eq!(s.declared_size(), Some(100));
        // The relay resets the session before it accepts a new MAIL: the size is kept.
        s.reset();
        s.mail_accepted(EnvelopeAddress {
            address: "a@remote.example".into(),
            params: vec![crate::policy::EsmtpParam { name: "SIZE".into(), value: Some("100".into()) }],
        });
        assert_eq!(s.declared_size(), Some(100));
        assert_eq!(
            run(&mut s, "RCPT TO:<b@Local.Example>"),
            Step::Rcpt(EnvelopeAddress::plain("b@local.example"), Destination::Local(0))
        );
        assert_eq!(code(&run(&mut s, "DATA")), 354);
    }

    #[test]
    fn sequence_and_limits() {
        let mut s = session(false);
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@remote.example>")), 503);
        run(&mut s, "EHLO c.example");
        assert_eq!(code(&run(&mut s, "RCPT TO:<b@local.example>")), 503);
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@remote.example> SIZE=5000")), 552);
        run(&mut s, "MAIL FROM:<a@remote.example>");
        assert_eq!(code(&run(&mut s, "DATA")), 554);
        run(&mut s, "RCPT TO:<b@local.example>");
        run(&mut s, "RCPT TO:<c@local.example>");
        assert_eq!(code(&run(&mut s, "RCPT TO:<d@local.example>")), 452);
        assert_eq!(code(&run(&mut s, "VRFY b")), 252);
    }

    #[test]
    fn never_an_open_relay() {
        let mut s = session_with(false, 6);
        run(&mut s, "HELO c.example");
        run(&mut s, "MAIL FROM:<a@remote.example>");
        for (rcpt, expected) in [
            ("<victim@elsewhere.example>", 554),
            ("<victim%elsewhere.example@local.example>", 554),
            ("<elsewhere.example!victim@local.example>", 554),
            ("<@local.example:victim@elsewhere.example>", 554),
            ("<\"victim@elsewhere.example\"@local.example>", 554),
        ] {
            assert_eq!(code(&run(&mut s, &format!("RCPT TO:{rcpt}"))), expected, "{rcpt}");
        }
        // The sixth error of the session hangs up.
        assert!(matches!(run(&mut s, "RCPT TO:<victim@[192.0.2.1]>"), Step::Close(r) if r.code == 421));
    }

    #[test]
    fn trusted_clients_relay() {
        let mut s = session(true);
        run(&mut s, "EHLO c.example");
        run(&mut s, "MAIL FROM:<a@local.example>");
        assert_eq!(
            run(&mut s, "RCPT TO:<x@elsewhere.example>"),
            Step::Rcpt(EnvelopeAddress::plain("x@elsewhere.example"), Destination::Relay)
        );
        // Routing tricks stay refused even for them.
        assert_eq!(code(&run(&mut s, "RCPT TO:<x%y@local.example>")), 554);
    }

    #[test]
    fn starttls_and_auth_rules() {
        let mut s = session(false);
        s.offer_tls();
        s.offer_auth(false);
        run(&mut s, "EHLO c.example");
        let text = String::from_utf8(s.greeting_reply("c.example")).unwrap();
        assert!(text.contains("STARTTLS") && !text.contains("AUTH"), "{text}");
        // AUTH before TLS: refused with the reason.
        assert_eq!(code(&run(&mut s, "AUTH PLAIN AGEAYg==")), 530);
        assert_eq!(run(&mut s, "STARTTLS"), Step::StartTls);
        s.tls_started();
        // The session starts over: EHLO again, and now AUTH is offered.
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@b.example>")), 503);
        run(&mut s, "EHLO c.example");
        let text = String::from_utf8(s.greeting_reply("c.example")).unwrap();
        assert!(!text.contains("STARTTLS") && text.contains("AUTH PLAIN LOGIN"), "{text}");
        assert_eq!(code(&run(&mut s, "STARTTLS")), 503);
        assert_eq!(code(&run(&mut s, "AUTH CRAM-MD5")), 504);
        assert!(matches!(run(&mut s, "AUTH LOGIN"), Step::Auth { .. }));
        s.authenticated("alice".into());
        // Authenticated clients relay.
        run(&mut s, "MAIL FROM:<a@local.example>");
        assert!(matches!(run(&mut s, "RCPT TO:<x@elsewhere.example>"), Step::Rcpt(_, Destination::Relay)));
    }

    #[test]
    fn chunking() {
        let mut s = session(false);
        run(&mut s, "EHLO c.example");
        assert!(matches!(run(&mut s, "BDAT 10"), Step::SkipChunk { size: 10, reply } if reply.code == 503));
        run(&mut s, "MAIL FROM:<a@remote.example>");
        assert!(matches!(run(&mut s, "BDAT 10"), Step::SkipChunk { reply, .. } if reply.code == 554));
        run(&mut s, "RCPT TO:<b@local.example>");
        assert_eq!(run(&mut s, "BDAT 10"), Step::Chunk { size: 10, last: false });
        assert_eq!(code(&run(&mut s, "DATA")), 503);
        assert_eq!(run(&mut s, "BDAT 0 LAST"), Step::Chunk { size: 0, last: true });
    }

    #[test]
    fn ehlo_advertises() {
        let mut s = session(false);
        run(&mut s, "EHLO c.example");
        let text = String::from_utf8(s.greeting_reply("c.example")).unwrap();
        for ext in ["PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"] {
            assert!(text.contains(ext), "{text}");
        }
        assert!(text.ends_with("250 CHUNKING\r\n"));
    }
}
