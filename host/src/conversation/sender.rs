//! Sender authentication in the conversation: a message from the internet is checked (SPF,
//! DKIM, DMARC, ARC) once, before its data stage, when its tenant adds the
//! `Authentication-Results` field, bounces only authenticated senders, or runs a policy that
//! reads the checks; mail the tenant sends out (trusted network, authenticated user) is
//! signed instead, as it will be delivered.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use super::finish::Body;
use super::parties::Then;
use super::{Action, Conversation, Waiting};
use crate::config::BounceInbound;
use crate::policy::{ParsedMessage, Stage};
use crate::sender::SenderChecks;
use crate::tenants::Party;

/// A message whose sender is to be checked.
#[derive(Clone)]
pub struct SenderRequest {
    /// The client's address.
    pub ip: IpAddr,
    /// Its HELO name.
    pub helo: String,
    /// MAIL FROM (empty for `<>`).
    pub mail_from: String,
    /// The message as received (the relay's own fields removed).
    pub message: Arc<[u8]>,
}

impl std::fmt::Debug for SenderRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderRequest")
            .field("ip", &self.ip)
            .field("helo", &self.helo)
            .field("mail_from", &self.mail_from)
            .field("message_bytes", &self.message.len())
            .finish()
    }
}

impl Conversation {
    /// Check senders even of clients that may relay (`sluice policy test`, whose simulated
    /// client is claimed by the tenant under test through its networks).
    pub fn check_every_sender(mut self) -> Self {
        self.check_every_sender = true;
        self
    }

    /// Whether `party`'s transaction needs its sender checked: mail from the internet whose
    /// tenant adds the field, bounces only authenticated senders, or runs a policy that
    /// reads the checks.
    fn sender_checks_wanted(&self, party: Party) -> bool {
        if self.core.relay_allowed() && !self.check_every_sender {
            return false;
        }
        let tenant = self.snapshot.party(party);
        let bounce = self.snapshot.config.tenant(&tenant.name).map(|t| t.bounce_inbound);
        tenant.authentication_results
            || bounce == Some(BounceInbound::Authenticated)
            || tenant.chain.reads_sender_checks()
    }

    /// A message is in, its owned fields dealt with: check its sender first if that is
    /// wanted, then run the data stage.
    pub(super) fn message_ready(&mut self, body: Vec<u8>) {
        let party = self.transaction.party.unwrap_or(Party::Edge);
        let body: Arc<[u8]> = Arc::from(body);
        if self.sender_checks_wanted(party) {
            let request = SenderRequest {
                ip: self.client.address.ip(),
                helo: self.core.helo().unwrap_or_default().to_string(),
                mail_from: self.core.mail_from().map(|m| m.address.clone()).unwrap_or_default(),
                message: body.clone(),
            };
            self.transaction.unchecked = Some(body);
            self.wait(Action::CheckSender(Box::new(request)), Waiting::Sender);
            return;
        }
        self.run_data_stage(body);
    }

    /// What the checks of the message's sender found.
    pub fn sender_checked(&mut self, checks: SenderChecks) {
        if self.waiting.take() != Some(Waiting::Sender) {
            return;
        }
        let Some(body) = self.transaction.unchecked.take() else { return };
        let party = self.transaction.party.unwrap_or(Party::Edge);
        let tenant = &self.snapshot.party(party).name;
        self.gates.event(tenant, &format!("spf_{}", checks.spf.result.as_str()));
        self.gates.event(tenant, &format!("dmarc_{}", checks.dmarc.result.as_str()));
        self.transaction.sender = Some(Arc::new(checks));
        self.run_data_stage(body);
    }

    fn run_data_stage(&mut self, body: Arc<[u8]>) {
        let party = self.transaction.party.unwrap_or(Party::Edge);
        let message = if self.every_stage || self.snapshot.party(party).chain.hooks(Stage::Data) {
            let parsed = ParsedMessage::parse(body).with_sender(self.transaction.sender.clone());
            Body::Parsed(Arc::new(parsed))
        } else {
            Body::Raw(body)
        };
        self.run(VecDeque::from([(party, Stage::Data)]), Then::Judge { message, data: None });
    }

    /// The fields the relay adds on top of the message for `party` besides Received:
    /// `Authentication-Results` of a checked inbound message.
    pub(super) fn authentication_results(&self, party: Party) -> Option<String> {
        let checks = self.transaction.sender.as_ref()?;
        if !self.snapshot.party(party).authentication_results {
            return None;
        }
        let id = self.snapshot.config.server.authserv_id();
        Some(format!("Authentication-Results: {}\r\n", checks.header_value(id)))
    }

    /// The checks of the current message's sender, if it was checked.
    pub fn sender_checks(&self) -> Option<&Arc<SenderChecks>> {
        self.transaction.sender.as_ref()
    }

    /// `message` (as it will be delivered) signed for `party` when it is mail the party's
    /// tenant sends out and it has a key: its `DKIM-Signature` field on top.
    pub(super) fn signed(&self, party: Party, message: Vec<u8>) -> Vec<u8> {
        if !self.core.relay_allowed() {
            return message;
        }
        let tenant = self.snapshot.party(party);
        let Some(key) = &tenant.dkim else { return message };
        match key.sign(&message) {
            Ok(field) => {
                let mut out = field.into_bytes();
                if !out.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(&message);
                out
            }
            Err(e) => {
                tracing::warn!(id = %self.id, tenant = %tenant.name, domain = key.domain(), error = %e, "DKIM signing failed; sent unsigned");
                message
            }
        }
    }
}
