//! Generated host bindings of the `sluice:policy` world. Private to the policy module: the
//! rest of the relay talks to policies through the hand-written types in this module's
//! parent.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "sluice:policy/types.message": super::message::MessageHandle,
    },
});

pub use sluice::policy::host;
pub use sluice::policy::types;
