//! # The learner export for Sluice policies
//!
//! A policy that learns from mail whose class is known (a Bayesian filter) implements
//! [`sluice_policy::Learner`] beside [`sluice_policy::Policy`] and registers itself with
//! [`export_learning_policy!`] instead of `sluice_policy::export_policy!`. The component then
//! exports `sluice:policy/learner` (interface 0.2.1) beside the hooks, and the relay feeds it
//! messages from `sluice learn`, `POST /api/learn`, releases from quarantine and autolearning.
//!
//! Why a crate of its own: a component's exports are those of the bindings linked into it.
//! Policies that do not learn depend on `sluice-policy` alone and never carry the export.
//!
//! ```ignore
//! use sluice_policy::{Class, Context, Learned, Learner, Message, Policy, Config, Stage};
//!
//! struct Counter;
//! impl Policy for Counter {
//!     const STAGES: &'static [Stage] = &[Stage::Data];
//!     fn init(_: &Config) -> Result<Self, String> { Ok(Counter) }
//! }
//! impl Learner for Counter {
//!     fn learn(&mut self, _: &Context, _: &Message<'_>, class: Class) -> Result<Learned, String> {
//!         let key = if class == Class::Spam { "spam" } else { "ham" };
//!         sluice_policy::kv::incr(key, 1, None).map_err(|e| e.to_string())?;
//!         Ok(Learned::Learned)
//!     }
//!     fn forget(&mut self, _: &Context, _: &Message<'_>) -> Result<Learned, String> {
//!         Ok(Learned::NotLearned)
//!     }
//! }
//! sluice_policy_learning::export_learning_policy!(Counter);
//! ```
#![deny(missing_docs)]

extern crate self as sluice_policy_learning;

/// Register a type that is both a [`sluice_policy::Policy`] and a [`sluice_policy::Learner`]
/// as the component's exports: the hooks and the learner, sharing the instance's value.
#[macro_export]
macro_rules! export_learning_policy {
    ($policy:ty) => {
        const _: () = {
            ::sluice_policy::__export_hooks!($policy, SLUICE_POLICY_INSTANCE);

            #[allow(dead_code)]
            struct SluiceLearner;

            impl $crate::__private::Guest for SluiceLearner {
                fn learn(
                    ctx: ::sluice_policy::__private::RawContext,
                    message: &::sluice_policy::__private::RawMessage,
                    class: $crate::__private::RawClass,
                ) -> ::std::result::Result<$crate::__private::RawLearned, ::std::string::String> {
                    $crate::__private::learn::<$policy>(
                        &SLUICE_POLICY_INSTANCE,
                        ctx,
                        message,
                        ::std::option::Option::Some(class),
                    )
                }
                fn forget(
                    ctx: ::sluice_policy::__private::RawContext,
                    message: &::sluice_policy::__private::RawMessage,
                ) -> ::std::result::Result<$crate::__private::RawLearned, ::std::string::String> {
                    $crate::__private::learn::<$policy>(
                        &SLUICE_POLICY_INSTANCE,
                        ctx,
                        message,
                        ::std::option::Option::None,
                    )
                }
            }

            #[cfg(target_arch = "wasm32")]
    $crate::__bindings::__export_sluice_learning!(SluiceLearner with_types_in $crate::__bindings);
        };
    };
}

/// Generated bindings of the `sluice:policy` `learning` world; its imports are those
/// `sluice-policy` generated. Not part of the API.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "learning",
        with: {
            "sluice:policy/types@0.2.1": ::sluice_policy::__bindings::sluice::policy::types,
        },
        pub_export_macro: true,
        export_macro_name: "__export_sluice_learning",
        default_bindings_module: "::sluice_policy_learning::__bindings",
        runtime_path: "::sluice_policy::__bindings::wit_bindgen::rt",
    });
}

/// Glue used by [`export_learning_policy!`]. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use sluice_policy::__private::{RawContext, RawMessage, Slot};
    use sluice_policy::{Class, Learned, Learner};

    pub use crate::__bindings::exports::sluice::policy::learner::{
        Class as RawClass, Guest, Learned as RawLearned,
    };

    /// `learn` (a class given) or `forget` (none) on the instance's policy value.
    pub fn learn<P: Learner>(
        slot: &'static Slot<P>,
        ctx: RawContext,
        message: &RawMessage,
        class: Option<RawClass>,
    ) -> Result<RawLearned, String> {
        let learned =
            sluice_policy::__private::learn(
                slot,
                ctx,
                message,
                |policy: &mut P, ctx, message| match class {
                    Some(RawClass::Spam) => policy.learn(ctx, message, Class::Spam),
                    Some(RawClass::Ham) => policy.learn(ctx, message, Class::Ham),
                    None => policy.forget(ctx, message),
                },
            )?;
        Ok(match learned {
            Learned::Learned => RawLearned::Learned,
            Learned::Relearned => RawLearned::Relearned,
            Learned::AlreadyLearned => RawLearned::AlreadyLearned,
            Learned::Forgotten => RawLearned::Forgotten,
            Learned::NotLearned => RawLearned::NotLearned,
            Learned::NothingToLearn => RawLearned::NothingToLearn,
        })
    }
}
