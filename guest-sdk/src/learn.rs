//! Learning from mail whose class is known: the [`Learner`] trait, for policies that keep a
//! model (a Bayesian filter) and export `sluice:policy/learner`. Register one with
//! `export_learning_policy!` from the `sluice-policy-learning` crate instead of
//! [`crate::export_policy!`]: the learner export lives in that crate so that policies which do
//! not learn never carry it (a component's exports come from the bindings linked into it).

use crate::{Context, Message, Policy};

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Unwanted mail.
    Spam,
    /// Wanted mail.
    Ham,
}

/// What a lesson did to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Learned {
    /// The message was new to the model and now counts as the class given.
    Learned,
    /// It had been learned as the other class; now it counts as this one.
    Relearned,
    /// It had been learned as this class already: nothing changed.
    AlreadyLearned,
    /// `forget`: it had been learned and no longer counts.
    Forgotten,
    /// `forget`: it had not been learned; nothing changed.
    NotLearned,
    /// Nothing in it to learn from; nothing changed.
    NothingToLearn,
}

/// A policy that learns. The relay calls [`Learner::learn`] with messages whose class is
/// known — from `sluice learn`, `POST /api/learn`, a release from quarantine, autolearning —
/// on an instance made and initialised as for a session (so `self` holds the policy's
/// configuration). The model belongs in the key-value store ([`crate::kv`]): it is then the
/// tenant's, survives restarts, and is shared by relays on one Redis.
pub trait Learner: Policy {
    /// Learn `message` as `class`. Learning the same message twice should count once, and
    /// learning it as the other class should move it there.
    fn learn(&mut self, ctx: &Context, message: &Message<'_>, class: Class) -> Result<Learned, String>;

    /// Unlearn `message`, whichever class it was learned as.
    fn forget(&mut self, ctx: &Context, message: &Message<'_>) -> Result<Learned, String>;
}
