//! The AUTH exchanges the relay offers: PLAIN (RFC 4616) and LOGIN, their base64 responses
//! decoded (RFC 4954).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The LOGIN prompt for the user name (`Username:` in base64).
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// The LOGIN prompt for the password (`Password:` in base64).
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Decode a PLAIN response: `authzid NUL authcid NUL password`. Returns (user, password);
/// an authorization identity other than the user is refused.
pub fn decode_plain(response: &str) -> Option<(String, String)> {
    let bytes = STANDARD.decode(response.trim()).ok()?;
    let mut parts = bytes.split(|&b| b == 0);
    let authz = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || user.is_empty() || (!authz.is_empty() && authz != user.as_bytes()) {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

/// Decode one base64 line of the LOGIN exchange.
pub fn decode_line(response: &str) -> Option<String> {
    let bytes = STANDARD.decode(response.trim()).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_login() {
        assert_eq!(
            decode_plain(&STANDARD.encode("\0alice\0secret")),
            Some(("alice".into(), "secret".into()))
        );
        assert_eq!(
            decode_plain(&STANDARD.encode("alice\0alice\0secret")),
            Some(("alice".into(), "secret".into()))
        );
        assert_eq!(decode_plain(&STANDARD.encode("bob\0alice\0secret")), None);
        assert_eq!(decode_plain("not base64!"), None);
        assert_eq!(decode_line(&STANDARD.encode("alice")), Some("alice".into()));
    }
}
