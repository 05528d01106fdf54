//! Learning: a message whose class is known — from `sluice learn`, `POST /api/learn`, a
//! release from quarantine, or autolearning — fed to a policy that exports
//! `sluice:policy/learner`. The policy owns its tokenizer and its model (kept in the
//! key-value store under its tenant and name, where the relay's sessions read it); the host
//! only hands it the parsed message, the same resource the data hook reads.

use std::sync::Arc;

use super::bindings::learner as wit_learner;
use super::bindings::types as wit;
use super::context::SessionInfo;
use super::instance::{Fault, PolicyInstance};
use super::loaded::LoadedPolicy;
use super::message::ParsedMessage;

/// Largest message taught: `sluice learn` leaves a larger file out, `POST /api/learn` reads
/// no more of a body.
pub const MAX_LESSON_BYTES: usize = 64 << 20;

/// What to teach a learning policy about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lesson {
    /// It is spam.
    Spam,
    /// It is ham.
    Ham,
    /// Unlearn it, whichever class it was learned as.
    Forget,
}

impl Lesson {
    /// `spam`, `ham` or `forget`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spam => "spam",
            Self::Ham => "ham",
            Self::Forget => "forget",
        }
    }

    /// The lesson named `spam`, `ham` or `forget`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "spam" => Some(Self::Spam),
            "ham" => Some(Self::Ham),
            "forget" => Some(Self::Forget),
            _ => None,
        }
    }
}

/// What a lesson did to the model, as the policy reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Learned {
    /// New to the model; now counts as the class given.
    Learned,
    /// Had been learned as the other class; now counts as this one.
    Relearned,
    /// Had been learned as this class: nothing changed.
    AlreadyLearned,
    /// Unlearned.
    Forgotten,
    /// Was not learned: nothing to unlearn.
    NotLearned,
    /// Nothing in it to learn from.
    NothingToLearn,
}

impl Learned {
    /// Name in the WIT's words: `learned`, `relearned`, `already-learned`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Learned => "learned",
            Self::Relearned => "relearned",
            Self::AlreadyLearned => "already-learned",
            Self::Forgotten => "forgotten",
            Self::NotLearned => "not-learned",
            Self::NothingToLearn => "nothing-to-learn",
        }
    }

    fn from_wit(learned: wit_learner::Learned) -> Self {
        match learned {
            wit_learner::Learned::Learned => Self::Learned,
            wit_learner::Learned::Relearned => Self::Relearned,
            wit_learner::Learned::AlreadyLearned => Self::AlreadyLearned,
            wit_learner::Learned::Forgotten => Self::Forgotten,
            wit_learner::Learned::NotLearned => Self::NotLearned,
            wit_learner::Learned::NothingToLearn => Self::NothingToLearn,
        }
    }
}

/// Why a lesson was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LearnError {
    /// The policy does not export `learner`.
    #[error("policy `{0}` does not learn (it does not export sluice:policy/learner)")]
    NotALearner(String),
    /// The policy faulted (trap, deadline, memory, an unreachable store).
    #[error("policy `{policy}` faulted while learning: {fault}")]
    Fault {
        /// Policy name.
        policy: String,
        /// What went wrong.
        fault: Fault,
    },
    /// The policy answered with an error.
    #[error("policy `{policy}` could not learn the message: {why}")]
    Refused {
        /// Policy name.
        policy: String,
        /// Its reason.
        why: String,
    },
}

/// When a tenant learns on its own (`autolearn`): a message the chain's other policies
/// (those that do not learn) score at or above `spam_score` is learned as spam, at or below
/// `ham_score` as ham. Learning policies' own symbols do not count: a model must not teach
/// itself what it already thinks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Autolearn {
    /// At or above: spam.
    pub spam_score: f64,
    /// At or below: ham.
    pub ham_score: f64,
}

impl Autolearn {
    /// The lesson a judged message gives, if any. `learners` names the learning policies.
    pub fn lesson(&self, symbols: &[super::ScoredSymbol], learners: &[&str]) -> Option<Lesson> {
        let score: f64 =
            symbols.iter().filter(|s| !learners.contains(&s.policy.as_str())).map(|s| s.symbol.score).sum();
        if score >= self.spam_score {
            Some(Lesson::Spam)
        } else if score <= self.ham_score {
            Some(Lesson::Ham)
        } else {
            None
        }
    }
}

/// One instance of a learning policy, kept for a run of lessons (`sluice learn` feeds
/// thousands of messages through one); after a fault the next lesson gets a fresh one.
pub struct Learner {
    policy: Arc<LoadedPolicy>,
    instance: Option<PolicyInstance>,
}

impl Learner {
    /// A learner over `policy`, or why it cannot be one.
    pub fn new(policy: Arc<LoadedPolicy>) -> Result<Self, LearnError> {
        if !policy.learns {
            return Err(LearnError::NotALearner(policy.name.clone()));
        }
        Ok(Self { policy, instance: None })
    }

    /// The policy it teaches.
    pub fn policy(&self) -> &LoadedPolicy {
        &self.policy
    }

    /// Teach one message. `session` is where it came in, when known (a message from a file,
    /// a queue or a quarantine has none: the policy sees an empty client address).
    pub async fn learn(
        &mut self,
        message: Arc<ParsedMessage>,
        lesson: Lesson,
        session: Option<&SessionInfo>,
    ) -> Result<Learned, LearnError> {
        let policy = self.policy.name.clone();
        let fault = |fault: Fault| LearnError::Fault { policy: policy.clone(), fault };
        let mut instance = match self.instance.take() {
            Some(instance) => instance,
            None => self.policy.instantiate().await.map_err(fault)?,
        };
        let ctx = context(&self.policy.io.tenant, session);
        let class = match lesson {
            Lesson::Spam => Some(wit_learner::Class::Spam),
            Lesson::Ham => Some(wit_learner::Class::Ham),
            Lesson::Forget => None,
        };
        let answer = instance.call_learner(&ctx, &message, class).await.map_err(fault)?;
        self.instance = Some(instance);
        answer.map(Learned::from_wit).map_err(|why| LearnError::Refused { policy, why })
    }
}

/// The context a lesson is given: the session's when known, else the tenant alone.
fn context(tenant: &str, session: Option<&SessionInfo>) -> wit::Context {
    if let Some(session) = session {
        return session.to_wit();
    }
    wit::Context {
        tenant: tenant.to_string(),
        transaction_id: String::new(),
        client: wit::ClientInfo {
            ip: String::new(),
            port: 0,
            reverse_dns: None,
            helo: None,
            tls: None,
            authenticated_user: None,
        },
        server: wit::ServerInfo { listener: String::new(), hostname: String::new() },
        envelope: wit::Envelope { mail_from: None, recipients: Vec::new() },
    }
}
