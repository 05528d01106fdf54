//! What the relay tells a chain about a session when it asks for a stage: client, server and
//! envelope. The conversation ([`crate::conversation`]) makes a [`SessionInfo`] from its state
//! for each stage it asks for; the policy module turns it into the WIT `context` record.

use super::bindings::types as wit;
pub use crate::smtp::{EnvelopeAddress, EsmtpParam};

/// A policy stage, in conversation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Connection opened.
    Connect,
    /// HELO/EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// End of data.
    Data,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 5] = [Stage::Connect, Stage::Helo, Stage::Mail, Stage::Rcpt, Stage::Data];

    /// Lower-case name, as in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
        }
    }

    pub(crate) fn from_wit(stage: wit::Stage) -> Self {
        match stage {
            wit::Stage::Connect => Stage::Connect,
            wit::Stage::Helo => Stage::Helo,
            wit::Stage::Mail => Stage::Mail,
            wit::Stage::Rcpt => Stage::Rcpt,
            wit::Stage::Data => Stage::Data,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of stages, as a policy declares in `describe`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageSet(u8);

impl StageSet {
    /// Add a stage.
    pub fn insert(&mut self, stage: Stage) {
        self.0 |= stage.bit();
    }

    /// Whether the set holds `stage`.
    pub fn contains(self, stage: Stage) -> bool {
        self.0 & stage.bit() != 0
    }

    /// The stages in order.
    pub fn iter(self) -> impl Iterator<Item = Stage> {
        Stage::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

/// TLS details of the client connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version.
    pub version: String,
    /// Cipher suite.
    pub cipher: String,
    /// SNI.
    pub sni: Option<String>,
}

/// Everything the chain is told about a session and its current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Tenant name.
    pub tenant: String,
    /// Session/transaction id, as in the logs.
    pub transaction_id: String,
    /// Client IP.
    pub client_ip: std::net::IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Verified reverse DNS.
    pub reverse_dns: Option<String>,
    /// HELO name.
    pub helo: Option<String>,
    /// TLS state.
    pub tls: Option<TlsInfo>,
    /// AUTH identity.
    pub authenticated_user: Option<String>,
    /// Listener address.
    pub listener: String,
    /// Announced host name.
    pub hostname: String,
    /// MAIL FROM.
    pub mail_from: Option<EnvelopeAddress>,
    /// Accepted recipients.
    pub recipients: Vec<EnvelopeAddress>,
}

fn params_to_wit(params: &[EsmtpParam]) -> Vec<wit::EsmtpParam> {
    params.iter().map(|p| wit::EsmtpParam { name: p.name.clone(), value: p.value.clone() }).collect()
}

impl EnvelopeAddress {
    pub(crate) fn to_wit_recipient(&self) -> wit::Recipient {
        wit::Recipient { address: self.address.clone(), params: params_to_wit(&self.params) }
    }
}

impl SessionInfo {
    pub(crate) fn to_wit(&self) -> wit::Context {
        wit::Context {
            tenant: self.tenant.clone(),
            transaction_id: self.transaction_id.clone(),
            client: wit::ClientInfo {
                ip: self.client_ip.to_string(),
                port: self.client_port,
                reverse_dns: self.reverse_dns.clone(),
                helo: self.helo.clone(),
                tls: self.tls.as_ref().map(|t| wit::TlsInfo {
                    version: t.version.clone(),
                    cipher: t.cipher.clone(),
                    sni: t.sni.clone(),
                }),
                authenticated_user: self.authenticated_user.clone(),
            },
            server: wit::ServerInfo { listener: self.listener.clone(), hostname: self.hostname.clone() },
            envelope: wit::Envelope {
                mail_from: self
                    .mail_from
                    .as_ref()
                    .map(|m| wit::MailFrom { address: m.address.clone(), params: params_to_wit(&m.params) }),
                recipients: self.recipients.iter().map(EnvelopeAddress::to_wit_recipient).collect(),
            },
        }
    }
}
