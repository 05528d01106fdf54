//! A name server on loopback that answers from a fixture ([`super::FixtureResolver`]), so that
//! code asking through a real resolver — the sender checks of `sluice policy test` — gets the
//! fixture's answers over the same path it takes in the relay. `TIMEOUT` names get no answer
//! at all; names not in the fixture get NXDOMAIN; a name the fixture has, asked for a type it
//! has not, gets an empty answer.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType as Wire};
use tokio::net::UdpSocket;

use super::{DnsError, FixtureResolver, RecordType};

/// A running fixture name server; it stops when dropped.
#[derive(Debug)]
pub struct FixtureServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FixtureServer {
    /// Serve `fixture` on a free loopback port.
    pub async fn start(fixture: Arc<FixtureResolver>) -> std::io::Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((length, from)) = socket.recv_from(&mut buffer).await else { continue };
                let Some(reply) = buffer.get(..length).and_then(|query| answer(&fixture, query)) else {
                    continue;
                };
                let _ = socket.send_to(&reply, from).await;
            }
        });
        Ok(Self { address, task })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// The reply to one query, or nothing (a `TIMEOUT` name, or a query that is not one).
fn answer(fixture: &FixtureResolver, query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let mut reply = Message::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_query(question.clone());
    let name = question.name();
    let kind = match question.query_type() {
        Wire::A => Some(RecordType::A),
        Wire::AAAA => Some(RecordType::Aaaa),
        Wire::TXT => Some(RecordType::Txt),
        Wire::MX => Some(RecordType::Mx),
        Wire::PTR => Some(RecordType::Ptr),
        _ => None,
    };
    // The fixture keys PTR records by the address itself.
    let key = match kind {
        Some(RecordType::Ptr) => name.parse_arpa_name().ok()?.addr().to_string(),
        // The labels as they are (a name may hold any byte but `.`).
        _ => super::plain(name),
    };
    match kind.map(|kind| fixture.answer(&key, kind)) {
        Some(Err(DnsError::Timeout)) => return None,
        Some(Ok(values)) => {
            for value in values {
                if let Some(data) = rdata(kind?, &value) {
                    reply.add_answer(Record::from_rdata(name.clone(), 300, data));
                }
            }
        }
        _ if fixture.knows(&key) => {}
        _ => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    reply.to_vec().ok()
}

/// One fixture value as record data (`None` when it does not parse as its type).
fn rdata(kind: RecordType, value: &str) -> Option<RData> {
    let name = |text: &str| Name::from_labels(text.trim_end_matches('.').split('.').map(str::as_bytes)).ok();
    Some(match kind {
        RecordType::A => RData::A(A(value.parse::<Ipv4Addr>().ok()?)),
        RecordType::Aaaa => RData::AAAA(AAAA(value.parse::<Ipv6Addr>().ok()?)),
        RecordType::Mx => {
            let (preference, host) = value.split_once(char::is_whitespace)?;
            let host = host.trim();
            let exchange = if host == "." { Name::root() } else { name(host)? };
            RData::MX(MX::new(preference.parse().ok()?, exchange))
        }
        RecordType::Ptr => RData::PTR(PTR(name(value)?)),
        // A TXT string longer than 255 bytes is sent as several, as zone files do.
        RecordType::Txt if value.is_empty() => RData::TXT(TXT::new(vec![String::new()])),
        RecordType::Txt => RData::TXT(TXT::new(
            value.as_bytes().chunks(255).map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect(),
        )),
    })
}
