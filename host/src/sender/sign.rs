//! DKIM signing of the mail a tenant sends out (RFC 6376; RSA-SHA256 and Ed25519-SHA256 of
//! RFC 8463), with relaxed/relaxed canonicalisation and From signed twice so that no From can
//! be added after signing; and the keys `sluice dkim keygen` makes.

use std::path::Path;

use base64::Engine as _;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done, NeedDomain};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Header fields signed when the tenant names none: what a recipient shows or threads by.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Sender",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// RSA with SHA-256 (2048-bit keys from keygen).
    Rsa,
    /// Ed25519 with SHA-256 (RFC 8463).
    Ed25519,
}

enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// A tenant's signing key with its domain, selector and header list.
pub struct DkimKey {
    signer: Signer,
    domain: String,
    selector: String,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey").field("domain", &self.domain).field("selector", &self.selector).finish()
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("DKIM key {path}: {message}")]
pub struct KeyError {
    path: String,
    message: String,
}

impl DkimKey {
    /// Load the PEM private key at `path` (PKCS#1 RSA, or PKCS#8 RSA or Ed25519) for signing
    /// as `domain` with `selector`; `headers` empty signs [`DEFAULT_SIGNED_HEADERS`].
    pub fn load(path: &Path, domain: &str, selector: &str, headers: &[String]) -> Result<Self, KeyError> {
        let err = |message: String| KeyError { path: path.display().to_string(), message };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let key = parse_key(&pem).map_err(err)?;
        let mut list: Vec<String> = if headers.is_empty() {
            DEFAULT_SIGNED_HEADERS.iter().map(|h| h.to_string()).collect()
        } else {
            headers.to_vec()
        };
        if !list.iter().any(|h| h.eq_ignore_ascii_case("from")) {
            list.insert(0, "From".into());
        }
        // Over-signing: From named once more than it occurs, so a second From added later
        // breaks the signature.
        list.push("From".into());
        let domain = domain.to_ascii_lowercase();
        let signer = match key {
            Key::Rsa(key) => Signer::Rsa(configure(DkimSigner::from_key(key), &domain, selector, &list)),
            Key::Ed25519(key) => {
                Signer::Ed25519(configure(DkimSigner::from_key(key), &domain, selector, &list))
            }
        };
        Ok(Self { signer, domain, selector: selector.to_string() })
    }

    /// The signing domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The `DKIM-Signature` field (name, value and CRLF) for `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String, String> {
        let signature = match &self.signer {
            Signer::Rsa(signer) => signer.sign(message),
            Signer::Ed25519(signer) => signer.sign(message),
        };
        signature.map(|s| s.to_header()).map_err(|e| e.to_string())
    }
}

fn configure<T: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<T, NeedDomain>,
    domain: &str,
    selector: &str,
    headers: &[String],
) -> DkimSigner<T, Done> {
    signer
        .domain(domain)
        .selector(selector)
        .headers(headers.iter().cloned())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// Smallest RSA key accepted for signing (RFC 8301 §3.2).
const MIN_RSA_BITS: usize = 1024;

fn parse_key(pem: &[u8]) -> Result<Key, String> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("not a PEM private key ({e})"))?;
    let rsa = match &der {
        PrivateKeyDer::Pkcs1(key) => rsa::RsaPrivateKey::from_pkcs1_der(key.secret_pkcs1_der()).ok(),
        PrivateKeyDer::Pkcs8(key) => rsa::RsaPrivateKey::from_pkcs8_der(key.secret_pkcs8_der()).ok(),
        _ => None,
    };
    if let Some(rsa) = rsa {
        let bits = rsa.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(format!("an RSA key of {bits} bits is too weak (at least {MIN_RSA_BITS})"));
        }
        return RsaKey::<Sha256>::from_key_der(der).map(Key::Rsa).map_err(|e| e.to_string());
    }
    match &der {
        PrivateKeyDer::Pkcs8(key) => Ed25519Key::from_pkcs8_der(key.secret_pkcs8_der())
            .map(Key::Ed25519)
            .map_err(|_| "neither an RSA nor an Ed25519 key".to_string()),
        _ => Err("neither an RSA nor an Ed25519 key (SEC1 EC keys are not DKIM keys)".into()),
    }
}

/// A new key: its PEM (PKCS#8) and the DNS TXT record to publish at
/// `SELECTOR._domainkey.DOMAIN`.
pub fn generate_key(algorithm: DkimAlgorithm) -> Result<(String, String), String> {
    match algorithm {
        DkimAlgorithm::Rsa => {
            let pair =
                mail_auth::dkim::generate::DkimKeyPair::generate_rsa(2048).map_err(|e| e.to_string())?;
            let key = rsa::RsaPrivateKey::from_pkcs1_der(pair.private_key()).map_err(|e| e.to_string())?;
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?;
            let public = key.to_public_key().to_public_key_der().map_err(|e| e.to_string())?;
            let p = base64::engine::general_purpose::STANDARD.encode(public.as_bytes());
            Ok((pem.to_string(), format!("v=DKIM1; k=rsa; p={p}")))
        }
        DkimAlgorithm::Ed25519 => {
            let pair =
                mail_auth::dkim::generate::DkimKeyPair::generate_ed25519().map_err(|e| e.to_string())?;
            let der = PrivatePkcs8KeyDer::from(pair.private_key().to_vec());
            let pem = pem_encode("PRIVATE KEY", der.secret_pkcs8_der());
            let p = base64::engine::general_purpose::STANDARD.encode(pair.public_key());
            Ok((pem, format!("v=DKIM1; k=ed25519; p={p}")))
        }
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
