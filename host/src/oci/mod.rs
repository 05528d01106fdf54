//! Policies from an OCI registry, the way WebAssembly components are distributed (`wkg`,
//! `oras`, Spin and wasmCloud use OCI artifacts): a policy's path may be
//! `oci://REGISTRY/REPOSITORY:TAG` or `oci://REGISTRY/REPOSITORY@sha256:DIGEST`.
//!
//! An artifact is an OCI image manifest with one `application/wasm` layer (the component)
//! and an empty `application/vnd.wasm.config.v0+json` config. Pulled components are cached by
//! the layer's digest in `CACHE/oci/` and checked against it (and a manifest pinned by digest
//! against that digest); a configuration's path becomes the cached file, so the engine, the
//! watcher and `sluice check` read it like any policy file. A tag is resolved again on each
//! reload (the registry may have moved it); a digest never changes, so a cached one needs no
//! network. With `[oci] public_keys`, a manifest must carry an Ed25519 signature of its
//! layer's digest by one of the keys (`sluice policy push --sign-key`).

mod auth;
mod http;

pub use auth::Auth;

use std::path::PathBuf;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError};

/// The scheme of a policy's path in a registry.
pub const SCHEME: &str = "oci://";

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER: &str = "application/wasm";
const CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The manifest annotation holding the signature (base64).
const SIGNATURE: &str = "dev.sluice.policy.signature";
/// What is signed: this, then the layer's digest.
const SIGNED_PREFIX: &str = "sluice-policy-v1:";

/// Where a component is in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// `name/space/repo`.
    pub repository: String,
    /// The tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// `sha256:HEX` of the manifest.
    pub digest: Option<String>,
}

impl Reference {
    /// `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = || {
            format!("{text}: not oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST")
        };
        let rest = text.strip_prefix(SCHEME).ok_or_else(usage)?;
        let (registry, path) = rest.split_once('/').ok_or_else(usage)?;
        let (path, digest) = match path.split_once('@') {
            Some((path, digest)) => (path, Some(digest.to_string())),
            None => (path, None),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag.to_string())),
            _ => (path, None),
        };
        let repository_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            });
        let tag_ok = tag.as_deref().is_none_or(|t| {
            (1..=128).contains(&t.len())
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
        let digest_ok = digest.as_deref().is_none_or(|d| {
            d.strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        if registry.is_empty() || !repository_ok || !tag_ok || !digest_ok {
            return Err(usage());
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Self { registry: registry.to_string(), repository: repository.to_string(), tag, digest })
    }

    /// The manifest's name in the registry's API: the digest if pinned, else the tag.
    fn manifest_name(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    fn base(&self, settings: &Settings) -> String {
        let scheme = if settings.plain(&self.registry) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.registry, self.repository)
    }
}

/// How registries are reached and what they must prove (`[oci]`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Registries spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Ed25519 keys one of which must have signed a pulled component (none: no check).
    pub public_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Credentials, and the tokens registries gave.
    pub auth: Auth,
}

impl Settings {
    /// From `[oci]`.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let keys = config.oci.public_keys.iter().map(|k| public_key(k)).collect::<Result<_, _>>()?;
        let auth = match &config.oci.auth_file {
            Some(file) => Auth::from_file(&config.resolve(file))?,
            None => Auth::default(),
        };
        Ok(Self { insecure: config.oci.insecure_registries.clone(), public_keys: keys, auth })
    }

    fn plain(&self, registry: &str) -> bool {
        self.insecure.iter().any(|r| r == registry)
    }
}

/// An Ed25519 public key: base64 of its 32 bytes, or of the SPKI DER that `openssl pkey
/// -pubout` writes (with or without its PEM lines).
pub fn public_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| format!("oci.public_keys: {text:?}: not base64: {e}"))?;
    let raw: [u8; 32] = match bytes.len() {
        32 => bytes[..].try_into().unwrap_or([0; 32]),
        44 => bytes[12..].try_into().unwrap_or([0; 32]),
        n => return Err(format!("oci.public_keys: {text:?}: {n} bytes, not an Ed25519 public key")),
    };
    ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|e| format!("oci.public_keys: {text:?}: {e}"))
}

/// An Ed25519 private key from a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`).
pub fn signing_key(pem: &str) -> Result<ed25519_dalek::SigningKey, String> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der =
        base64::engine::general_purpose::STANDARD.decode(body.trim()).map_err(|e| format!("not PEM: {e}"))?;
    // PKCS#8 for Ed25519 (RFC 8410): a fixed 16-byte prefix, then the 32-byte seed.
    const PREFIX: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    match der.strip_prefix(&PREFIX[..]) {
        Some(seed) if seed.len() == 32 => {
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap_or([0; 32])))
        }
        _ => {
            Err("not an Ed25519 private key in PKCS#8 (openssl genpkey -algorithm ed25519 -out KEY.pem)"
                .into())
        }
    }
}

/// The public key of `key`, as `[oci] public_keys` takes it.
pub fn public_key_text(key: &ed25519_dalek::SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A component pulled from a registry.
#[derive(Debug)]
pub struct Pulled {
    /// The manifest's digest (`sha256:…`): pin it with `@`.
    pub manifest_digest: String,
    /// The component's digest.
    pub layer_digest: String,
    /// The component.
    pub bytes: Vec<u8>,
}

fn failed(answer: &http::Answer, what: &str) -> String {
    let text = String::from_utf8_lossy(&answer.body);
    format!(
        "{what}: the registry answered {}: {}",
        answer.status,
        text.trim().chars().take(300).collect::<String>()
    )
}

/// Pull the component `reference` names, checking every digest, and its signature when
/// `settings` has keys.
pub async fn pull(reference: &Reference, settings: &Settings) -> Result<Pulled, String> {
    let base = reference.base(settings);
    let plain = settings.plain(&reference.registry);
    let url = format!("{base}/manifests/{}", reference.manifest_name());
    let registry = reference.registry.as_str();
    let answer =
        settings.auth.send(registry, "GET", &url, &[("accept", MANIFEST)], Vec::new(), plain).await?;
    if answer.status != 200 {
        return Err(failed(&answer, &url));
    }
    let manifest_digest = sha256(&answer.body);
    if let Some(pinned) = &reference.digest
        && *pinned != manifest_digest
    {
        return Err(format!("{url}: the manifest's digest is {manifest_digest}, not {pinned}"));
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|e| format!("{url}: not an OCI manifest: {e}"))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let layer = layers
        .iter()
        .find(|l| l["mediaType"] == LAYER)
        .ok_or_else(|| format!("{url}: no {LAYER} layer: not a WebAssembly component artifact"))?;
    let layer_digest = layer["digest"].as_str().unwrap_or_default().to_string();
    if !settings.public_keys.is_empty() {
        let signature = manifest["annotations"][SIGNATURE].as_str().unwrap_or_default();
        verify(&settings.public_keys, &layer_digest, signature).map_err(|e| format!("{url}: {e}"))?;
    }
    let blob = format!("{base}/blobs/{layer_digest}");
    let answer = settings.auth.send(registry, "GET", &blob, &[], Vec::new(), plain).await?;
    if answer.status != 200 {
        return Err(failed(&answer, &blob));
    }
    let bytes = answer.body.to_vec();
    if sha256(&bytes) != layer_digest {
        return Err(format!("{blob}: the component's bytes do not match its digest"));
    }
    Ok(Pulled { manifest_digest, layer_digest, bytes })
}

fn verify(keys: &[ed25519_dalek::VerifyingKey], digest: &str, signature: &str) -> Result<(), String> {
    if signature.is_empty() {
        return Err("the component is not signed, and [oci] public_keys asks for a signature".into());
    }
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(signature).map_err(|e| format!("signature: {e}"))?;
    let signature = ed25519_dalek::Signature::from_slice(&bytes).map_err(|e| format!("signature: {e}"))?;
    let message = format!("{SIGNED_PREFIX}{digest}");
    if keys.iter().any(|k| k.verify_strict(message.as_bytes(), &signature).is_ok()) {
        Ok(())
    } else {
        Err("the component's signature is by none of [oci] public_keys".into())
    }
}

/// Push `component` to `reference` (a tag), signed with `key` when given; the manifest's
/// digest.
pub async fn push(
    component: &[u8],
    reference: &Reference,
    settings: &Settings,
    key: Option<&ed25519_dalek::SigningKey>,
) -> Result<String, String> {
    use ed25519_dalek::Signer;
    let Some(tag) = reference.tag.as_deref().filter(|_| reference.digest.is_none()) else {
        return Err("push to a tag (oci://REGISTRY/REPOSITORY:TAG), not a digest".into());
    };
    let base = reference.base(settings);
    let plain = settings.plain(&reference.registry);
    let config = b"{}".to_vec();
    let config_digest = upload(settings, reference, &config).await?;
    let layer_digest = upload(settings, reference, component).await?;
    let mut annotations = serde_json::Map::new();
    if let Some(key) = key {
        let signature = key.sign(format!("{SIGNED_PREFIX}{layer_digest}").as_bytes());
        annotations.insert(
            SIGNATURE.into(),
            base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()).into(),
        );
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": { "mediaType": CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": LAYER, "digest": layer_digest, "size": component.len() }],
        "annotations": annotations,
    });
    let body = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let digest = sha256(&body);
    let url = format!("{base}/manifests/{tag}");
    let headers = [("content-type", MANIFEST)];
    let answer = settings.auth.send(&reference.registry, "PUT", &url, &headers, body, plain).await?;
    if answer.status != 201 {
        return Err(failed(&answer, &url));
    }
    Ok(digest)
}

/// Upload a blob unless the registry has it; its digest.
async fn upload(settings: &Settings, reference: &Reference, bytes: &[u8]) -> Result<String, String> {
    let (base, plain, registry) =
        (reference.base(settings), settings.plain(&reference.registry), reference.registry.as_str());
    let send = |method: &'static str, url: String, headers: &'static [(&'static str, &'static str)], body| {
        let auth = settings.auth.clone();
        async move { auth.send(registry, method, &url, headers, body, plain).await }
    };
    let digest = sha256(bytes);
    let head = send("HEAD", format!("{base}/blobs/{digest}"), &[], Vec::new()).await?;
    if head.status == 200 {
        return Ok(digest);
    }
    let start = format!("{base}/blobs/uploads/");
    let answer = send("POST", start.clone(), &[], Vec::new()).await?;
    let location =
        answer.header("location").filter(|_| answer.status == 202).ok_or_else(|| failed(&answer, &start))?;
    // The location may be a path on the registry, or a whole URL.
    let location = if location.starts_with('/') {
        let origin = base.split("/v2/").next().unwrap_or(&base);
        format!("{origin}{location}")
    } else {
        location.to_string()
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{separator}digest={digest}");
    let answer = send("PUT", url, &[("content-type", "application/octet-stream")], bytes.to_vec()).await?;
    if answer.status != 201 {
        return Err(failed(&answer, &start));
    }
    Ok(digest)
}

/// The cache folder of pulled components.
fn cache_dir() -> PathBuf {
    crate::policy::cache::default_cache_dir()
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-cache"))
        .join("oci")
}

/// The file holding the component `text` names: from the cache for a digest already pulled,
/// else pulled (a tag always: it may have moved), checked and written to the cache.
pub async fn materialize(text: &str, settings: &Settings) -> Result<PathBuf, String> {
    let reference = Reference::parse(text)?;
    let name = reference.repository.rsplit('/').next().unwrap_or("policy").to_string();
    let dir = cache_dir();
    // A digest names one manifest forever: what it led to once, it leads to again (unless
    // keys are asked for: then the signature is checked on the registry's manifest).
    let pins = |digest: &str| dir.join("manifests").join(digest.replace(':', "-"));
    if let Some(digest) = &reference.digest
        && settings.public_keys.is_empty()
        && let Ok(layer) = std::fs::read_to_string(pins(digest))
    {
        let path = dir.join(layer.trim().replace(':', "-")).join(format!("{name}.wasm"));
        if std::fs::read(&path).is_ok_and(|bytes| sha256(&bytes) == layer.trim()) {
            return Ok(path);
        }
    }
    let pulled = pull(&reference, settings).await?;
    let folder = dir.join(pulled.layer_digest.replace(':', "-"));
    let path = folder.join(format!("{name}.wasm"));
    let write = |path: &std::path::Path, bytes: &[u8]| -> Result<(), String> {
        let parent = path.parent().unwrap_or(&dir);
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let partial = parent.join(format!(".partial.{}", std::process::id()));
        std::fs::write(&partial, bytes).map_err(|e| format!("{}: {e}", partial.display()))?;
        std::fs::rename(&partial, path).map_err(|e| format!("{}: {e}", path.display()))
    };
    if !std::fs::read(&path).is_ok_and(|bytes| bytes == pulled.bytes) {
        write(&path, &pulled.bytes)?;
    }
    write(&pins(&pulled.manifest_digest), pulled.layer_digest.as_bytes())?;
    tracing::info!(
        reference = text,
        digest = %pulled.manifest_digest,
        file = %path.display(),
        "policy pulled from its registry"
    );
    Ok(path)
}

/// Every `oci://` policy of `config` made the file that holds it (pulled as needed); an
/// error names the policy's key and line.
pub async fn resolve(config: &mut Config) -> Result<(), ConfigError> {
    let named = |p: &crate::config::PolicyConfig| {
        p.origin.clone().unwrap_or_else(|| p.path.display().to_string()).starts_with(SCHEME)
    };
    if !config.edge().policies.iter().chain(config.tenants.iter().flat_map(|t| &t.policies)).any(named) {
        return Ok(());
    }
    let settings = Settings::from_config(config).map_err(|e| config.error_at("oci.public_keys".into(), e))?;
    let mut failure = None;
    for (key, policy) in config.policies_mut() {
        let text = policy.origin.clone().unwrap_or_else(|| policy.path.display().to_string());
        if !text.starts_with(SCHEME) {
            continue;
        }
        match materialize(&text, &settings).await {
            Ok(path) => {
                policy.origin = Some(text);
                policy.path = path;
            }
            Err(e) => {
                failure = Some((key, e));
                break;
            }
        }
    }
    match failure {
        Some((key, e)) => Err(config.error_at(key, e)),
        None => Ok(()),
    }
}

/// Whether `config` names a policy by tag (resolved again on each reload).
pub fn has_tags(config: &Config) -> bool {
    std::iter::once(config.edge())
        .chain(&config.tenants)
        .flat_map(|t| &t.policies)
        .any(|p| p.origin.as_deref().is_some_and(|o| Reference::parse(o).is_ok_and(|r| r.digest.is_none())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("oci://127.0.0.1:5000/policies/greylist:1.2").expect("tag");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "policies/greylist", Some("1.2"))
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("oci://ghcr.io/acme/filter@{digest}")).expect("digest");
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(digest.as_str())));
        assert_eq!(Reference::parse("oci://r.example/x").expect("latest").tag.as_deref(), Some("latest"));
        for bad in ["oci://r.example", "oci://r.example/Upper:1", "oci://r/x@sha256:12", "http://r/x:1"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_signature_by_a_listed_key_and_no_other() {
        use ed25519_dalek::Signer;
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let digest = format!("sha256:{}", "b".repeat(64));
        let sign = |k: &ed25519_dalek::SigningKey| {
            base64::engine::general_purpose::STANDARD
                .encode(k.sign(format!("{SIGNED_PREFIX}{digest}").as_bytes()).to_bytes())
        };
        let keys = [public_key(&public_key_text(&key)).expect("key")];
        assert!(verify(&keys, &digest, &sign(&key)).is_ok());
        assert!(verify(&keys, &digest, &sign(&other)).is_err());
        assert!(verify(&keys, &digest, "").is_err());
    }
}
