//! The protocol state of one SMTP session, without I/O: it takes parsed commands and says what
//! to answer or what the conversation must decide (a policy stage, the DATA section). Sequence
//! rules, limits, ESMTP parameters and relay authorization live here, so they are tested
//! without sockets. It knows nothing of policies: the conversation
//! ([`crate::conversation`]) runs them.

use super::address::{PathError, check_domain, parse_mailbox};
use super::command::{Command, CommandError};
use super::envelope::{EnvelopeAddress, EsmtpParam};
use super::reply::{self, Reply};

/// Which tenant (by index) a local domain belongs to: what relay authorization needs to know
/// about the tenants.
pub trait LocalDomains {
    /// The tenant `domain` belongs to, if it is local.
    fn tenant_of(&self, domain: &str) -> Option<usize>;
    /// The domain a bare `postmaster` (RFC 5321 §4.5.1) is for, if any.
    fn postmaster_domain(&self) -> Option<&str>;
}

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
    /// End the transaction ([`Session::reset`]) and answer `250` (RSET).
    Reset,
    /// End the transaction, then run the helo stage for this name; on success call
    /// [`Session::greeted`] and send [`Session::greeting_reply`].
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
    /// May relay to any domain (trusted network or authenticated).
    relay_allowed: bool,
    /// An MTA in front decided where mail may go (a milter or policy-delegation session):
    /// recipients of no tenant are the edge's, never refused as relaying.
    mta_relays: bool,
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
    /// A new session; `relay_allowed`: the client may send to any domain (a trusted network).
    pub fn new(limits: SessionLimits, relay_allowed: bool) -> Self {
        Self {
            limits,
            relay_allowed,
            mta_relays: false,
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

    /// An MTA in front decides where mail may go (see `mta_relays`).
    pub fn mta_decides_relaying(&mut self) {
        self.mta_relays = true;
    }

    /// TLS is on between the client and an MTA in front.
    pub fn tls_in_front(&mut self) {
        self.tls_active = true;
        self.tls_offered = false;
    }

    /// AUTH succeeded: the client may relay.
    pub fn authenticated(&mut self, user: String) {
        self.authenticated = Some(user);
        self.relay_allowed = true;
    }

    /// The greeting banner.
    pub fn banner(&self) -> Reply {
        Reply::plain(220, format!("{} ESMTP Sluice", self.limits.hostname))
    }

    /// The name the client gave in its last successful EHLO or HELO.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// Whether the client may relay to any domain (trusted network or authenticated).
    pub fn relay_allowed(&self) -> bool {
        self.relay_allowed
    }

    /// The user the client authenticated as, if it did.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// TLS is on.
    pub fn tls_active(&self) -> bool {
        self.tls_active
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
            Step::Close(reply::TOO_MANY_ERRORS)
        } else {
            Step::Reply(reply)
        }
    }

    /// A line that was not a command.
    pub fn bad_command(&mut self, error: &CommandError) -> Step {
        let r = match error {
            CommandError::Unknown => reply::UNKNOWN_COMMAND,
            CommandError::Syntax(why) => reply::syntax_error(why),
            CommandError::Path(e) => reply::bad_address_syntax(&e.to_string()),
            CommandError::Encoding => reply::NOT_UTF8,
        };
        self.error(r)
    }

    /// Handle one command; `domains` tells which recipients are local, and whose.
    pub fn command(&mut self, command: Command, domains: &dyn LocalDomains) -> Step {
        match command {
            Command::Ehlo(name) | Command::Helo(name) if check_helo(&name).is_err() => {
                self.error(reply::INVALID_HOST_NAME)
            }
            Command::Ehlo(name) => Step::Helo { name, extended: true },
            Command::Helo(name) => Step::Helo { name, extended: false },
            Command::Mail { path, params } => self.mail(path, params),
            Command::Rcpt { path, params } => self.rcpt(path, params, domains),
            Command::Data if self.chunking => self.error(reply::DATA_AFTER_BDAT),
            Command::Data => {
                if self.mail_from.is_none() {
                    self.error(reply::MAIL_FIRST)
                } else if self.recipients.is_empty() {
                    self.error(reply::NO_VALID_RECIPIENTS)
                } else {
                    Step::Data
                }
            }
            Command::Rset => Step::Reset,
            Command::Noop => Step::Reply(reply::OK),
            Command::Quit => Step::Close(reply::closing(&self.limits.hostname)),
            Command::Vrfy => Step::Reply(reply::CANNOT_VERIFY),
            Command::Expn => self.error(reply::EXPN_REFUSED),
            Command::Help => Step::Reply(reply::HELP),
            Command::StartTls if !self.tls_offered => {
                if self.tls_active {
                    self.error(reply::TLS_ALREADY_ACTIVE)
                } else {
                    self.error(reply::TLS_NOT_AVAILABLE)
                }
            }
            Command::StartTls if self.mail_from.is_some() => self.error(reply::NOT_DURING_A_TRANSACTION),
            Command::StartTls => Step::StartTls,
            Command::Auth { .. } if self.authenticated.is_some() => self.error(reply::ALREADY_AUTHENTICATED),
            Command::Auth { .. } if self.auth_possible && !self.tls_active && self.auth_needs_tls => {
                self.error(reply::STARTTLS_FIRST)
            }
            Command::Auth { .. } if !self.auth_offered() => self.error(reply::AUTH_NOT_AVAILABLE),
            Command::Auth { .. } if self.helo.is_none() || !self.extended => self.error(reply::EHLO_FIRST),
            Command::Auth { .. } if self.mail_from.is_some() => self.error(reply::NOT_DURING_A_TRANSACTION),
            Command::Auth { mechanism, initial } => {
                if mechanism == "PLAIN" || mechanism == "LOGIN" {
                    Step::Auth { mechanism, initial }
                } else {
                    self.error(reply::UNKNOWN_MECHANISM)
                }
            }
            Command::Bdat { size, last } => {
                let refusal = if self.mail_from.is_none() {
                    Some(reply::MAIL_FIRST)
                } else if self.recipients.is_empty() {
                    Some(reply::NO_VALID_RECIPIENTS)
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
            return Reply::plain(250, format!("{} Hello {client}", self.limits.hostname)).render();
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
        reply::render_lines(250, None, &lines)
    }

    fn mail(&mut self, path: String, params: Vec<EsmtpParam>) -> Step {
        if self.helo.is_none() {
            return self.error(reply::EHLO_FIRST);
        }
        if self.mail_from.is_some() {
            return self.error(reply::MAIL_ALREADY_GIVEN);
        }
        let mut declared = None;
        for p in &params {
            match (p.name.as_str(), p.value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<usize>() {
                    Ok(size) if size > self.limits.max_message_bytes => {
                        return Step::Reply(reply::MESSAGE_TOO_BIG);
                    }
                    Ok(size) => declared = Some(size),
                    Err(_) => return self.error(reply::SIZE_NOT_A_NUMBER),
                },
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {
                }
                ("SMTPUTF8", None) if self.extended => {}
                _ if !self.extended => return self.error(reply::PARAMETERS_NEED_EHLO),
                _ => return self.error(reply::unsupported_parameter(&p.name)),
            }
        }
        if !path.is_empty() {
            // The sender is not a relay target; only its syntax is checked.
            if let Err(e) = parse_mailbox(&path)
                && e != PathError::Routing
            {
                return self.error(reply::bad_sender(&e.to_string()));
            }
        }
        self.declared_size = declared;
        Step::Mail(EnvelopeAddress { address: path, params })
    }

    /// The mail stage passed.
    pub fn mail_accepted(&mut self, from: EnvelopeAddress) {
        // Taken again from the command: the caller may have reset the session in between.
        self.declared_size = from.declared_size();
        self.mail_from = Some(from);
    }

    fn rcpt(&mut self, path: String, params: Vec<EsmtpParam>, domains: &dyn LocalDomains) -> Step {
        if self.mail_from.is_none() {
            return self.error(reply::MAIL_FIRST);
        }
        if self.recipients.len() >= self.limits.max_recipients {
            return Step::Reply(reply::TOO_MANY_RECIPIENTS);
        }
        if let Some(p) = params.first() {
            return self.error(reply::unsupported_parameter(&p.name));
        }
        // Postmaster without a domain (RFC 5321 §4.5.1) goes to the first tenant's domain.
        let mailbox = if path.eq_ignore_ascii_case("postmaster") {
            match domains.postmaster_domain() {
                Some(d) => super::address::Mailbox { local: "postmaster".into(), domain: d.to_string() },
                None => return Step::Reply(reply::NO_POSTMASTER),
            }
        } else {
            match parse_mailbox(&path) {
                Ok(m) => m,
                Err(PathError::IpLiteral) if self.relay_allowed || self.mta_relays => {
                    return Step::Rcpt(EnvelopeAddress { address: path, params }, Destination::Relay);
                }
                Err(e @ (PathError::Routing | PathError::SourceRoute | PathError::IpLiteral)) => {
                    return self.error(reply::relaying_denied(&e.to_string()));
                }
                Err(e) => return self.error(reply::bad_recipient(&e.to_string())),
            }
        };
        let destination = match domains.tenant_of(&mailbox.domain) {
            Some(tenant) => Destination::Local(tenant),
            None if self.relay_allowed || self.mta_relays => Destination::Relay,
            None => return self.error(reply::RELAYING_DENIED),
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
mod tests;
