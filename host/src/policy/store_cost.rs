//! What a store of its own costs each policy instance: a chain's policies instantiated each
//! in its own store (what sessions get) against all of them in one store, both dropped at
//! once. Neither runs `init` or a hook — that work is the same either way. Measured by
//! `cargo bench -p sluice --bench critical_path -- --stores`.

use std::sync::Arc;

use super::instance::{Fault, PolicyInstance};
use super::loaded::LoadedPolicy;

/// Instantiate every policy of `policies` in a store of its own, then drop them.
#[doc(hidden)]
pub async fn instances_apart(policies: &[Arc<LoadedPolicy>]) -> Result<(), Fault> {
    let mut stores = Vec::with_capacity(policies.len());
    for policy in policies {
        let mut store = PolicyInstance::new_store(&policy.engine, policy.io.clone());
        policy.pre.instantiate_async(&mut store).await.map_err(|e| Fault::Trap(e.to_string()))?;
        stores.push(store);
    }
    drop(stores);
    Ok(())
}

/// Instantiate every policy of `policies` in one store (the first policy's), then drop it.
#[doc(hidden)]
pub async fn instances_together(policies: &[Arc<LoadedPolicy>]) -> Result<(), Fault> {
    let Some(first) = policies.first() else { return Ok(()) };
    let mut store = PolicyInstance::new_store(&first.engine, first.io.clone());
    for policy in policies {
        policy.pre.instantiate_async(&mut store).await.map_err(|e| Fault::Trap(e.to_string()))?;
    }
    drop(store);
    Ok(())
}
