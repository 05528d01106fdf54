//! `dns-lookup`: A, AAAA, TXT, MX and PTR records through the relay's resolver, a bounded
//! number per call, each with a timeout, the wait not counted against the CPU deadline.

use crate::dns::{DnsError, RecordType};
use crate::policy::bindings::host::{DnsError as GuestDnsError, DnsType};
use crate::policy::instance::HostState;

pub(super) async fn lookup(
    state: &mut HostState,
    name: &str,
    kind: DnsType,
) -> Result<Vec<String>, GuestDnsError> {
    if state.budget.dns_lookups >= state.io.limits.dns_lookups_per_call {
        return Err(GuestDnsError::BudgetExceeded);
    }
    state.budget.dns_lookups += 1;
    if name.is_empty() || name.len() > 253 {
        return Err(GuestDnsError::Failed("invalid name".into()));
    }
    let kind = match kind {
        DnsType::A => RecordType::A,
        DnsType::Aaaa => RecordType::Aaaa,
        DnsType::Txt => RecordType::Txt,
        DnsType::Mx => RecordType::Mx,
        DnsType::Ptr => RecordType::Ptr,
    };
    let io = state.io.clone();
    let lookup = io.services.resolver.lookup(name, kind);
    match state.budget.wait_on(io.tick, tokio::time::timeout(io.limits.dns_timeout, lookup)).await {
        Err(_) | Ok(Err(DnsError::Timeout)) => Err(GuestDnsError::Timeout),
        Ok(Err(DnsError::NxDomain)) => Err(GuestDnsError::Nxdomain),
        Ok(Err(DnsError::Failed(why))) => Err(GuestDnsError::Failed(why)),
        Ok(Ok(records)) => Ok(records),
    }
}
