//! One whole SMTP transaction run through a chain without a network: connect, helo, mail,
//! each rcpt, data — in the order and with the rules the relay applies. `sluice policy test`
//! and the tests use it; the relay drives the same [`ChainSession`] and [`Transaction`] one
//! command at a time.

use std::net::IpAddr;
use std::sync::Arc;

use super::chain::{Chain, ChainSession, Judgement, StageInput, StageResult, Transaction};
use super::context::{EnvelopeAddress, SessionInfo, Stage};
use super::decision::Verdict;
use super::message::ParsedMessage;

/// The client side of a simulated transaction.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Client address.
    pub client_ip: IpAddr,
    /// HELO name.
    pub helo: String,
    /// MAIL FROM (empty for the null sender).
    pub from: String,
    /// RCPT TO addresses.
    pub to: Vec<String>,
    /// SMTP AUTH identity.
    pub authenticated_user: Option<String>,
    /// Identifier for logs.
    pub transaction_id: String,
}

/// What one recipient got at RCPT.
#[derive(Debug, Clone)]
pub struct RecipientFate {
    /// Address.
    pub address: String,
    /// The rcpt stage's verdict.
    pub verdict: Verdict,
}

/// Everything that happened.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Each stage's result, in order (rcpt once per recipient).
    pub stages: Vec<StageResult>,
    /// Per-recipient verdicts.
    pub recipients: Vec<RecipientFate>,
    /// The judgement.
    pub judgement: Judgement,
}

/// Run `message` from `envelope` through `chain`, in a fresh session.
pub async fn simulate(chain: &Arc<Chain>, envelope: &Envelope, message: &Arc<ParsedMessage>) -> Simulation {
    let mut session = SessionInfo {
        tenant: chain.tenant.clone(),
        transaction_id: envelope.transaction_id.clone(),
        client_ip: envelope.client_ip,
        client_port: 49152,
        reverse_dns: None,
        helo: None,
        tls: None,
        authenticated_user: envelope.authenticated_user.clone(),
        listener: "127.0.0.1:25".into(),
        hostname: "sluice.test".into(),
        mail_from: None,
        recipients: Vec::new(),
    };
    let mut chain_session = ChainSession::new(chain.clone());
    let mut transaction = Transaction::new();
    let mut stages = Vec::new();
    let mut recipients = Vec::new();

    for stage in [Stage::Connect, Stage::Helo, Stage::Mail] {
        match stage {
            Stage::Helo => session.helo = Some(envelope.helo.clone()),
            Stage::Mail => session.mail_from = Some(EnvelopeAddress::plain(envelope.from.clone())),
            _ => {}
        }
        let result = chain_session.run(stage, &session, StageInput::Session).await;
        let settled = transaction.absorb(&result);
        stages.push(result);
        if let Some(judgement) = settled {
            return Simulation { stages, recipients, judgement };
        }
    }

    let mut last_refusal = None;
    for address in &envelope.to {
        let rcpt = EnvelopeAddress::plain(address.clone());
        let result = chain_session.run(Stage::Rcpt, &session, StageInput::Recipient(&rcpt)).await;
        transaction.absorb(&result);
        match &result.verdict {
            Verdict::Reject(_) | Verdict::Tempfail(_) => last_refusal = Some(result.clone()),
            _ => session.recipients.push(rcpt),
        }
        recipients.push(RecipientFate { address: address.clone(), verdict: result.verdict.clone() });
        stages.push(result);
    }
    if session.recipients.is_empty()
        && let Some(judgement) = last_refusal.and_then(|refusal| transaction.no_recipients(&refusal))
    {
        return Simulation { stages, recipients, judgement };
    }

    let result = chain_session.run(Stage::Data, &session, StageInput::Message(message)).await;
    let judgement = transaction.finish(&result, &chain.settings.thresholds);
    stages.push(result);
    Simulation { stages, recipients, judgement }
}
