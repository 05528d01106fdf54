//! Whether a recipient exists (`recipients` on a tenant, see [`crate::recipients`]): checked
//! after the cheap RCPT checks and before any of its party's stages.

use super::Conversation;
use super::parties::Then;
use crate::config::WhenUnverified;
use crate::policy::Stage;
use crate::recipients::verify::Answer;
use crate::smtp::EnvelopeAddress;
use crate::smtp::reply;
use crate::smtp::session::Destination;
use crate::tenants::Party;

/// A recipient between its RCPT and its party's stages (while the next hop is asked).
#[derive(Debug)]
pub(super) struct PendingRcpt {
    pub to: EnvelopeAddress,
    pub destination: Destination,
    pub party: Party,
    pub first: bool,
}

impl Conversation {
    /// The recipient exists (or is not checked): its party's stages up to rcpt.
    pub(super) fn rcpt_exists(&mut self, pending: PendingRcpt) {
        let PendingRcpt { to, destination, party, first } = pending;
        let steps = self.catch_up(party, Stage::Rcpt);
        self.run(steps, Then::Rcpt { to, destination, party, first });
    }

    /// The next hop answered about the recipient being verified.
    pub(super) fn verify_done(&mut self, answer: Answer) {
        let Some(pending) = self.verifying.take() else { return };
        let owner = self.snapshot.party(pending.party).clone();
        match answer {
            Answer::Exists => self.rcpt_exists(pending),
            Answer::Unknown(said) => self.recipient_unknown(&pending, &format!("the next hop said: {said}")),
            Answer::Unavailable(why) => {
                let accept = self
                    .snapshot
                    .config
                    .tenant(&owner.name)
                    .is_some_and(|t| t.verify_unavailable == WhenUnverified::Accept);
                tracing::warn!(
                    tenant = %owner.name,
                    recipient = %pending.to.address,
                    reason = %why,
                    accepted = accept,
                    "cannot verify a recipient with the next hop"
                );
                self.gates.event(&owner.name, "recipient_unverified");
                if accept {
                    self.rcpt_exists(pending);
                } else {
                    self.send(&reply::RECIPIENT_UNVERIFIED);
                }
            }
        }
    }

    /// `550 5.1.1`: the recipient does not exist. Logged, counted, and an error of the
    /// session (a client guessing addresses runs into `server.max_errors`).
    pub(super) fn recipient_unknown(&mut self, pending: &PendingRcpt, why: &str) {
        let tenant = self.snapshot.party(pending.party).name.clone();
        tracing::info!(
            tenant = %tenant,
            client = %self.peer(),
            recipient = %pending.to.address,
            reason = %why,
            "recipient unknown"
        );
        self.gates.event(&tenant, "recipient_unknown");
        let step = self.core.error(reply::UNKNOWN_RECIPIENT);
        self.step(step);
    }
}
