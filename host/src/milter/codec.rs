//! The Sendmail/Postfix milter protocol (version 6) without I/O: packets from the MTA decoded
//! into [`Command`]s, [`Response`]s encoded into packets.
//!
//! A packet is a 32-bit length in network order (the command byte and the data), the command
//! byte, and the data: strings end with a NUL, numbers are 32 bits (16 for a port) in network
//! order. The MTA speaks first (options negotiation), then one command per event of the SMTP
//! session; most commands want one response, some none (macros, abort, quit).

/// Largest packet taken: Sendmail sends body chunks of at most 64 KiB, Postfix as well;
/// macros and headers are far smaller.
pub const MAX_PACKET: usize = 1 << 20;

/// The protocol version spoken.
pub const VERSION: u32 = 6;

/// Actions a filter may take (`SMFIF_*`), asked for in the negotiation.
pub mod action {
    /// Add header fields.
    pub const ADD_HEADERS: u32 = 0x01;
    /// Add recipients.
    pub const ADD_RCPT: u32 = 0x04;
    /// Remove recipients.
    pub const DEL_RCPT: u32 = 0x08;
    /// Change or delete header fields (and insert them).
    pub const CHANGE_HEADERS: u32 = 0x10;
    /// Quarantine the message.
    pub const QUARANTINE: u32 = 0x20;
}

/// Protocol steps a filter may leave out or not answer (`SMFIP_*`).
pub mod protocol {
    /// No reply to each header field.
    pub const NO_REPLY_HEADER: u32 = 0x80;
    /// No unknown commands.
    pub const NO_UNKNOWN: u32 = 0x100;
    /// No reply to the end of the headers.
    pub const NO_REPLY_EOH: u32 = 0x4_0000;
    /// No reply to each body chunk.
    pub const NO_REPLY_BODY: u32 = 0x8_0000;
    /// Header values keep their leading space.
    pub const HEADER_LEADING_SPACE: u32 = 0x10_0000;
}

/// What the MTA says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: the MTA's version, the actions it allows and the protocol steps it can leave out.
    Negotiate {
        /// Protocol version.
        version: u32,
        /// `SMFIF_*` the MTA allows.
        actions: u32,
        /// `SMFIP_*` the MTA can do.
        protocol: u32,
    },
    /// `D`: macros for the command that follows (its code), as name and value.
    Macros {
        /// The command they are for.
        stage: u8,
        /// Names (`{auth_authen}`, `j`, `i` …) and values.
        pairs: Vec<(String, String)>,
    },
    /// `C`: a client connected.
    Connect {
        /// Its name (or `[address]` when it has none).
        hostname: String,
        /// `4`, `6`, `L` (a socket path) or `U` (unknown).
        family: u8,
        /// Its port.
        port: u16,
        /// Its address (text).
        address: String,
    },
    /// `H`: HELO or EHLO with this name.
    Helo(String),
    /// `M`: MAIL FROM: the path (with its angle brackets) and the ESMTP parameters.
    Mail(Vec<String>),
    /// `R`: RCPT TO, the same way.
    Rcpt(Vec<String>),
    /// `T`: DATA.
    Data,
    /// `L`: one header field: its name and value (raw bytes, folded lines as sent).
    Header {
        /// Name.
        name: String,
        /// Value.
        value: Vec<u8>,
    },
    /// `N`: the end of the headers.
    EndOfHeaders,
    /// `B`: a chunk of the body.
    Body(Vec<u8>),
    /// `E`: the end of the message (with a last chunk, possibly empty).
    EndOfMessage(Vec<u8>),
    /// `A`: the message (transaction) is abandoned; the connection goes on.
    Abort,
    /// `Q`: the connection ends.
    Quit,
    /// `K`: the SMTP connection ended; another begins on this milter connection.
    QuitNewConnection,
    /// `U`: an SMTP command the MTA did not know.
    Unknown(Vec<u8>),
}

/// What the filter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `O`: the version, actions and protocol steps the filter takes.
    Negotiate {
        /// Protocol version.
        version: u32,
        /// `SMFIF_*`.
        actions: u32,
        /// `SMFIP_*`.
        protocol: u32,
    },
    /// `c`: go on.
    Continue,
    /// `a`: accept the rest of this message (or connection) without asking.
    Accept,
    /// `r`: reject with the MTA's own reply.
    Reject,
    /// `t`: tempfail with the MTA's own reply.
    Tempfail,
    /// `d`: accept and drop the message.
    Discard,
    /// `y`: reject or tempfail with this reply (`550 5.7.1 text`).
    ReplyCode(String),
    /// `h`: add a header field at the end of the headers.
    AddHeader {
        /// Name.
        name: String,
        /// Value.
        value: String,
    },
    /// `i`: insert a header field at `index` (0: first).
    InsertHeader {
        /// Position.
        index: u32,
        /// Name.
        name: String,
        /// Value.
        value: String,
    },
    /// `m`: change the `index`th (from 1) field named `name`; an empty value deletes it.
    ChangeHeader {
        /// Occurrence of the name, from 1.
        index: u32,
        /// Name.
        name: String,
        /// New value (empty: delete).
        value: String,
    },
    /// `+`: add a recipient.
    AddRcpt(String),
    /// `-`: remove a recipient.
    DelRcpt(String),
    /// `q`: quarantine the message with this reason.
    Quarantine(String),
}

/// A packet the protocol does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes from the MTA in, commands out.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    /// Take bytes read from the MTA.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole command, if one is here; an error ends the connection.
    pub fn next_command(&mut self) -> Result<Option<Command>, CodecError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let length =
            u32::from_be_bytes([self.buffer[0], self.buffer[1], self.buffer[2], self.buffer[3]]) as usize;
        if length == 0 {
            return Err(CodecError("a packet of length 0".into()));
        }
        if length > MAX_PACKET {
            return Err(CodecError(format!("a packet of {length} bytes (at most {MAX_PACKET})")));
        }
        if self.buffer.len() < 4 + length {
            return Ok(None);
        }
        let parsed = parse(self.buffer[4], &self.buffer[5..4 + length]);
        self.buffer.drain(..4 + length);
        parsed.map(Some)
    }
}

/// The NUL-terminated strings of `data` (a last one without its NUL is taken too).
fn strings(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn parse(code: u8, data: &[u8]) -> Result<Command, CodecError> {
    let short = |what: &str| CodecError(format!("a {what} packet too short"));
    Ok(match code {
        b'O' => Command::Negotiate {
            version: u32_at(data, 0).ok_or_else(|| short("negotiation"))?,
            actions: u32_at(data, 4).ok_or_else(|| short("negotiation"))?,
            protocol: u32_at(data, 8).ok_or_else(|| short("negotiation"))?,
        },
        b'D' => {
            let (&stage, rest) = data.split_first().ok_or_else(|| short("macro"))?;
            let values = strings(rest);
            let pairs =
                values.chunks(2).map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default())).collect();
            Command::Macros { stage, pairs }
        }
        b'C' => {
            let end = data.iter().position(|b| *b == 0).ok_or_else(|| short("connect"))?;
            let hostname = String::from_utf8_lossy(&data[..end]).into_owned();
            let rest = &data[end + 1..];
            let (&family, rest) = rest.split_first().ok_or_else(|| short("connect"))?;
            let (port, address) = match rest.get(..2) {
                Some(port) if family != b'U' => (
                    u16::from_be_bytes([port[0], port[1]]),
                    strings(&rest[2..]).into_iter().next().unwrap_or_default(),
                ),
                _ => (0, String::new()),
            };
            Command::Connect { hostname, family, port, address }
        }
        b'H' => Command::Helo(strings(data).into_iter().next().unwrap_or_default()),
        b'M' => Command::Mail(strings(data)),
        b'R' => Command::Rcpt(strings(data)),
        b'T' => Command::Data,
        b'L' => {
            let end = data.iter().position(|b| *b == 0).ok_or_else(|| short("header"))?;
            let value = &data[end + 1..];
            let value = value.strip_suffix(&[0]).unwrap_or(value);
            Command::Header {
                name: String::from_utf8_lossy(&data[..end]).into_owned(),
                value: value.to_vec(),
            }
        }
        b'N' => Command::EndOfHeaders,
        b'B' => Command::Body(data.to_vec()),
        b'E' => Command::EndOfMessage(data.to_vec()),
        b'A' => Command::Abort,
        b'Q' => Command::Quit,
        b'K' => Command::QuitNewConnection,
        b'U' => Command::Unknown(data.to_vec()),
        other => return Err(CodecError(format!("an unknown command {:?}", char::from(other)))),
    })
}

/// NUL bytes cannot travel inside a string: they end it.
fn text(out: &mut Vec<u8>, value: &str) {
    out.extend(value.bytes().filter(|b| *b != 0));
    out.push(0);
}

impl Response {
    /// The packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let code = match self {
            Response::Negotiate { version, actions, protocol } => {
                for n in [version, actions, protocol] {
                    data.extend_from_slice(&n.to_be_bytes());
                }
                b'O'
            }
            Response::Continue => b'c',
            Response::Accept => b'a',
            Response::Reject => b'r',
            Response::Tempfail => b't',
            Response::Discard => b'd',
            Response::ReplyCode(reply) => {
                text(&mut data, reply);
                b'y'
            }
            Response::AddHeader { name, value } => {
                text(&mut data, name);
                text(&mut data, value);
                b'h'
            }
            Response::InsertHeader { index, name, value } => {
                data.extend_from_slice(&index.to_be_bytes());
                text(&mut data, name);
                text(&mut data, value);
                b'i'
            }
            Response::ChangeHeader { index, name, value } => {
                data.extend_from_slice(&index.to_be_bytes());
                text(&mut data, name);
                text(&mut data, value);
                b'm'
            }
            Response::AddRcpt(rcpt) => {
                text(&mut data, rcpt);
                b'+'
            }
            Response::DelRcpt(rcpt) => {
                text(&mut data, rcpt);
                b'-'
            }
            Response::Quarantine(reason) => {
                text(&mut data, reason);
                b'q'
            }
        };
        let mut packet = Vec::with_capacity(5 + data.len());
        packet.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
        packet.push(code);
        packet.extend_from_slice(&data);
        packet
    }
}

/// A command as the MTA would send it (for tests, the fuzz target and `sluice`'s own
/// checks of the codec).
pub fn encode_command(command: &Command) -> Vec<u8> {
    let mut data = Vec::new();
    let code = match command {
        Command::Negotiate { version, actions, protocol } => {
            for n in [version, actions, protocol] {
                data.extend_from_slice(&n.to_be_bytes());
            }
            b'O'
        }
        Command::Macros { stage, pairs } => {
            data.push(*stage);
            for (name, value) in pairs {
                text(&mut data, name);
                text(&mut data, value);
            }
            b'D'
        }
        Command::Connect { hostname, family, port, address } => {
            text(&mut data, hostname);
            data.push(*family);
            if *family != b'U' {
                data.extend_from_slice(&port.to_be_bytes());
                text(&mut data, address);
            }
            b'C'
        }
        Command::Helo(name) => {
            text(&mut data, name);
            b'H'
        }
        Command::Mail(args) | Command::Rcpt(args) => {
            for arg in args {
                text(&mut data, arg);
            }
            if matches!(command, Command::Mail(_)) { b'M' } else { b'R' }
        }
        Command::Data => b'T',
        Command::Header { name, value } => {
            text(&mut data, name);
            data.extend(value.iter().filter(|b| **b != 0));
            data.push(0);
            b'L'
        }
        Command::EndOfHeaders => b'N',
        Command::Body(chunk) => {
            data.extend_from_slice(chunk);
            b'B'
        }
        Command::EndOfMessage(chunk) => {
            data.extend_from_slice(chunk);
            b'E'
        }
        Command::Abort => b'A',
        Command::Quit => b'Q',
        Command::QuitNewConnection => b'K',
        Command::Unknown(line) => {
            data.extend_from_slice(line);
            b'U'
        }
    };
    let mut packet = Vec::with_capacity(5 + data.len());
    packet.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    packet.push(code);
    packet.extend_from_slice(&data);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_byte_by_byte() {
        let commands = vec![
            Command::Negotiate { version: 6, actions: 0x1ff, protocol: 0x1f_ffff },
            Command::Macros {
                stage: b'C',
                pairs: vec![("j".into(), "mx.test".into()), ("_".into(), "x".into())],
            },
            Command::Connect {
                hostname: "c.test".into(),
                family: b'4',
                port: 4025,
                address: "192.0.2.1".into(),
            },
            Command::Connect { hostname: "unknown".into(), family: b'U', port: 0, address: String::new() },
            Command::Helo("c.test".into()),
            Command::Mail(vec!["<a@b.test>".into(), "SIZE=10".into()]),
            Command::Rcpt(vec!["<c@d.test>".into()]),
            Command::Data,
            Command::Header { name: "Subject".into(), value: b" hi\r\n\tthere".to_vec() },
            Command::EndOfHeaders,
            Command::Body(b"body\r\n".to_vec()),
            Command::EndOfMessage(Vec::new()),
            Command::Abort,
            Command::QuitNewConnection,
            Command::Quit,
        ];
        let bytes: Vec<u8> = commands.iter().flat_map(encode_command).collect();
        let mut decoder = Decoder::default();
        let mut seen = Vec::new();
        for byte in bytes {
            decoder.feed(&[byte]);
            while let Some(command) = decoder.next_command().unwrap() {
                seen.push(command);
            }
        }
        assert_eq!(seen, commands);
    }

    #[test]
    fn bad_packets_are_errors() {
        let mut decoder = Decoder::default();
        decoder.feed(&[0, 0, 0, 0]);
        assert!(decoder.next_command().is_err());
        let mut decoder = Decoder::default();
        decoder.feed(&[0x7f, 0, 0, 0, b'B']);
        assert!(decoder.next_command().unwrap_err().0.contains("at most"));
        let mut decoder = Decoder::default();
        decoder.feed(&[0, 0, 0, 1, b'Z']);
        assert!(decoder.next_command().is_err());
        let mut decoder = Decoder::default();
        decoder.feed(&[0, 0, 0, 3, b'O', 0, 6]);
        assert!(decoder.next_command().is_err());
    }

    #[test]
    fn responses_as_libmilter_writes_them() {
        assert_eq!(Response::Continue.encode(), [0, 0, 0, 1, b'c']);
        assert_eq!(
            Response::ReplyCode("550 5.7.1 no".into()).encode(),
            b"\0\0\0\x0ey550 5.7.1 no\0".to_vec()
        );
        let change = Response::ChangeHeader { index: 2, name: "X-A".into(), value: String::new() }.encode();
        assert_eq!(change, b"\0\0\0\x0am\0\0\0\x02X-A\0\0".to_vec());
    }
}
