//! Envelope paths (`<local@domain>`) and the address tricks that could make a relay forward
//! mail somewhere else: `%` hacks, `!` bang paths, source routes, quoted local parts that
//! hide an `@`, double `@`, IP literals and trailing dots.

use super::envelope::EsmtpParam;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not `<...>` or otherwise malformed.
    #[error("malformed address")]
    Syntax,
    /// A source route (`<@relay:user@domain>`).
    #[error("source routes are not accepted")]
    SourceRoute,
    /// A local part that routes elsewhere (`%`, `!`, a quoted `@`).
    #[error("address routing tricks are not accepted")]
    Routing,
    /// An IP literal domain.
    #[error("IP-literal domains are not accepted")]
    IpLiteral,
    /// A domain ending in a dot, or with empty or invalid labels.
    #[error("invalid domain")]
    Domain,
}

/// An address taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Local part as written (quotes included).
    pub local: String,
    /// Domain, lower-cased.
    pub domain: String,
}

impl Mailbox {
    /// `local@domain`.
    pub fn address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

/// Split the argument of MAIL FROM: / RCPT TO: into the path (without brackets) and its
/// ESMTP parameters.
pub fn split_path_and_params(arg: &str) -> Result<(String, Vec<EsmtpParam>), PathError> {
    let arg = arg.trim_start();
    if !arg.starts_with('<') {
        return Err(PathError::Syntax);
    }
    // The path ends at the first '>' outside a quoted string.
    let mut quoted = false;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in arg.char_indices().skip(1) {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end.ok_or(PathError::Syntax)?;
    let path = arg[1..end].to_string();
    let rest = &arg[end + 1..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(PathError::Syntax);
    }
    let mut params = Vec::new();
    for word in rest.split(' ').filter(|w| !w.is_empty()) {
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (word, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(PathError::Syntax);
        }
        params.push(EsmtpParam { name: name.to_ascii_uppercase(), value });
    }
    Ok((path, params))
}

/// Check a non-empty path and take it apart. Refuses source routes and every routing trick.
pub fn parse_mailbox(path: &str) -> Result<Mailbox, PathError> {
    if path.starts_with('@') {
        return Err(PathError::SourceRoute);
    }
    if path.is_empty()
        || path.len() > 512
        || path.chars().any(|c| c.is_control() || c == ' ' && !path.starts_with('"'))
    {
        return Err(PathError::Syntax);
    }
    // Local part: a quoted string or a dot-atom, up to the last unquoted '@'.
    let (local, domain) = if let Some(rest) = path.strip_prefix('"') {
        let mut escaped = false;
        let mut close = None;
        for (i, c) in rest.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '"' => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close.ok_or(PathError::Syntax)?;
        let inner = &rest[..close];
        if inner.contains(['@', '%', '!']) {
            return Err(PathError::Routing);
        }
        let after = &rest[close + 1..];
        let domain = after.strip_prefix('@').ok_or(PathError::Syntax)?;
        (format!("\"{inner}\""), domain)
    } else {
        let (local, domain) = path.split_once('@').ok_or(PathError::Syntax)?;
        if domain.contains('@') {
            return Err(PathError::Routing);
        }
        if local.contains(['%', '!']) {
            return Err(PathError::Routing);
        }
        if local.is_empty() || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(PathError::Syntax);
        }
        let atext = |c: char| c.is_alphanumeric() || "!#$&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii();
        if !local.chars().all(atext) {
            return Err(PathError::Syntax);
        }
        (local.to_string(), domain)
    };
    Ok(Mailbox { local, domain: check_domain(domain)? })
}

/// A domain name as it may appear in an address: labels of letters, digits and hyphens (or
/// UTF-8), no trailing dot, no IP literal.
pub fn check_domain(domain: &str) -> Result<String, PathError> {
    if domain.starts_with('[') {
        return Err(PathError::IpLiteral);
    }
    if domain.is_empty() || domain.len() > 255 || domain.ends_with('.') {
        return Err(PathError::Domain);
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii());
        if !ok {
            return Err(PathError::Domain);
        }
    }
    if domain.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        // A bare dotted quad is an IP address written without brackets.
        return Err(PathError::IpLiteral);
    }
    Ok(domain.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_params() {
        let (path, params) = split_path_and_params("<a@b.example> SIZE=100 BODY=8BITMIME SMTPUTF8").unwrap();
        assert_eq!(path, "a@b.example");
        assert_eq!(params.len(), 3);
        assert_eq!(params[2], EsmtpParam { name: "SMTPUTF8".into(), value: None });
        assert_eq!(split_path_and_params("<>").unwrap().0, "");
        assert_eq!(split_path_and_params("<\"a>b\"@c.example>").unwrap().0, "\"a>b\"@c.example");
        assert!(split_path_and_params("a@b.example").is_err());
        assert!(split_path_and_params("<a@b.example").is_err());
        assert!(split_path_and_params("<a@b.example>x").is_err());
    }

    #[test]
    fn relay_tricks_are_refused() {
        use PathError::*;
        for (path, err) in [
            ("user%other.example@local.example", Routing),
            ("other.example!user@local.example", Routing),
            ("@relay.example:user@other.example", SourceRoute),
            ("@a,@b:user@other.example", SourceRoute),
            ("\"user@other.example\"@local.example", Routing),
            ("\"user%other\"@local.example", Routing),
            ("user@other.example@local.example", Routing),
            ("user@[192.0.2.1]", IpLiteral),
            ("user@192.0.2.1", IpLiteral),
            ("user@local.example.", Domain),
            ("user@.example", Domain),
            ("user@-x.example", Domain),
            ("user", Syntax),
            ("@", SourceRoute),
            ("user@", Domain),
            (".user@local.example", Syntax),
            ("us er@local.example", Syntax),
        ] {
            assert_eq!(parse_mailbox(path), Err(err), "{path}");
        }
    }

    #[test]
    fn ordinary_addresses() {
        let m = parse_mailbox("Bob.Smith+tag@Mail.Example.COM").unwrap();
        assert_eq!(m.local, "Bob.Smith+tag");
        assert_eq!(m.domain, "mail.example.com");
        assert_eq!(parse_mailbox("\"john doe\"@example.com").unwrap().local, "\"john doe\"");
        assert_eq!(parse_mailbox("josé@exämple.com").unwrap().domain, "exämple.com");
    }
}
