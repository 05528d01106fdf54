//! Who may authenticate and what the relay presents for STARTTLS: the AUTH users file and
//! the TLS certificate. The exchanges themselves are in [`crate::smtp::sasl`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Users who may authenticate: name → SHA-512 crypt hash.
#[derive(Debug, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    /// Read `user:hash` lines (`#` comments and blank lines ignored); every hash must be
    /// SHA-512 crypt (`$6$…`).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse the file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut hashes = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) =
                line.split_once(':').ok_or_else(|| format!("line {}: expected user:hash", i + 1))?;
            // Extra colon-separated fields (passwd-style files) are ignored.
            let hash = hash.split(':').next().unwrap_or("");
            if user.is_empty() || !hash.starts_with("$6$") {
                return Err(format!("line {}: the hash must be SHA-512 crypt ($6$…)", i + 1));
            }
            hashes.insert(user.to_string(), hash.to_string());
        }
        Ok(Self { hashes })
    }

    /// Whether `password` is `user`'s. Unknown users cost a hash computation too, so timing
    /// does not tell which users exist.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        const DECOY: &str = "$6$decoydecoydecoy$\
            bJW6Ly5cQrVBJABqx1HP2mFg1GveKJI5txGvgSEpwr2psPiwt8dr3xBLBmAlI/KMdqLetjDYfItBJax7PFYVG1";
        match self.hashes.get(user) {
            Some(hash) => sha_crypt::sha512_check(password, hash).is_ok(),
            None => {
                let _ = sha_crypt::sha512_check(password, DECOY);
                false
            }
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// No users.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// The rustls acceptor for the configured certificate and key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: certificate and key do not fit together: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // `openssl passwd -6 -salt saltsalt secret`
    const SECRET: &str =
        "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    #[test]
    fn users_file() {
        let users = Users::parse(&format!("# users\nalice:{SECRET}\n\nbob:{SECRET}:1000:1000::/home/bob:\n"))
            .unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.verify("alice", "secret"));
        assert!(users.verify("bob", "secret"));
        assert!(!users.verify("alice", "wrong"));
        assert!(!users.verify("mallory", "secret"));
        assert!(Users::parse("alice:plaintext\n").is_err());
        assert!(Users::parse("nocolon\n").is_err());
    }
}
