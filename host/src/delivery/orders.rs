//! What an operator asks of a running relay's queue (the admin API's `/api/queue/…`, which
//! `sluice queue` uses while a relay holds the spool). The delivery task carries the orders
//! out itself, between its own steps: it alone knows which messages an attempt is working on,
//! so an order never races an attempt's rewrite of the same file — a message being attempted
//! is deleted when its attempt ends, and a flush leaves it to the attempt under way.

use std::io;

use tokio::sync::oneshot;

use crate::spool::Store;
use crate::spool::filter::Filter;

/// One order for the delivery task, with where its answer goes.
pub enum Order {
    /// Make every queued message due now; answers how many were made due (those an attempt
    /// is working on are not counted: they are being tried already).
    Flush {
        /// Only the queued messages this filter admits.
        filter: Filter,
        /// How many were made due.
        answer: oneshot::Sender<io::Result<usize>>,
    },
    /// Delete one message from the queue or the quarantine.
    Delete {
        /// Queue id (checked by the caller).
        id: String,
        /// Where it was, and whether the deletion waits for an attempt under way.
        answer: oneshot::Sender<io::Result<Deleted>>,
    },
    /// Hold one queued message (into the quarantine, until released).
    Hold {
        /// Queue id (checked by the caller).
        id: String,
        /// Whether the hold waits for an attempt under way (which may deliver it first).
        answer: oneshot::Sender<io::Result<Held>>,
    },
}

/// Why a held message sits in the quarantine.
pub const HELD: &str = "held by an operator";

/// A message held on an operator's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// An attempt was delivering it: it moves when that attempt ends, if it has recipients
    /// left.
    pub after_attempt: bool,
}

/// A message deleted on an operator's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Where it was.
    pub store: Store,
    /// An attempt was delivering it: its file goes when that attempt ends (the attempt may
    /// still have delivered it to some recipients).
    pub after_attempt: bool,
}
