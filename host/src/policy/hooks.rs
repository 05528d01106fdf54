//! The exports of a policy component (`sluice:policy/hooks`), located once per component and
//! bound to each new instance without checking their types again.
//!
//! wasmtime checks a typed export's signature against the instance every time one is looked
//! up, and the bindings generated for the world look up all eight exports on every
//! instantiation: with the large `context` record that was a tenth of the cost of a fresh
//! instance. Every instance of a loaded policy comes from the same component, so the
//! signatures are checked once, on the instance [`super::engine::PolicyEngine::load`] probes
//! with, and later instances reuse that proof.

use wasmtime::AsContextMut;
use wasmtime::component::{Component, ComponentExportIndex, Func, Instance, Resource, TypedFunc};

use super::bindings::learner;
use super::bindings::types as wit;
use super::message::MessageHandle;

/// The interface every policy exports, in each version the relay links, newest first. The
/// hooks have the same signatures in all: only the imports differ.
pub const HOOKS_INTERFACES: [&str; 3] =
    ["sluice:policy/hooks@0.2.1", "sluice:policy/hooks@0.2.0", "sluice:policy/hooks@0.1.0"];

/// The interface a learning policy exports beside the hooks (0.2.1 and later).
pub const LEARNER_INTERFACES: [&str; 1] = ["sluice:policy/learner@0.2.1"];

type DescribeFn = TypedFunc<(), (wit::PolicyInfo,)>;
type InitFn<'a> = TypedFunc<(&'a [(String, String)],), (Result<(), String>,)>;
type SessionFn<'a> = TypedFunc<(&'a wit::Context,), (wit::Decision,)>;
type RcptFn<'a> = TypedFunc<(&'a wit::Context, &'a wit::Recipient), (wit::Decision,)>;
type DataFn<'a> = TypedFunc<(&'a wit::Context, Resource<MessageHandle>), (wit::Decision,)>;
type LearnFn<'a> = TypedFunc<
    (&'a wit::Context, Resource<MessageHandle>, learner::Class),
    (Result<learner::Learned, String>,),
>;
type ForgetFn<'a> =
    TypedFunc<(&'a wit::Context, Resource<MessageHandle>), (Result<learner::Learned, String>,)>;

/// Where the `learner` exports live in a component that has them.
#[derive(Debug, Clone)]
struct LearnerExports {
    learn: ComponentExportIndex,
    forget: ComponentExportIndex,
}

/// Where each export lives in one component.
#[derive(Debug, Clone)]
pub(crate) struct HookExports {
    describe: ComponentExportIndex,
    init: ComponentExportIndex,
    on_connect: ComponentExportIndex,
    on_helo: ComponentExportIndex,
    on_mail: ComponentExportIndex,
    on_rcpt: ComponentExportIndex,
    on_data: ComponentExportIndex,
    learner: Option<LearnerExports>,
}

impl HookExports {
    /// Find every export, naming the first one missing.
    pub fn locate(component: &Component) -> Result<Self, String> {
        let interface = HOOKS_INTERFACES
            .iter()
            .find_map(|name| component.get_export_index(None, name))
            .ok_or_else(|| format!("exports neither {}", HOOKS_INTERFACES.join(" nor ")))?;
        let func = |name: &str| {
            component.get_export_index(Some(&interface), name).ok_or_else(|| format!("no function `{name}`"))
        };
        let learner = match LEARNER_INTERFACES.iter().find_map(|name| component.get_export_index(None, name))
        {
            None => None,
            Some(interface) => {
                let func = |name: &str| {
                    component
                        .get_export_index(Some(&interface), name)
                        .ok_or_else(|| format!("learner: no function `{name}`"))
                };
                Some(LearnerExports { learn: func("learn")?, forget: func("forget")? })
            }
        };
        Ok(Self {
            describe: func("describe")?,
            init: func("init")?,
            on_connect: func("on-connect")?,
            on_helo: func("on-helo")?,
            on_mail: func("on-mail")?,
            on_rcpt: func("on-rcpt")?,
            on_data: func("on-data")?,
            learner,
        })
    }

    /// Whether the component exports `learner`.
    pub fn learns(&self) -> bool {
        self.learner.is_some()
    }

    /// Check every export's signature on `instance`, an instance of the component these
    /// indices were located in. Only verified exports can be bound to later instances.
    pub fn verify(
        self,
        mut store: impl AsContextMut,
        instance: &Instance,
    ) -> Result<VerifiedExports, String> {
        let mut store = store.as_context_mut();
        let wrong = |name: &str, e: wasmtime::Error| format!("`{name}` has the wrong signature: {e:#}");
        let _: DescribeFn =
            instance.get_typed_func(&mut store, self.describe).map_err(|e| wrong("describe", e))?;
        let _: InitFn<'_> = instance.get_typed_func(&mut store, self.init).map_err(|e| wrong("init", e))?;
        for (name, index) in
            [("on-connect", &self.on_connect), ("on-helo", &self.on_helo), ("on-mail", &self.on_mail)]
        {
            let _: SessionFn<'_> = instance.get_typed_func(&mut store, index).map_err(|e| wrong(name, e))?;
        }
        let _: RcptFn<'_> =
            instance.get_typed_func(&mut store, self.on_rcpt).map_err(|e| wrong("on-rcpt", e))?;
        let _: DataFn<'_> =
            instance.get_typed_func(&mut store, self.on_data).map_err(|e| wrong("on-data", e))?;
        if let Some(learner) = &self.learner {
            let _: LearnFn<'_> =
                instance.get_typed_func(&mut store, learner.learn).map_err(|e| wrong("learn", e))?;
            let _: ForgetFn<'_> =
                instance.get_typed_func(&mut store, learner.forget).map_err(|e| wrong("forget", e))?;
        }
        Ok(VerifiedExports(self))
    }
}

/// Exports whose signatures were checked on an instance of their component.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedExports(HookExports);

impl VerifiedExports {
    /// Whether the component exports `learner`.
    pub fn learns(&self) -> bool {
        self.0.learns()
    }

    /// The exports of `instance`, an instance of the component they were verified on.
    pub fn bind(&self, mut store: impl AsContextMut, instance: &Instance) -> Result<Hooks, String> {
        let exports = &self.0;
        let mut store = store.as_context_mut();
        let mut func = |index: &ComponentExportIndex| {
            instance
                .get_func(&mut store, index)
                .ok_or_else(|| "export vanished from the instance".to_string())
        };
        Ok(Hooks {
            describe: func(&exports.describe)?,
            init: func(&exports.init)?,
            on_connect: func(&exports.on_connect)?,
            on_helo: func(&exports.on_helo)?,
            on_mail: func(&exports.on_mail)?,
            on_rcpt: func(&exports.on_rcpt)?,
            on_data: func(&exports.on_data)?,
            learn: match &exports.learner {
                Some(learner) => Some((func(&learner.learn)?, func(&learner.forget)?)),
                None => None,
            },
        })
    }
}

/// The exports of one instance, callable with their WIT signatures.
///
/// Only [`VerifiedExports::bind`] makes one, from exports [`HookExports::verify`] checked on
/// the same component: that is the invariant the typed views below rely on.
#[derive(Clone, Copy)]
pub(crate) struct Hooks {
    describe: Func,
    init: Func,
    on_connect: Func,
    on_helo: Func,
    on_mail: Func,
    on_rcpt: Func,
    on_data: Func,
    /// `learn` and `forget`, when the component exports `learner`.
    learn: Option<(Func, Func)>,
}

// SAFETY (every `new_unchecked` below): each `Func` comes from `VerifiedExports::bind`, i.e.
// from an instance of a component whose exports `HookExports::verify` checked against exactly
// these signatures (the same type aliases) when the policy was loaded.
// Export types are fixed by the component, and the only resource in the signatures is the
// host-defined `message`, whose type is the same in every instance.
#[allow(unsafe_code)]
impl Hooks {
    pub fn describe(&self) -> DescribeFn {
        unsafe { DescribeFn::new_unchecked(self.describe) }
    }

    pub fn init<'a>(&self) -> InitFn<'a> {
        unsafe { InitFn::new_unchecked(self.init) }
    }

    pub fn on_connect<'a>(&self) -> SessionFn<'a> {
        unsafe { SessionFn::new_unchecked(self.on_connect) }
    }

    pub fn on_helo<'a>(&self) -> SessionFn<'a> {
        unsafe { SessionFn::new_unchecked(self.on_helo) }
    }

    pub fn on_mail<'a>(&self) -> SessionFn<'a> {
        unsafe { SessionFn::new_unchecked(self.on_mail) }
    }

    pub fn on_rcpt<'a>(&self) -> RcptFn<'a> {
        unsafe { RcptFn::new_unchecked(self.on_rcpt) }
    }

    pub fn on_data<'a>(&self) -> DataFn<'a> {
        unsafe { DataFn::new_unchecked(self.on_data) }
    }

    pub fn learn<'a>(&self) -> Option<LearnFn<'a>> {
        self.learn.map(|(learn, _)| unsafe { LearnFn::new_unchecked(learn) })
    }

    pub fn forget<'a>(&self) -> Option<ForgetFn<'a>> {
        self.learn.map(|(_, forget)| unsafe { ForgetFn::new_unchecked(forget) })
    }
}
