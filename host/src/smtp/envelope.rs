//! The envelope as the client gives it: a path (`MAIL FROM`, `RCPT TO`) and its ESMTP
//! parameters (RFC 5321 §4.1.2, RFC 1869).

/// An ESMTP parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsmtpParam {
    /// Upper-case keyword.
    pub name: String,
    /// Value.
    pub value: Option<String>,
}

/// An envelope address with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeAddress {
    /// Address without brackets (empty for the null sender).
    pub address: String,
    /// ESMTP parameters.
    pub params: Vec<EsmtpParam>,
}

impl EnvelopeAddress {
    /// An address with no parameters.
    pub fn plain(address: impl Into<String>) -> Self {
        Self { address: address.into(), params: Vec::new() }
    }

    /// The `SIZE=` the client declared, if it gave a number.
    pub fn declared_size(&self) -> Option<usize> {
        self.params.iter().find(|p| p.name == "SIZE").and_then(|p| p.value.as_deref()?.parse().ok())
    }
}
