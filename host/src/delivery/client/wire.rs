//! What travels on a connection to a next hop: replies and how they are read, commands and
//! how they are written, with a timeout each.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::delivery::RcptResult;

/// A reply from an SMTP server.
pub(super) struct ServerReply {
    pub code: u16,
    /// Every line, without the code.
    pub lines: Vec<String>,
}

impl ServerReply {
    /// The reply as one line of text, codes included, for logs and DSNs.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(&format!(
                "{}{}{line}",
                self.code,
                if i + 1 < self.lines.len() { '-' } else { ' ' }
            ));
        }
        text.trim_end().to_string()
    }

    pub fn result(&self) -> RcptResult {
        match self.code {
            200..=399 => RcptResult::Delivered(self.text()),
            400..=499 => RcptResult::Transient(self.text()),
            _ => RcptResult::Permanent(self.text()),
        }
    }

    /// A failure for the recipients it applies to (an odd success code counts as transient).
    pub fn failure(&self) -> RcptResult {
        match self.result() {
            RcptResult::Delivered(text) => RcptResult::Transient(format!("unexpected reply: {text}")),
            other => other,
        }
    }
}

/// Streams the client speaks SMTP over: TCP, then perhaps TLS.
pub(super) trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

pub(super) async fn write_all(
    stream: &mut BufReader<Box<dyn Wire>>,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    tokio::time::timeout(timeout, async {
        stream.get_mut().write_all(bytes).await?;
        stream.get_mut().flush().await
    })
    .await
    .map_err(|_| "timed out sending".to_string())?
    .map_err(|e| format!("connection error: {e}"))
}

pub(super) async fn read_reply(
    stream: &mut BufReader<Box<dyn Wire>>,
    timeout: Duration,
) -> Result<ServerReply, String> {
    let mut code = 0;
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout(timeout, (&mut *stream).take(4096).read_until(b'\n', &mut line))
            .await
            .map_err(|_| "timed out waiting for a reply".to_string())?
            .map_err(|e| format!("connection error: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        if !line.ends_with(b"\n") {
            return Err("reply line too long".into());
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end();
        let this: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| format!("malformed reply {line:?}"))?;
        if lines.is_empty() {
            code = this;
        } else if this != code {
            return Err(format!("reply lines with different codes: {code} then {this}"));
        }
        lines.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(ServerReply { code, lines });
        }
        if lines.len() > 100 {
            return Err("reply of more than 100 lines".into());
        }
    }
}

pub(super) async fn command(
    stream: &mut BufReader<Box<dyn Wire>>,
    line: &str,
    timeout: Duration,
) -> Result<ServerReply, String> {
    write_all(stream, format!("{line}\r\n").as_bytes(), timeout).await?;
    read_reply(stream, timeout).await
}
