//! Which recipients of a tenant's domains exist (`recipients` on a `[[tenant]]`), asked at
//! RCPT before any policy runs: an unknown one gets `550 5.1.1` there, so the relay never
//! accepts mail the inside would refuse and never bounces it to a forged sender later.
//!
//! - `any`: every local part exists (the inside decides);
//! - `file:PATH`: a list ([`RecipientList`]), read when the configuration is loaded and again
//!   when the file changes; a list that cannot be read keeps the last good one;
//! - `verify`: the tenant's next hop is asked ([`verify`]), the answers cached.

pub mod verify;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::values::normalise_domain;

/// A tenant's rule at run time.
#[derive(Debug, Clone, Default)]
pub enum Rule {
    /// Every recipient exists.
    #[default]
    Any,
    /// Those of the list.
    List(Arc<RecipientList>),
    /// Those the next hop accepts.
    Verify,
}

/// The recipients a file lists: addresses, and `@domain` catch-alls.
#[derive(Debug, Default)]
pub struct RecipientList {
    /// The file.
    pub path: PathBuf,
    /// `local@domain`, the local part lower-cased, the domain normalised.
    addresses: HashSet<String>,
    /// Domains every local part of which exists.
    catch_all: HashSet<String>,
    /// Lines that are not an address or `@domain`: `line N: why`.
    pub problems: Vec<String>,
    /// SHA-256 of the file, hex (a changed file is a new list).
    pub hash: String,
}

impl RecipientList {
    /// Parse a file's text. Invalid lines are listed in [`Self::problems`]; the valid ones
    /// are used.
    pub fn parse(path: PathBuf, text: &str) -> Self {
        use sha2::Digest;
        let mut list = RecipientList {
            path,
            hash: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            ..Default::default()
        };
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            match key(entry) {
                Ok((local, domain)) if local.is_empty() => {
                    list.catch_all.insert(domain);
                }
                Ok((local, domain)) => {
                    list.addresses.insert(format!("{local}@{domain}"));
                }
                Err(why) => list.problems.push(format!("line {}: {why}: {entry:?}", n + 1)),
            }
        }
        list
    }

    /// Whether `address` (as a client gave it at RCPT) exists. `postmaster` always does
    /// (RFC 5321 §4.5.1).
    pub fn contains(&self, address: &str) -> bool {
        let Ok((local, domain)) = key(address) else { return false };
        local == "postmaster"
            || self.catch_all.contains(&domain)
            || self.addresses.contains(&format!("{local}@{domain}"))
    }

    /// Addresses and catch-alls listed.
    pub fn len(&self) -> usize {
        self.addresses.len() + self.catch_all.len()
    }

    /// Whether the list has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An address's lookup key: the local part lower-cased (mail systems treat local parts
/// case-insensitively in practice), the domain normalised (so `bücher.example` and
/// `xn--bcher-kva.example` are one). `@domain` has an empty local part.
fn key(address: &str) -> Result<(String, String), &'static str> {
    let (local, domain) = address.rsplit_once('@').ok_or("no @domain")?;
    if domain.is_empty() {
        return Err("no domain after @");
    }
    if local.contains(char::is_whitespace) || domain.contains(char::is_whitespace) {
        return Err("spaces in an address");
    }
    let domain = normalise_domain(domain);
    crate::config::values::check_domain_entry(&domain).map_err(|_| "not a domain")?;
    if domain.starts_with("*.") {
        return Err("wildcards are not allowed here (use @domain)");
    }
    Ok((local.to_lowercase(), domain))
}

/// Read `path` (off the async runtime).
pub async fn read(path: PathBuf) -> Result<RecipientList, String> {
    tokio::task::spawn_blocking(move || {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(RecipientList::parse(path, &text))
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_with_catch_alls_comments_and_bad_lines() {
        let text = "# users of example.test\nAlice@Example.Test\nbob@example.test   # Bob\n\n\
                    @catch.test\nnot an address\nnobody@\n@*.wild.test\nkarl@bücher.example\n";
        let list = RecipientList::parse(PathBuf::from("users"), text);
        assert!(list.contains("alice@example.test"));
        assert!(list.contains("ALICE@example.TEST."));
        assert!(list.contains("bob@example.test"));
        assert!(!list.contains("carol@example.test"));
        assert!(list.contains("postmaster@example.test"));
        assert!(list.contains("anyone@catch.test"));
        assert!(!list.contains("anyone@sub.catch.test"));
        assert!(list.contains("karl@xn--bcher-kva.example"));
        assert!(list.contains("Karl@Bücher.example"));
        assert_eq!(list.len(), 4);
        assert_eq!(
            list.problems,
            [
                "line 6: no @domain: \"not an address\"",
                "line 7: no domain after @: \"nobody@\"",
                "line 8: wildcards are not allowed here (use @domain): \"@*.wild.test\""
            ]
        );
    }
}
