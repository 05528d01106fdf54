//! What every hook is told: the stage, the client, the server and the envelope so far.

use crate::__bindings::sluice::policy::types as raw;

/// The SMTP stages, in the order a conversation reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A client connected.
    Connect,
    /// HELO/EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO, once per recipient.
    Rcpt,
    /// End of message data.
    Data,
}

impl Stage {
    pub(crate) fn to_raw(self) -> raw::Stage {
        match self {
            Stage::Connect => raw::Stage::Connect,
            Stage::Helo => raw::Stage::Helo,
            Stage::Mail => raw::Stage::Mail,
            Stage::Rcpt => raw::Stage::Rcpt,
            Stage::Data => raw::Stage::Data,
        }
    }
}

/// TLS state of the client connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite.
    pub cipher: String,
    /// Server name asked for, if any.
    pub sni: Option<String>,
}

/// The SMTP client.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// IP address in text form.
    pub ip: String,
    /// TCP port.
    pub port: u16,
    /// Verified reverse DNS name, if known.
    pub reverse_dns: Option<String>,
    /// HELO/EHLO name, once given.
    pub helo: Option<String>,
    /// TLS details, when encrypted.
    pub tls: Option<Tls>,
    /// SMTP AUTH identity, when authenticated.
    pub authenticated_user: Option<String>,
}

impl Client {
    /// The client address parsed, or `None` if the host passed something unparseable.
    pub fn ip_addr(&self) -> Option<std::net::IpAddr> {
        self.ip.parse().ok()
    }
}

/// The relay side of the connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Listener address.
    pub listener: String,
    /// Host name in the greeting.
    pub hostname: String,
}

/// An ESMTP parameter (`SIZE=1024`, `SMTPUTF8`).
#[derive(Debug, Clone, PartialEq)]
pub struct EsmtpParam {
    /// Upper-cased keyword.
    pub name: String,
    /// Value, if any.
    pub value: Option<String>,
}

/// MAIL FROM.
#[derive(Debug, Clone, PartialEq)]
pub struct MailFrom {
    /// Sender address; empty for the null sender `<>` (bounces).
    pub address: String,
    /// ESMTP parameters.
    pub params: Vec<EsmtpParam>,
}

impl MailFrom {
    /// True for the null reverse path `<>`, used by bounces and auto-replies.
    pub fn is_null(&self) -> bool {
        self.address.is_empty()
    }

    /// The domain part of the address, lower-cased, if there is one.
    pub fn domain(&self) -> Option<String> {
        domain_of(&self.address)
    }

    /// The value of an ESMTP parameter, by case-insensitive keyword.
    pub fn param(&self, name: &str) -> Option<&EsmtpParam> {
        self.params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }
}

/// RCPT TO.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    /// Recipient address.
    pub address: String,
    /// ESMTP parameters.
    pub params: Vec<EsmtpParam>,
}

impl Recipient {
    /// The domain part of the address, lower-cased, if there is one.
    pub fn domain(&self) -> Option<String> {
        domain_of(&self.address)
    }

    pub(crate) fn from_raw(r: raw::Recipient) -> Self {
        Self { address: r.address, params: r.params.into_iter().map(param).collect() }
    }
}

/// The domain after the last `@`, lower-cased.
pub(crate) fn domain_of(address: &str) -> Option<String> {
    address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).filter(|d| !d.is_empty())
}

fn param(p: raw::EsmtpParam) -> EsmtpParam {
    EsmtpParam { name: p.name, value: p.value }
}

/// What every hook is told about its session.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// Tenant whose chain is running.
    pub tenant: String,
    /// Session/transaction identifier, as in the relay's logs.
    pub transaction_id: String,
    /// The client.
    pub client: Client,
    /// The relay.
    pub server: Server,
    /// MAIL FROM, once given.
    pub mail_from: Option<MailFrom>,
    /// Recipients accepted so far.
    pub recipients: Vec<Recipient>,
}

impl Context {
    pub(crate) fn from_raw(c: raw::Context) -> Self {
        Self {
            tenant: c.tenant,
            transaction_id: c.transaction_id,
            client: Client {
                ip: c.client.ip,
                port: c.client.port,
                reverse_dns: c.client.reverse_dns,
                helo: c.client.helo,
                tls: c.client.tls.map(|t| Tls { version: t.version, cipher: t.cipher, sni: t.sni }),
                authenticated_user: c.client.authenticated_user,
            },
            server: Server { listener: c.server.listener, hostname: c.server.hostname },
            mail_from: c
                .envelope
                .mail_from
                .map(|m| MailFrom { address: m.address, params: m.params.into_iter().map(param).collect() }),
            recipients: c.envelope.recipients.into_iter().map(Recipient::from_raw).collect(),
        }
    }
}
