//! Who may open a session: at most `server.max_connections` at once in all and
//! `server.max_connections_per_ip` from one address; beyond, `421 4.7.0` and the connection
//! closes. A session holds an [`Admitted`] guard until it ends, which gives its place back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::smtp::reply::{self, Reply};

/// The places of the relay's sessions.
#[derive(Debug)]
pub struct Admission {
    total: usize,
    places: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A session's place, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    _place: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    /// `total` sessions at once.
    pub fn new(total: usize) -> Self {
        Self { total, places: Arc::new(Semaphore::new(total)), per_ip: Arc::default() }
    }

    /// A place for a session from `ip`, or the reply that refuses it.
    pub fn admit(&self, ip: IpAddr, per_ip_limit: usize) -> Result<Admitted, Reply> {
        let place = self.places.clone().try_acquire_owned().map_err(|_| reply::TOO_MANY_CONNECTIONS)?;
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= per_ip_limit {
            return Err(reply::TOO_MANY_CONNECTIONS_FROM_YOU);
        }
        *count += 1;
        Ok(Admitted { _place: place, ip, per_ip: self.per_ip.clone() })
    }

    /// Sessions under way.
    pub fn active(&self) -> usize {
        self.total - self.places.available_permits()
    }

    /// Wait until every session has ended, at most `timeout`; whether they all did.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.total).unwrap_or(u32::MAX);
        tokio::time::timeout(timeout, self.places.acquire_many(all)).await.is_ok_and(|p| p.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_in_all_and_per_address() {
        let admission = Admission::new(3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = admission.admit(a, 2).expect("first");
        let _second = admission.admit(a, 2).expect("second");
        assert_eq!(admission.admit(a, 2).unwrap_err(), reply::TOO_MANY_CONNECTIONS_FROM_YOU);
        let _third = admission.admit(b, 2).expect("another address");
        assert_eq!(admission.admit(b, 2).unwrap_err(), reply::TOO_MANY_CONNECTIONS);
        assert_eq!(admission.active(), 3);
        drop(first);
        assert!(admission.admit(a, 2).is_ok(), "a place given back is taken again");
    }
}
