//! # Write Sluice mail policies in Rust
//!
//! A Sluice policy is a WebAssembly component that the relay runs at each stage of an SMTP
//! conversation — connect, helo, mail, rcpt, data — to decide whether the conversation may go
//! on. This crate hides the component plumbing: implement [`Policy`], register the type with
//! [`export_policy!`], build for `wasm32-wasip2`, and the relay (or `sluice policy test`) can
//! load the resulting `.wasm`.
//!
//! ## Life of a policy instance
//!
//! The relay creates a fresh instance of the policy for every SMTP session, so nothing a
//! policy keeps in `self` outlives the session or leaks into another one. For each instance
//! it calls [`Policy::init`] with the policy's configuration, then the `on_*` hook of every
//! stage listed in [`Policy::STAGES`], in conversation order. State that must outlive a
//! session (counters, greylisting triplets) goes into the host's key-value store, [`kv`].
//!
//! Every hook returns a [`Decision`]: a [`Verdict`] plus optional spam [`Symbol`]s and, at the
//! data stage, [`Change`]s to the message. A hook that panics, loops past its CPU deadline or
//! exceeds its memory cap is a *fault*, never a verdict: the relay answers with the tenant's
//! failure mode (by default `451 4.3.0`) and never accepts the message because of it.
//!
//! ## Example
//!
//! A policy that rejects mail whose subject shouts, and scores mail without a Date header:
//!
//! ```
//! use sluice_policy::{export_policy, Config, Context, Decision, Message, Policy, Stage};
//!
//! struct NoShouting {
//!     max_caps_ratio: f64,
//! }
//!
//! impl Policy for NoShouting {
//!     const STAGES: &'static [Stage] = &[Stage::Data];
//!
//!     fn init(config: &Config) -> Result<Self, String> {
//!         Ok(Self { max_caps_ratio: config.parse_or("max_caps_ratio", 0.8)? })
//!     }
//!
//!     fn on_data(&mut self, _ctx: &Context, message: &Message) -> Decision {
//!         let mut decision = Decision::no_opinion();
//!         if message.date().is_none() {
//!             decision = decision.symbol("MISSING_DATE", 1.5, None);
//!         }
//!         let subject = message.subject().unwrap_or_default();
//!         let letters = subject.chars().filter(|c| c.is_alphabetic()).count();
//!         let capitals = subject.chars().filter(|c| c.is_uppercase()).count();
//!         if letters >= 10 && capitals as f64 / letters as f64 > self.max_caps_ratio {
//!             return Decision::reject("5.7.1 Please do not shout");
//!         }
//!         decision
//!     }
//! }
//!
//! export_policy!(NoShouting);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and try it on a message with
//! `sluice policy test --policy target/wasm32-wasip2/release/no_shouting.wasm --eml some.eml`.
//!
//! ## What the relay found of the sender
//!
//! At the data stage, [`Message::sender_checks`] gives the relay's SPF, DKIM, DMARC and ARC
//! results ([`SenderChecks`], interface `sluice:policy@0.2.0`); `None` for mail the tenant
//! sends out. A policy that reads them makes the relay check its tenant's inbound mail:
//!
//! ```
//! use sluice_policy::{CheckResult, DmarcPolicy, Decision, Message};
//!
//! fn forged(message: &Message) -> Decision {
//!     match message.sender_checks() {
//!         Some(checks) if checks.dmarc.result == CheckResult::Fail
//!             && checks.dmarc.policy == Some(DmarcPolicy::Reject) =>
//!         {
//!             Decision::no_opinion().symbol("FORGED_SENDER", 6.0, Some(&checks.dmarc.domain))
//!         }
//!         _ => Decision::no_opinion(),
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! ## Policies that learn
//!
//! A policy that keeps a model — a Bayesian filter, say — implements [`Learner`] as well and
//! registers with `export_learning_policy!` from the `sluice-policy-learning` crate instead of
//! [`export_policy!`]: the component then also exports `sluice:policy/learner` (interface
//! 0.2.1), and the relay feeds it messages whose class is known (`sluice learn`, `POST
//! /api/learn`, a release from quarantine, autolearning). The model belongs in the key-value
//! store; [`kv::get_many`] and [`kv::incr_many`] read and move thousands of counters in one
//! call. The shipped `bayes` policy is the worked example.
//!
//! For speed, link it with a linear memory of a few MiB from the start (in
//! `.cargo/config.toml`: `[target.wasm32-wasip2] rustflags = ["-C",
//! "link-arg=--initial-memory=2097152"]`): a policy that grows its memory while handling a
//! message costs the relay a system call for the growth and another to shrink it back when the
//! session ends, for every session.
#![deny(missing_docs)]

extern crate self as sluice_policy;

mod config;
mod decision;
pub mod dns;
mod envelope;
pub mod kv;
mod learn;
pub mod log;
mod message;
pub mod net;
mod sender;

pub use config::Config;
pub use decision::{Change, Decision, InvalidReply, Reply, Symbol, Verdict};
pub use envelope::{Client, Context, EsmtpParam, MailFrom, Recipient, Server, Stage, Tls};
pub use learn::{Class, Learned, Learner};
pub use message::{Attachment, Header, Mailbox, Message};
pub use sender::{ArcCheck, CheckResult, DkimCheck, DmarcCheck, DmarcPolicy, SenderChecks, SpfCheck};

/// Current wall-clock time in milliseconds since the Unix epoch, as the host sees it.
pub fn now_millis() -> i64 {
    __bindings::sluice::policy::host::now_millis()
}

/// A mail policy: one method per SMTP stage, each defaulting to "no opinion".
///
/// The host calls only the hooks of the stages listed in [`Policy::STAGES`]. For each hook the
/// table says when it fires and what the host does with the verdict:
///
/// | verdict | effect |
/// |---|---|
/// | [`Verdict::Continue`] | the next policy in the chain decides |
/// | [`Verdict::Accept`] | the stage passes now; later policies are skipped for this stage only |
/// | [`Verdict::Reject`] | the client gets the 5xx reply |
/// | [`Verdict::Tempfail`] | the client gets the 4xx reply |
/// | [`Verdict::Discard`] | the message is accepted and dropped |
/// | [`Verdict::Quarantine`] | the message is accepted and held in quarantine |
///
/// A `disconnect` flag on the decision closes the connection after the reply. Symbols from
/// every stage add up to the transaction's spam score; the relay's thresholds turn the score
/// into headers, quarantine or rejection once the message has arrived.
pub trait Policy: Sized + 'static {
    /// The stages whose hooks the host calls. A hook that is implemented but not listed here
    /// is never called; listing fewer stages makes the policy cheaper to run.
    const STAGES: &'static [Stage];

    /// Build the policy from its configuration (the `[…config]` table of the relay config or
    /// `--policy-config` in `sluice policy test`). Called for every new instance, before any
    /// hook. An `Err` refuses the configuration: the relay does not load the policy and logs
    /// the message.
    fn init(config: &Config) -> Result<Self, String>;

    /// Fires once per session, with the client's address in `ctx.client` and nothing of HELO,
    /// TLS or the envelope. For the edge's policies and those of a tenant that claims the
    /// client (its outbound networks), that is when the client connects, before the greeting,
    /// and a reject refuses the whole session. For a tenant's inbound mail it is at the
    /// tenant's first recipient in the session (the context is the one the client had at
    /// connect), and a reject refuses that tenant's recipients for the rest of the session.
    fn on_connect(&mut self, ctx: &Context) -> Decision {
        let _ = ctx;
        Decision::no_opinion()
    }

    /// Fires for each greeting (HELO or EHLO); `ctx.client.helo` holds the name. For the edge's
    /// policies and a claiming tenant's, when the client sends it: a reject answers the HELO
    /// and the client may try again. For a tenant's inbound mail, at its first recipient after
    /// the greeting: a reject refuses that tenant's recipients until the client greets again.
    fn on_helo(&mut self, ctx: &Context) -> Decision {
        let _ = ctx;
        Decision::no_opinion()
    }

    /// Fires once per transaction; `ctx.envelope.mail_from` holds the sender and its
    /// parameters. For a claiming tenant's policies, on MAIL FROM: a reject refuses the
    /// sender. For a tenant's inbound mail (and the edge's, for mail a trusted client relays
    /// out), at its first recipient of the transaction: a reject refuses its recipients of this
    /// transaction. The session may start another.
    fn on_mail(&mut self, ctx: &Context) -> Decision {
        let _ = ctx;
        Decision::no_opinion()
    }

    /// Fires on each RCPT TO, with the recipient being judged; `ctx.envelope.recipients` holds
    /// the ones accepted before it. A reject refuses only this recipient.
    fn on_rcpt(&mut self, ctx: &Context, rcpt: &Recipient) -> Decision {
        let _ = (ctx, rcpt);
        Decision::no_opinion()
    }

    /// Fires once the whole message has arrived (after the final dot), with the parsed
    /// message. A reject refuses the message for every recipient; changes (headers,
    /// recipients, route) are applied only if the message is accepted.
    fn on_data(&mut self, ctx: &Context, message: &Message) -> Decision {
        let _ = (ctx, message);
        Decision::no_opinion()
    }
}

/// Register a [`Policy`] type as the component's exports. Use it once per policy crate:
///
/// ```ignore
/// sluice_policy::export_policy!(MyPolicy);
/// ```
///
/// The policy's name and version in `describe` are the crate's `CARGO_PKG_NAME` and
/// `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            $crate::__export_hooks!($policy, SLUICE_POLICY_INSTANCE);
        };
    };
}

/// The hooks of [`export_policy!`], with the instance's policy value in the thread-local
/// `$slot` (the `sluice-policy-learning` crate's macro shares it with the learner). Not part
/// of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_hooks {
    ($policy:ty, $slot:ident) => {
        ::std::thread_local! {
            static $slot: ::std::cell::RefCell<::std::option::Option<$policy>> =
                const { ::std::cell::RefCell::new(::std::option::Option::None) };
        }

        #[allow(dead_code)]
        struct SluiceExports;

        impl $crate::__private::Guest for SluiceExports {
            fn describe() -> $crate::__private::PolicyInfo {
                $crate::__private::describe::<$policy>(
                    ::std::env!("CARGO_PKG_NAME"),
                    ::std::env!("CARGO_PKG_VERSION"),
                )
            }
            fn init(
                config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__private::init::<$policy>(&$slot, config)
            }
            fn on_connect(ctx: $crate::__private::RawContext) -> $crate::__private::RawDecision {
                $crate::__private::on_connect::<$policy>(&$slot, ctx)
            }
            fn on_helo(ctx: $crate::__private::RawContext) -> $crate::__private::RawDecision {
                $crate::__private::on_helo::<$policy>(&$slot, ctx)
            }
            fn on_mail(ctx: $crate::__private::RawContext) -> $crate::__private::RawDecision {
                $crate::__private::on_mail::<$policy>(&$slot, ctx)
            }
            fn on_rcpt(
                ctx: $crate::__private::RawContext,
                rcpt: $crate::__private::RawRecipient,
            ) -> $crate::__private::RawDecision {
                $crate::__private::on_rcpt::<$policy>(&$slot, ctx, rcpt)
            }
            fn on_data(
                ctx: $crate::__private::RawContext,
                message: &$crate::__private::RawMessage,
            ) -> $crate::__private::RawDecision {
                $crate::__private::on_data::<$policy>(&$slot, ctx, message)
            }
        }

        // Exports exist only in the component; native builds (unit tests of a policy's
        // logic) leave them out.
        #[cfg(target_arch = "wasm32")]
        $crate::__bindings::__export_sluice_policy!(SluiceExports with_types_in $crate::__bindings);
    };
}

/// Generated bindings of the `sluice:policy` world. Not part of the API: use the types above.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod __bindings {
    pub use wit_bindgen;
    wit_bindgen::generate!({
        path: "wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "__export_sluice_policy",
        default_bindings_module: "::sluice_policy::__bindings",
        runtime_path: "::sluice_policy::__bindings::wit_bindgen::rt",
    });
}

/// Glue used by [`export_policy!`]. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub use crate::__bindings::exports::sluice::policy::hooks::Guest;
    use crate::__bindings::sluice::policy::types as raw;
    pub use raw::{
        Context as RawContext, Decision as RawDecision, Message as RawMessage, PolicyInfo,
        Recipient as RawRecipient,
    };

    use crate::{Config, Context, Decision, Message, Policy, Recipient};

    /// Per-instance storage of the policy value built by `init`.
    pub type Slot<P> = LocalKey<RefCell<Option<P>>>;

    pub fn describe<P: Policy>(name: &str, version: &str) -> PolicyInfo {
        PolicyInfo {
            name: name.to_string(),
            version: version.to_string(),
            stages: P::STAGES.iter().map(|stage| stage.to_raw()).collect(),
        }
    }

    pub fn init<P: Policy>(slot: &'static Slot<P>, config: Vec<(String, String)>) -> Result<(), String> {
        let policy = P::init(&Config::from_pairs(config))?;
        slot.with(|cell| *cell.borrow_mut() = Some(policy));
        Ok(())
    }

    /// Run `hook` on the instance's policy value. A hook called before `init` (a host bug)
    /// answers "no opinion" rather than trapping.
    fn with_policy<P: Policy>(slot: &'static Slot<P>, hook: impl FnOnce(&mut P) -> Decision) -> RawDecision {
        slot.with(|cell| match cell.borrow_mut().as_mut() {
            Some(policy) => hook(policy),
            None => Decision::no_opinion(),
        })
        .into_raw()
    }

    pub fn on_connect<P: Policy>(slot: &'static Slot<P>, ctx: RawContext) -> RawDecision {
        let ctx = Context::from_raw(ctx);
        with_policy(slot, |policy: &mut P| policy.on_connect(&ctx))
    }

    pub fn on_helo<P: Policy>(slot: &'static Slot<P>, ctx: RawContext) -> RawDecision {
        let ctx = Context::from_raw(ctx);
        with_policy(slot, |policy: &mut P| policy.on_helo(&ctx))
    }

    pub fn on_mail<P: Policy>(slot: &'static Slot<P>, ctx: RawContext) -> RawDecision {
        let ctx = Context::from_raw(ctx);
        with_policy(slot, |policy: &mut P| policy.on_mail(&ctx))
    }

    pub fn on_rcpt<P: Policy>(slot: &'static Slot<P>, ctx: RawContext, rcpt: RawRecipient) -> RawDecision {
        let ctx = Context::from_raw(ctx);
        let rcpt = Recipient::from_raw(rcpt);
        with_policy(slot, |policy: &mut P| policy.on_rcpt(&ctx, &rcpt))
    }

    pub fn on_data<P: Policy>(slot: &'static Slot<P>, ctx: RawContext, message: &RawMessage) -> RawDecision {
        let ctx = Context::from_raw(ctx);
        let message = Message::new(message);
        with_policy(slot, |policy: &mut P| policy.on_data(&ctx, &message))
    }

    /// Run `lesson` on the instance's policy value (the learner's calls). Called before
    /// `init` (a host bug), it answers with an error rather than trapping.
    pub fn learn<P: Policy, R>(
        slot: &'static Slot<P>,
        ctx: RawContext,
        message: &RawMessage,
        lesson: impl FnOnce(&mut P, &Context, &Message<'_>) -> Result<R, String>,
    ) -> Result<R, String> {
        let ctx = Context::from_raw(ctx);
        let message = Message::new(message);
        slot.with(|cell| match cell.borrow_mut().as_mut() {
            Some(policy) => lesson(policy, &ctx, &message),
            None => Err("learner called before init".to_string()),
        })
    }
}
