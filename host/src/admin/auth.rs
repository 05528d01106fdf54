//! Who may use the admin API: `Authorization: Bearer TOKEN`. `[admin] token_file` holds the
//! admin token (every endpoint), `[admin] read_token_file` an optional read-only one (the
//! endpoints that only return data: `GET`). Tokens are compared in constant time and never
//! logged. Without `token_file` the API is open to whoever can reach the listener (a warning
//! at start says so).

use std::path::Path;

use crate::config::Config;

/// Shortest token accepted (a token is a secret, not a password to remember).
pub const MIN_TOKEN_BYTES: usize = 16;

/// The tokens in force.
#[derive(Clone, Default)]
pub struct Tokens {
    admin: Option<String>,
    read: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("admin", &self.admin.is_some())
            .field("read", &self.read.is_some())
            .finish()
    }
}

/// What a request may do, by its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anything (the admin token, or no token configured at all).
    Admin,
    /// Read only (the read-only token).
    Read,
    /// Nothing: no token, or a wrong one.
    None,
}

impl Tokens {
    /// The tokens `config`'s `[admin]` names, read from their files.
    pub fn load(config: &Config) -> Result<Self, String> {
        let Some(admin) = &config.admin else { return Ok(Self::default()) };
        let read = |key: &str, path: &Option<std::path::PathBuf>| -> Result<Option<String>, String> {
            path.as_ref().map(|p| token_file(key, &config.resolve(p))).transpose()
        };
        Ok(Self {
            admin: read("admin.token_file", &admin.token_file)?,
            read: read("admin.read_token_file", &admin.read_token_file)?,
        })
    }

    /// Whether any token is required.
    pub fn required(&self) -> bool {
        self.admin.is_some()
    }

    /// The access the `Authorization` header `header` gives.
    pub fn access(&self, header: Option<&str>) -> Access {
        let Some(admin) = &self.admin else { return Access::Admin };
        let given = header.and_then(|h| h.trim().strip_prefix("Bearer ")).map(str::trim).unwrap_or("");
        if !given.is_empty() && same(given, admin) {
            Access::Admin
        } else if !given.is_empty() && self.read.as_deref().is_some_and(|read| same(given, read)) {
            Access::Read
        } else {
            Access::None
        }
    }
}

/// The token in `path` (its first line), checked.
pub fn token_file(key: &str, path: &Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{key}: {}: cannot read: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < MIN_TOKEN_BYTES || token.contains(char::is_whitespace) {
        return Err(format!(
            "{key}: {}: the token must be one line of at least {MIN_TOKEN_BYTES} characters without spaces \
             (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            path.display()
        ));
    }
    Ok(token)
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_decides_the_access() {
        let tokens = Tokens { admin: Some("a".repeat(32)), read: Some("r".repeat(32)) };
        assert_eq!(tokens.access(Some(&format!("Bearer {}", "a".repeat(32)))), Access::Admin);
        assert_eq!(tokens.access(Some(&format!("Bearer {}", "r".repeat(32)))), Access::Read);
        assert_eq!(tokens.access(Some(&format!("Bearer {}", "a".repeat(31)))), Access::None);
        assert_eq!(tokens.access(Some("Basic abc")), Access::None);
        assert_eq!(tokens.access(None), Access::None);
        assert_eq!(Tokens::default().access(None), Access::Admin, "no token configured: open");
        assert!(!format!("{tokens:?}").contains("aaaa"), "never printed");
    }
}
