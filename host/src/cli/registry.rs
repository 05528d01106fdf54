//! `sluice policy push FILE oci://…` and `sluice policy pull oci://…`: components to and from
//! an OCI registry ([`crate::oci`]).

use std::path::Path;

use crate::oci::{self, Reference, Settings};

/// How a command reaches the registry: `--insecure`, the keys to check, and the auth file
/// (`--auth-file`, else [`oci::Auth::default_file`]).
pub struct Access<'a> {
    /// Plain HTTP.
    pub insecure: bool,
    /// `--public-key` (pull).
    pub public_keys: &'a [String],
    /// `--auth-file`.
    pub auth_file: Option<&'a Path>,
}

fn settings(reference: &Reference, access: &Access) -> Result<Settings, String> {
    let keys = access.public_keys.iter().map(|k| oci::public_key(k)).collect::<Result<_, _>>()?;
    let insecure = if access.insecure { vec![reference.registry.clone()] } else { Vec::new() };
    let auth = match access.auth_file.map(Path::to_path_buf).or_else(oci::Auth::default_file) {
        Some(file) => oci::Auth::from_file(&file)?,
        None => oci::Auth::default(),
    };
    Ok(Settings { insecure, public_keys: keys, auth })
}

/// Push `file` (a component) to `target`, signed with the key in `sign_key` if given; prints
/// the pinned reference and, when signed, the public key to trust.
pub async fn push(
    file: &Path,
    target: &str,
    access: &Access<'_>,
    sign_key: Option<&Path>,
) -> Result<(), String> {
    let reference = Reference::parse(target)?;
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if let Some(problem) = crate::policy::cache::core_module(&bytes) {
        return Err(format!("{}: {problem}", file.display()));
    }
    let key = match sign_key {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(oci::signing_key(&pem).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let digest = oci::push(&bytes, &reference, &settings(&reference, access)?, key.as_ref()).await?;
    println!("pushed {target}");
    println!("pinned: oci://{}/{}@{digest}", reference.registry, reference.repository);
    if let Some(key) = &key {
        println!("signed; [oci] public_keys = [\"{}\"]", oci::public_key_text(key));
    }
    Ok(())
}

/// Pull `source` into `output`, checking its digests (and its signature when keys are given).
pub async fn pull(source: &str, output: &Path, access: &Access<'_>) -> Result<(), String> {
    let reference = Reference::parse(source)?;
    let pulled = oci::pull(&reference, &settings(&reference, access)?).await?;
    std::fs::write(output, &pulled.bytes).map_err(|e| format!("{}: {e}", output.display()))?;
    println!("{} ({} bytes, {}) -> {}", source, pulled.bytes.len(), pulled.manifest_digest, output.display());
    Ok(())
}
