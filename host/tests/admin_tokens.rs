//! The admin API asks for `Authorization: Bearer TOKEN` once `[admin] token_file` is set: the
//! admin token for everything, the read-only one for what only returns data; a request
//! without a valid token gets 401 (logged, never with the token), a change asked with the
//! read-only token 403; `sluice reload` sends the token of the configuration it is given.

mod relay_common;

use std::io::{Read, Write};
use std::net::TcpStream;

use relay_common::*;

const ADMIN: &str = "0123456789abcdef0123456789abcdef";
const READ: &str = "fedcba9876543210fedcba9876543210";

/// Status line and body of `method path` with an optional `Authorization` value.
fn http(port: u16, method: &str, path: &str, authorization: Option<&str>) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("admin");
    let header = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{header}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.to_string(), body.to_string())
}

#[test]
fn tokens_decide_who_may_read_and_who_may_change() {
    let dir = temp_dir("admin-tokens");
    std::fs::write(dir.join("admin.token"), format!("{ADMIN}\n")).expect("token");
    std::fs::write(dir.join("read.token"), READ).expect("token");
    let admin = free_port();
    let body = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken_file = \"admin.token\"\nread_token_file = \"read.token\"\n{}",
        inbound(free_port())
    );
    let r = relay(&dir, free_port(), &body);
    let bearer = |t: &str| format!("Bearer {t}");

    let (head, _) = http(admin, "GET", "/metrics", None);
    assert!(
        head.starts_with("HTTP/1.1 401") && head.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{head}"
    );
    let (head, _) = http(admin, "GET", "/metrics", Some(&bearer("not-the-token-at-all-00000000")));
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, metrics) = http(admin, "GET", "/metrics", Some(&bearer(READ)));
    assert!(head.starts_with("HTTP/1.1 200") && metrics.contains("# EOF"), "{head}");
    let (head, _) = http(admin, "GET", "/api/tenants", Some(&bearer(ADMIN)));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, body) = http(admin, "POST", "/api/reload", Some(&bearer(READ)));
    assert!(head.starts_with("HTTP/1.1 403") && body.contains("read-only"), "{head} {body}");
    let (head, _) = http(admin, "POST", "/api/reload", None);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, body) = http(admin, "POST", "/api/reload", Some(&bearer(ADMIN)));
    assert!(head.starts_with("HTTP/1.1 200") && body.contains("\"result\""), "{head} {body}");

    // The command line sends the token of the configuration it is given.
    let (ok, out) = sluice(&dir, &["reload"]);
    assert!(ok && out.contains("\"result\""), "{out}");

    let log = log(&r.dir);
    assert!(log.contains("admin API: request with no token; refused"), "{log}");
    assert!(log.contains("admin API: request with a wrong token; refused"), "{log}");
    assert!(log.contains("read-only token; refused"), "{log}");
    assert!(
        !log.contains(ADMIN) && !log.contains(READ) && !log.contains("not-the-token"),
        "a token was logged"
    );
}

/// `sluice check` of a configuration whose `[admin]` has `keys`.
fn check_admin(dir: &std::path::Path, keys: &str) -> (bool, String) {
    let config = format!(
        "[server]\nhostname = \"relay.test\"\nlisten = [\"127.0.0.1:{}\"]\n[spool]\ndir = \"spool\"\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\n{keys}{}",
        free_port(),
        free_port(),
        inbound(free_port())
    );
    std::fs::write(dir.join("sluice.toml"), config).expect("config");
    sluice(dir, &["check"])
}

#[test]
fn a_short_token_or_a_read_token_alone_is_a_configuration_error() {
    let dir = temp_dir("admin-token-short");
    std::fs::write(dir.join("admin.token"), "secret\n").expect("token");
    let (ok, text) = check_admin(&dir, "token_file = \"admin.token\"\n");
    assert!(!ok && text.contains("admin.token_file") && text.contains("at least 16 characters"), "{text}");
    let (ok, text) = check_admin(&dir, "read_token_file = \"admin.token\"\n");
    assert!(!ok && text.contains("admin.read_token_file: needs admin.token_file"), "{text}");
    // Off loopback, an API without a token is refused.
    let config = format!(
        "[server]\nhostname = \"relay.test\"\nlisten = [\"127.0.0.1:{}\"]\n[spool]\ndir = \"spool\"\n\
         [admin]\nlisten = \"0.0.0.0:{}\"\n{}",
        free_port(),
        free_port(),
        inbound(free_port())
    );
    std::fs::write(dir.join("sluice.toml"), config).expect("config");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(
        !ok && text.contains("admin.token_file: is required when admin.listen is not a loopback address"),
        "{text}"
    );
}
