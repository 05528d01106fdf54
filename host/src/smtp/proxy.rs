//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer in front of
//! the relay sends first, naming the client it stands for. Parsing only; the listener reads
//! it (`listener/proxy.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The twelve bytes a version 2 header begins with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What a version 1 header begins with.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest version 1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// Longest version 2 header accepted: the fixed part, the largest address block (UNIX, 216
/// bytes) and room for the TLVs a balancer adds.
const V2_MAX: usize = 16 + 2048;

/// Whose address a header gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client's, as the balancer saw it.
    Client(SocketAddr),
    /// None (v2 `LOCAL`, v1 `UNKNOWN`, a v2 UNIX or unspecified family): the connection is
    /// the proxy's own.
    Proxy,
}

/// What a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The beginning of a header: read more.
    Incomplete,
    /// A whole header, `usize` bytes long.
    Header(Origin, usize),
    /// Not a valid header, and why.
    Invalid(String),
}

/// Parse the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() { Parsed::Incomplete } else { parse_v2(buf) };
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return if n < V1_PREFIX.len() { Parsed::Incomplete } else { parse_v1(buf) };
    }
    Parsed::Invalid("the connection does not begin with a PROXY header".into())
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let Some(end) = memchr::memmem::find(&buf[..buf.len().min(V1_MAX)], b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid(format!("v1 header longer than {V1_MAX} bytes"))
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..end]) else {
        return Parsed::Invalid("v1 header is not ASCII".into());
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let origin = match fields.as_slice() {
        ["UNKNOWN", ..] => Origin::Proxy,
        [family @ ("TCP4" | "TCP6"), source, _destination, source_port, destination_port] => {
            let v6 = *family == "TCP6";
            let ip = if v6 {
                source.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
            } else {
                source.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
            };
            let Some(ip) = ip else {
                return Parsed::Invalid(format!("v1 header: bad {family} source address {source:?}"));
            };
            let (Some(port), Some(_)) = (v1_port(source_port), v1_port(destination_port)) else {
                return Parsed::Invalid("v1 header: bad port".into());
            };
            Origin::Client(SocketAddr::new(ip, port))
        }
        [family, ..] if !matches!(*family, "TCP4" | "TCP6") => {
            return Parsed::Invalid(format!("v1 header: unknown protocol {family:?}"));
        }
        _ => return Parsed::Invalid("v1 header: wrong number of fields".into()),
    };
    Parsed::Header(origin, end + 2)
}

/// A port of a v1 header: decimal, no leading zero, at most 65535.
fn v1_port(text: &str) -> Option<u16> {
    if text.is_empty()
        || (text.len() > 1 && text.starts_with('0'))
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    text.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid(format!("v2 header: version {version}"));
    }
    let family = buf[13];
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + length;
    if total > V2_MAX {
        return Parsed::Invalid(format!("v2 header: length {length} is too long"));
    }
    let needed = match family {
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        0x00 => 0,
        other => return Parsed::Invalid(format!("v2 header: unknown address family 0x{other:02x}")),
    };
    if length < needed {
        return Parsed::Invalid(format!(
            "v2 header: length {length} is shorter than its addresses ({needed})"
        ));
    }
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let addresses = &buf[16..total];
    let origin = match command {
        // LOCAL: the proxy's own connection (health checks); the addresses are ignored.
        0 => Origin::Proxy,
        1 => match family {
            0x11 => {
                let ip = Ipv4Addr::new(addresses[0], addresses[1], addresses[2], addresses[3]);
                Origin::Client(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([addresses[8], addresses[9]]),
                ))
            }
            0x21 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addresses[..16]);
                let port = u16::from_be_bytes([addresses[32], addresses[33]]);
                Origin::Client(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
            }
            0x12 | 0x22 | 0x32 => return Parsed::Invalid("v2 header: a datagram (UDP) connection".into()),
            // UNIX sockets and the unspecified family name no client address.
            _ => Origin::Proxy,
        },
        other => return Parsed::Invalid(format!("v2 header: unknown command {other}")),
    };
    Parsed::Header(origin, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn version_1() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n";
        let client = SocketAddr::from(([192, 0, 2, 7], 40000));
        assert_eq!(parse(h), Parsed::Header(Origin::Client(client), 44));
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n";
        assert!(
            matches!(parse(h), Parsed::Header(Origin::Client(a), 45) if a.ip() == "2001:db8::7".parse::<IpAddr>().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Header(Origin::Proxy, 15));
        assert_eq!(parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), Parsed::Header(Origin::Proxy, 35));
        // Cut anywhere, it asks for more.
        for cut in 0..h.len() - 1 {
            assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n"[..],
            b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 0025 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 25\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 2\r\n",
            b"PROXY \xff\r\n",
            b"EHLO client.test\r\n",
            b"proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n",
        ] {
            assert!(matches!(parse(bad), Parsed::Invalid(_)), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn version_2() {
        let mut addresses = vec![192, 0, 2, 7, 198, 51, 100, 1];
        addresses.extend_from_slice(&40000u16.to_be_bytes());
        addresses.extend_from_slice(&25u16.to_be_bytes());
        let h = v2(1, 0x11, &addresses);
        assert_eq!(parse(&h), Parsed::Header(Origin::Client(SocketAddr::from(([192, 0, 2, 7], 40000))), 28));
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        // TLVs after the addresses are skipped.
        let mut with_tlv = addresses.clone();
        with_tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        assert!(matches!(parse(&v2(1, 0x11, &with_tlv)), Parsed::Header(Origin::Client(_), 32)));
        let mut six = Vec::new();
        six.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&[0; 16]);
        six.extend_from_slice(&[0x9c, 0x40, 0, 25]);
        assert!(
            matches!(parse(&v2(1, 0x21, &six)), Parsed::Header(Origin::Client(a), 52) if a.port() == 40000)
        );
        assert_eq!(parse(&v2(0, 0x00, &[])), Parsed::Header(Origin::Proxy, 16));
        assert_eq!(parse(&v2(0, 0x11, &addresses)), Parsed::Header(Origin::Proxy, 28));
        assert_eq!(parse(&v2(1, 0x31, &[0; 216])), Parsed::Header(Origin::Proxy, 232));
        // Bad: a length shorter than the family's addresses, an unknown family or command, a
        // version other than 2, datagrams, an absurd length.
        assert!(matches!(parse(&v2(1, 0x11, &addresses[..8])), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(1, 0x21, &addresses)), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(1, 0x41, &addresses)), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(2, 0x11, &addresses)), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(1, 0x12, &addresses)), Parsed::Invalid(_)));
        let mut version_1 = v2(1, 0x11, &addresses);
        version_1[12] = 0x11;
        assert!(matches!(parse(&version_1), Parsed::Invalid(_)));
        let mut huge = v2(1, 0x11, &addresses);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&huge), Parsed::Invalid(_)));
    }
}
