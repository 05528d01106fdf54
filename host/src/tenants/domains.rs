//! Local domains and the tenant each belongs to.
//!
//! A tenant lists exact names (`example.com`) and wildcards (`*.example.com`: every subdomain
//! of `example.com` at any depth, not `example.com` itself). A domain belongs to the most
//! specific entry that covers it: its exact name, else the wildcard of its nearest parent. So
//! one tenant may own `*.example.com` while another owns `shop.example.com` (or
//! `*.shop.example.com`); listing the same entry twice is a configuration error.

use std::collections::HashMap;

pub use crate::config::values::{check_domain_entry as check, normalise_domain as normalise};

/// Which tenant (by index) each local domain belongs to.
#[derive(Debug, Clone, Default)]
pub struct DomainMap {
    exact: HashMap<String, usize>,
    /// Parent domain of a wildcard (`example.com` for `*.example.com`) → tenant.
    wildcard: HashMap<String, usize>,
    /// The first exact domain of each tenant, in configuration order.
    first: HashMap<usize, String>,
}

impl DomainMap {
    /// Add `entry` (a domain or `*.domain`) for `tenant`. A later entry for the same name
    /// replaces an earlier one (the configuration check refuses such duplicates).
    pub fn insert(&mut self, entry: &str, tenant: usize) {
        let name = normalise(entry);
        match name.strip_prefix("*.") {
            Some(parent) => {
                self.wildcard.insert(parent.to_string(), tenant);
            }
            None => {
                self.first.entry(tenant).or_insert_with(|| name.clone());
                self.exact.insert(name, tenant);
            }
        }
    }

    /// The tenant `domain` belongs to, if it is local.
    pub fn tenant_of(&self, domain: &str) -> Option<usize> {
        let domain = normalise(domain);
        if let Some(tenant) = self.exact.get(&domain) {
            return Some(*tenant);
        }
        let mut rest = domain.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(tenant) = self.wildcard.get(parent) {
                return Some(*tenant);
            }
            rest = parent;
        }
        None
    }

    /// The first exact domain `tenant` lists (for `postmaster` without a domain).
    pub fn first_domain_of(&self, tenant: usize) -> Option<&str> {
        self.first.get(&tenant).map(String::as_str)
    }
}

impl crate::smtp::session::LocalDomains for DomainMap {
    fn tenant_of(&self, domain: &str) -> Option<usize> {
        DomainMap::tenant_of(self, domain)
    }

    /// The first tenant's first domain: mail to a bare `postmaster` is the provider's.
    fn postmaster_domain(&self) -> Option<&str> {
        self.first_domain_of(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> DomainMap {
        let mut m = DomainMap::default();
        m.insert("example.com", 0);
        m.insert("*.example.com", 0);
        m.insert("Shop.Example.com.", 1);
        m.insert("*.eu.example.com", 2);
        m.insert("other.test", 1);
        m
    }

    #[test]
    fn the_most_specific_entry_wins() {
        let m = map();
        assert_eq!(m.tenant_of("example.com"), Some(0));
        assert_eq!(m.tenant_of("mail.example.com"), Some(0));
        assert_eq!(m.tenant_of("a.b.c.example.com"), Some(0));
        assert_eq!(m.tenant_of("shop.example.com"), Some(1));
        assert_eq!(m.tenant_of("SHOP.example.COM."), Some(1));
        // The exact entry covers the name only, not its subdomains.
        assert_eq!(m.tenant_of("x.shop.example.com"), Some(0));
        assert_eq!(m.tenant_of("paris.eu.example.com"), Some(2));
        assert_eq!(m.tenant_of("eu.example.com"), Some(0));
        assert_eq!(m.tenant_of("example.org"), None);
        assert_eq!(m.tenant_of("notexample.com"), None);
        assert_eq!(m.tenant_of(""), None);
        assert_eq!(m.first_domain_of(1), Some("shop.example.com"));
        assert_eq!(m.first_domain_of(2), None);
    }

    #[test]
    fn entries_are_checked() {
        for good in ["example.com", "*.example.com", "localhost", "xn--bcher-kva.example", "b\u{fc}cher.de."]
        {
            assert!(check(good).is_ok(), "{good}");
        }
        for bad in
            ["", "*", "*.", "a..b", "-a.com", "a b.com", "user@example.com", "*.*.example.com", "mail.*.com"]
        {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
