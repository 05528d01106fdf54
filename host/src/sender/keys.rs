//! The sizes of the RSA keys DKIM signatures are checked with: RFC 8301 §3.2 forbids taking a
//! signature made with a key under 1024 bits as valid, and a key past 8192 bits is refused
//! too (it costs the relay's CPU for nothing a real signer needs).

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;

use crate::dns::{RecordType, Resolver};

/// Smallest RSA key whose signatures count (RFC 8301 §3.2).
pub const MIN_RSA_BITS: usize = 1024;
/// Largest RSA key the relay checks signatures with.
pub const MAX_RSA_BITS: usize = 8192;

/// The size in bits of the RSA key published at `selector._domainkey.domain` (`p=`, a
/// SubjectPublicKeyInfo or a bare RSAPublicKey), if one is there.
pub(super) async fn rsa_bits(dns: &dyn Resolver, domain: &str, selector: &str) -> Option<usize> {
    use base64::Engine as _;
    let records = dns.lookup(&format!("{selector}._domainkey.{domain}"), RecordType::Txt).await.ok()?;
    records.iter().find_map(|record| {
        let p: String = super::tag(record, "p")?.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(p).ok()?;
        let key = rsa::RsaPublicKey::from_public_key_der(&der)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(&der))
            .ok()?;
        Some(key.size() * 8)
    })
}

/// Why a key of `bits` bits does not count, if it does not.
pub(super) fn refused(bits: usize) -> Option<String> {
    if bits < MIN_RSA_BITS {
        Some(format!("an RSA key of {bits} bits is too short (RFC 8301: at least {MIN_RSA_BITS})"))
    } else if bits > MAX_RSA_BITS {
        Some(format!("an RSA key of {bits} bits is longer than the {MAX_RSA_BITS} checked"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::refused;

    #[test]
    fn key_sizes() {
        assert!(refused(512).is_some() && refused(16384).is_some());
        assert!(refused(1024).is_none() && refused(2048).is_none() && refused(8192).is_none());
    }
}
