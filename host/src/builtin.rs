//! The shipped Rust policies, embedded in the binary (built by `build.rs`), so that `sluice`
//! runs with no checkout: a configuration names one as `path = "builtin:NAME"` (`dnsbl`,
//! `sender-guard`, `rate-limit`, `greylist`, `spam-heuristics`, `bayes`, `dmarc`), and the
//! embedded default configuration uses them.
//!
//! The engine, the file watcher and `sluice check` read policies from files, so a builtin is
//! written once to `CACHE/builtin/HASH/NAME.wasm` (the cache directory of compiled policies:
//! `$SLUICE_CACHE_DIR`, `$XDG_CACHE_HOME/sluice` or `~/.cache/sluice`), named by its
//! content: a new binary brings new files and never changes one a running relay watches. A
//! file found there with other bytes is written anew.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The scheme of a builtin policy's path.
pub const SCHEME: &str = "builtin:";

/// The names of the builtin policies.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// The component bytes of builtin `name`.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// The file holding builtin `name`, written if it is missing or differs.
pub fn materialize(name: &str) -> Result<PathBuf, String> {
    let Some(bytes) = bytes(name) else {
        return Err(format!(
            "{SCHEME}{name}: no such builtin policy (there are: {})",
            names().collect::<Vec<_>>().join(", ")
        ));
    };
    let hash = hex::encode(&Sha256::digest(bytes)[..8]);
    let dir = crate::policy::cache::default_cache_dir()
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-cache"))
        .join("builtin")
        .join(hash);
    let path = dir.join(format!("{name}.wasm"));
    if std::fs::read(&path).is_ok_and(|found| found == bytes) {
        return Ok(path);
    }
    let failed = |e: std::io::Error| format!("{SCHEME}{name}: cannot write {}: {e}", path.display());
    std::fs::create_dir_all(&dir).map_err(failed)?;
    let partial = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&partial, bytes).map_err(failed)?;
    std::fs::rename(&partial, &path).map_err(failed)?;
    Ok(path)
}

/// A command-line policy argument: `builtin:NAME` as the file that holds it, anything else
/// as a path.
pub fn path_arg(text: &str) -> Result<PathBuf, String> {
    match text.strip_prefix(SCHEME) {
        Some(name) => materialize(name),
        None => Ok(PathBuf::from(text)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_shipped_policy_is_builtin_and_written_once() {
        let names: Vec<&str> = super::names().collect();
        for shipped in
            ["dnsbl", "sender-guard", "rate-limit", "greylist", "spam-heuristics", "bayes", "dmarc"]
        {
            assert!(names.contains(&shipped), "{shipped} is not builtin: {names:?}");
        }
        let path = super::materialize("greylist").expect("written");
        let again = super::materialize("greylist").expect("found");
        assert_eq!(path, again);
        assert_eq!(std::fs::read(&path).expect("read"), super::bytes("greylist").expect("bytes"));
        let error = super::materialize("nope").expect_err("unknown");
        assert!(error.contains("no such builtin policy") && error.contains("greylist"), "{error}");
    }
}
