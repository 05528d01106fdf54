//! Where a recipient's copy goes: a policy's named next hop, its tenant's next hop, the
//! smarthost, or its domain's mail exchangers (RFC 5321 §5.1).

use std::path::PathBuf;

use super::client::{Peer, Transaction};
use super::{Context, Outbound, RcptResult};
use crate::config::{NextHop, TlsMode};
use crate::dns::MxAnswer;
use crate::spool::QueuedMessage;
use crate::tenants::Snapshot;

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Target {
    /// An SMTP or LMTP server, as configured.
    Server(Peer),
    /// A local Maildir tree.
    Maildir(PathBuf),
    /// The MX hosts of this domain.
    Mx(String),
}

impl Target {
    /// The name its concurrency limit goes by (Maildir delivery has none).
    pub(super) fn destination(&self) -> Option<String> {
        match self {
            Target::Server(peer) => Some(peer.to_string()),
            Target::Maildir(_) => None,
            Target::Mx(domain) => Some(format!("mx:{domain}")),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Server(peer) => write!(f, "{peer}"),
            Target::Maildir(path) => write!(f, "maildir:{}", path.display()),
            Target::Mx(domain) => write!(f, "mx:{domain}"),
        }
    }
}

/// The target of a configured next hop, with its TLS mode, CA file and credentials.
fn hop(
    snapshot: &Snapshot,
    next_hop: &NextHop,
    tls: TlsMode,
    ca_file: Option<&PathBuf>,
    auth_file: Option<&PathBuf>,
) -> Target {
    let config = &snapshot.config;
    let (endpoint, lmtp) = match next_hop.server() {
        Ok(server) => server,
        Err(maildir) => return Target::Maildir(config.resolve(maildir)),
    };
    Target::Server(Peer {
        endpoint,
        lmtp,
        tls,
        ca_file: ca_file.map(|f| config.resolve(f)),
        auth_file: auth_file.map(|f| config.resolve(f)),
    })
}

pub(super) fn route(snapshot: &Snapshot, envelope: &QueuedMessage, address: &str) -> Target {
    let config = &snapshot.config.delivery;
    if let Some(name) = &envelope.route {
        if let Some(next) = config.next_hops.get(name) {
            return hop(snapshot, next, TlsMode::Opportunistic, None, None);
        }
        tracing::warn!(tenant = %envelope.tenant, id = %envelope.id, route = %name, "a policy routed to an unknown next hop; using the normal route");
    }
    let domain = address.rsplit_once('@').map(|(_, d)| d.to_lowercase()).unwrap_or_default();
    if let Some(tenant) = snapshot.tenant_of_domain(&domain)
        && let Some(next) = &tenant.next_hop
    {
        let t = snapshot.config.tenant(&tenant.name);
        let tls = t.map(|t| t.next_hop_tls).unwrap_or_default();
        return hop(snapshot, next, tls, t.and_then(|t| t.next_hop_ca_file.as_ref()), None);
    }
    match &config.smarthost {
        Some(next) => hop(
            snapshot,
            next,
            config.smarthost_tls,
            config.smarthost_ca_file.as_ref(),
            config.smarthost_auth_file.as_ref(),
        ),
        None => Target::Mx(domain),
    }
}

/// Deliver to a domain's mail exchangers, most preferred first (RFC 5321 §5.1): a null MX
/// or a domain that does not exist fails for good; a DNS failure or no exchanger answering
/// is transient.
pub(super) async fn mx_deliver(
    context: &Context,
    outbound: &Outbound,
    domain: &str,
    port: u16,
    tx: &Transaction<'_>,
) -> Vec<RcptResult> {
    let all = |r: RcptResult| tx.recipients.iter().map(|_| r.clone()).collect::<Vec<_>>();
    let hosts = match context.dns.mx(domain).await {
        Ok(MxAnswer::Hosts(hosts)) => hosts,
        Ok(MxAnswer::Implicit) => vec![domain.to_string()],
        Ok(MxAnswer::NullMx) => {
            return all(RcptResult::Permanent(format!("556 5.1.10 {domain} does not accept mail (null MX)")));
        }
        Ok(MxAnswer::NoSuchDomain) => {
            return all(RcptResult::Permanent(format!("550 5.1.2 domain {domain} does not exist")));
        }
        Err(e) => return all(RcptResult::Transient(format!("451 4.4.3 MX lookup for {domain} failed: {e}"))),
    };
    let mut last = format!("451 4.4.1 no mail exchanger of {domain} answered");
    for host in hosts.iter().take(5) {
        // Addresses from the relay's own resolver (the one that gave the MX records).
        let mut addresses = Vec::new();
        for kind in [crate::dns::RecordType::A, crate::dns::RecordType::Aaaa] {
            if let Ok(found) = crate::dns::Resolver::lookup(context.dns.as_ref(), host, kind).await {
                addresses.extend(found);
            }
        }
        if addresses.is_empty() {
            last = format!("451 4.4.4 {host} has no address");
        }
        for address in addresses.iter().take(3) {
            match outbound.pool.deliver(&Peer::smtp(address, port), tx).await {
                Ok(results) => return results,
                Err(e) => last = format!("451 4.4.1 {host} [{address}]:{port}: {e}"),
            }
        }
    }
    all(RcptResult::Transient(last))
}
