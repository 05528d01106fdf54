//! Where a recipient's copy goes: a policy's named next hop, its tenant's next hop, the
//! smarthost, or its domain's mail exchangers (RFC 5321 §5.1).

use super::client::Transaction;
use super::{Context, Outbound, RcptResult};
use crate::config::NextHop;
use crate::dns::MxAnswer;
use crate::spool::QueuedMessage;
use crate::tenants::Snapshot;

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Target {
    /// A configured next hop.
    Hop(NextHop),
    /// The MX hosts of this domain.
    Mx(String),
}

impl Target {
    /// The name its concurrency limit goes by (Maildir delivery has none).
    pub(super) fn destination(&self) -> Option<String> {
        match self {
            Target::Hop(NextHop::Smtp { host, port }) => Some(format!("{host}:{port}")),
            Target::Hop(NextHop::Maildir(_)) => None,
            Target::Mx(domain) => Some(format!("mx:{domain}")),
        }
    }
}

pub(super) fn route(snapshot: &Snapshot, envelope: &QueuedMessage, address: &str) -> Target {
    let config = &snapshot.config.delivery;
    if let Some(name) = &envelope.route {
        if let Some(hop) = config.next_hops.get(name) {
            return Target::Hop(hop.clone());
        }
        tracing::warn!(tenant = %envelope.tenant, id = %envelope.id, route = %name, "a policy routed to an unknown next hop; using the normal route");
    }
    let domain = address.rsplit_once('@').map(|(_, d)| d.to_lowercase()).unwrap_or_default();
    if let Some(hop) = snapshot.tenant_of_domain(&domain).and_then(|t| t.next_hop.clone()) {
        return Target::Hop(hop);
    }
    match &config.smarthost {
        Some(hop) => Target::Hop(hop.clone()),
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
            match outbound.pool.deliver(address, port, tx).await {
                Ok(results) => return results,
                Err(e) => last = format!("451 4.4.1 {host} [{address}]:{port}: {e}"),
            }
        }
    }
    all(RcptResult::Transient(last))
}
