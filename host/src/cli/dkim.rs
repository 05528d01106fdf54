//! `sluice dkim keygen`: a new DKIM signing key for a tenant's `[tenant.dkim]` table, and the
//! DNS record to publish for it.

use std::io::Write;
use std::path::Path;

use crate::sender::{DkimAlgorithm, DkimKey, generate_key};

/// Write a new key to `key` (PEM, PKCS#8, mode 0600; an existing file is never overwritten)
/// and return the zone-file line to publish: `SELECTOR._domainkey.DOMAIN. IN TXT "…"`, the
/// value split into strings of at most 255 bytes.
pub fn keygen(domain: &str, selector: &str, key: &Path, algorithm: &str) -> anyhow::Result<String> {
    let algorithm = match algorithm {
        "rsa" => DkimAlgorithm::Rsa,
        "ed25519" => DkimAlgorithm::Ed25519,
        other => anyhow::bail!("--algorithm: rsa or ed25519, not {other:?}"),
    };
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|l| {
                !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
    };
    anyhow::ensure!(valid(&domain), "--domain {domain:?} is not a domain name");
    anyhow::ensure!(valid(selector), "--selector {selector:?} is not a DNS label");
    let (pem, record) = generate_key(algorithm).map_err(anyhow::Error::msg)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(key).map_err(|e| {
        anyhow::anyhow!("{}: cannot create ({e}); an existing key is never overwritten", key.display())
    })?;
    file.write_all(pem.as_bytes()).and_then(|()| file.sync_all())?;
    // What was written must be what the relay will load.
    DkimKey::load(key, &domain, selector, &[])?;
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect();
    Ok(format!("{selector}._domainkey.{domain}. IN TXT ( {} )", strings.join(" ")))
}
