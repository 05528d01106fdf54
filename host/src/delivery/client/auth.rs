//! AUTH to a smarthost (RFC 4954): PLAIN when offered, else LOGIN, over TLS only (the caller
//! makes sure). The credentials file's first line is `user:password`; it is read at each new
//! connection, so a changed password needs no reload.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use tokio::io::BufReader;

use super::wire::{Wire, command};
use crate::delivery::RcptResult;

/// The user and password of a credentials file.
fn credentials(file: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("{}: no `user:password` line", file.display()))?;
    let (user, password) =
        line.split_once(':').ok_or_else(|| format!("{}: the line is not `user:password`", file.display()))?;
    if user.is_empty() {
        return Err(format!("{}: empty user", file.display()));
    }
    Ok((user.to_string(), password.to_string()))
}

/// Authenticate with the credentials of `file`, by the first of PLAIN and LOGIN the server
/// offers. A failure is transient for every recipient (the mail waits for the operator).
pub(super) async fn authenticate(
    stream: &mut BufReader<Box<dyn Wire>>,
    file: &Path,
    offered: &[String],
    timeout: Duration,
) -> Result<(), RcptResult> {
    let fail = |why: String| RcptResult::Transient(format!("454 4.7.0 AUTH to the smarthost: {why}"));
    let (user, password) = credentials(file).map_err(fail)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let reply = if offered.iter().any(|m| m == "PLAIN") {
        command(stream, &format!("AUTH PLAIN {}", b64(&format!("\0{user}\0{password}"))), timeout)
            .await
            .map_err(fail)?
    } else if offered.iter().any(|m| m == "LOGIN") {
        let mut reply = command(stream, "AUTH LOGIN", timeout).await.map_err(fail)?;
        for answer in [&user, &password] {
            if reply.code != 334 {
                break;
            }
            reply = command(stream, &b64(answer), timeout).await.map_err(fail)?;
        }
        reply
    } else {
        return Err(fail(format!("it offers neither PLAIN nor LOGIN (offered: {})", offered.join(" "))));
    };
    if reply.code == 235 { Ok(()) } else { Err(fail(format!("refused: {}", reply.text()))) }
}
