//! Generated host bindings of the `sluice:policy` world, in both interface versions the
//! relay links: 0.2.1 (the current one, `wit/`; components built against 0.2.0 link against
//! it, the linker matching semver-compatible versions) and 0.1.0 (`wit/0.1.0/`), whose
//! imports are served by the same code (see `host/v0_1.rs`). The current version is bound
//! through the `learning-policy` world, for the types of the optional `learner` export. Private to the policy module: the rest of
//! the relay talks to policies through the hand-written types in this module's parent.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "learning-policy",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "sluice:policy/types.message": super::message::MessageHandle,
    },
});

pub use exports::sluice::policy::learner;
pub use sluice::policy::host;
pub use sluice::policy::types;

/// The bindings of interface version 0.1.0: the same functions without the sender checks.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "policy",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "sluice:policy/types.message": crate::policy::message::MessageHandle,
        },
    });

    pub use sluice::policy::host;
    pub use sluice::policy::types;
}
