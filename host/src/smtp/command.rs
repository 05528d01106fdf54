//! SMTP commands (RFC 5321 §4.1), parsed from one line without its CRLF.

use super::envelope::EsmtpParam;

use super::address::{PathError, split_path_and_params};

/// A command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO name`.
    Ehlo(String),
    /// `HELO name`.
    Helo(String),
    /// `MAIL FROM:<path> params` (empty path: the null sender).
    Mail {
        /// Path without brackets.
        path: String,
        /// ESMTP parameters.
        params: Vec<EsmtpParam>,
    },
    /// `RCPT TO:<path> params`.
    Rcpt {
        /// Path without brackets.
        path: String,
        /// ESMTP parameters.
        params: Vec<EsmtpParam>,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY` (answered without looking anything up).
    Vrfy,
    /// `EXPN` (refused).
    Expn,
    /// `HELP`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]`.
    Auth {
        /// Mechanism, upper-cased.
        mechanism: String,
        /// Initial response, if given.
        initial: Option<String>,
    },
    /// `BDAT size [LAST]`.
    Bdat {
        /// Chunk size.
        size: u64,
        /// Last chunk.
        last: bool,
    },
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not a command we know.
    #[error("command not recognized")]
    Unknown,
    /// Known verb, bad arguments.
    #[error("syntax error in parameters: {0}")]
    Syntax(&'static str),
    /// A malformed path.
    #[error("{0}")]
    Path(#[from] PathError),
    /// Not UTF-8.
    #[error("command is not valid UTF-8")]
    Encoding,
}

/// Parse one command line (CRLF already removed).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Encoding)?;
    let (verb, arg) = match line.split_once(' ') {
        Some((v, a)) => (v, a),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_arg = |cmd: Command| {
        if arg.trim().is_empty() { Ok(cmd) } else { Err(CommandError::Syntax("no arguments allowed")) }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            let name = arg.trim();
            if name.is_empty() || name.contains(' ') {
                return Err(CommandError::Syntax("a domain name or address literal is required"));
            }
            Ok(if verb == "EHLO" { Command::Ehlo(name.to_string()) } else { Command::Helo(name.to_string()) })
        }
        "MAIL" => {
            let rest =
                strip_keyword(arg, "FROM:").ok_or(CommandError::Syntax("expected MAIL FROM:<address>"))?;
            let (path, params) = split_path_and_params(rest)?;
            Ok(Command::Mail { path, params })
        }
        "RCPT" => {
            let rest = strip_keyword(arg, "TO:").ok_or(CommandError::Syntax("expected RCPT TO:<address>"))?;
            let (path, params) = split_path_and_params(rest)?;
            if path.is_empty() {
                return Err(CommandError::Syntax("a recipient is required"));
            }
            Ok(Command::Rcpt { path, params })
        }
        "DATA" => no_arg(Command::Data),
        "RSET" => no_arg(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(Command::StartTls),
        "AUTH" => {
            let mut words = arg.split(' ').filter(|w| !w.is_empty());
            let mechanism =
                words.next().ok_or(CommandError::Syntax("a mechanism is required"))?.to_ascii_uppercase();
            let initial = words.next().map(str::to_string);
            if words.next().is_some() {
                return Err(CommandError::Syntax("too many arguments"));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        "BDAT" => {
            let mut words = arg.split(' ').filter(|w| !w.is_empty());
            let size = words
                .next()
                .and_then(|w| w.parse::<u64>().ok())
                .ok_or(CommandError::Syntax("a chunk size is required"))?;
            let last = match words.next() {
                None => false,
                Some(w) if w.eq_ignore_ascii_case("LAST") => true,
                Some(_) => return Err(CommandError::Syntax("expected LAST")),
            };
            Ok(Command::Bdat { size, last })
        }
        _ => Err(CommandError::Unknown),
    }
}

/// `FROM:` / `TO:` case-insensitively, allowing the common (non-RFC) space after the colon.
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword).then(|| arg[keyword.len()..].trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse(b"ehlo client.example").unwrap(), Command::Ehlo("client.example".into()));
        assert_eq!(
            parse(b"MAIL FROM:<a@b.example> SIZE=10").unwrap(),
            Command::Mail {
                path: "a@b.example".into(),
                params: vec![EsmtpParam { name: "SIZE".into(), value: Some("10".into()) }]
            }
        );
        assert_eq!(parse(b"mail from: <>").unwrap(), Command::Mail { path: String::new(), params: vec![] });
        assert_eq!(
            parse(b"RCPT TO:<c@d.example>").unwrap(),
            Command::Rcpt { path: "c@d.example".into(), params: vec![] }
        );
        assert_eq!(parse(b"BDAT 100 LAST").unwrap(), Command::Bdat { size: 100, last: true });
        assert_eq!(
            parse(b"AUTH plain AGFAYg==").unwrap(),
            Command::Auth { mechanism: "PLAIN".into(), initial: Some("AGFAYg==".into()) }
        );
        assert_eq!(parse(b"FOO"), Err(CommandError::Unknown));
        assert!(matches!(parse(b"RCPT TO:<>"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"DATA now"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"EHLO"), Err(CommandError::Syntax(_))));
        assert_eq!(parse(b"\xff\xfe"), Err(CommandError::Encoding));
    }
}
