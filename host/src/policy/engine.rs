//! The one wasmtime engine of the process and the loading of policy components.
//!
//! Loading goes: read the file → compile (or take the precompiled copy from the cache, keyed
//! by content hash and engine configuration) → link against the host imports (`InstancePre`,
//! which also proves the component speaks our WIT version) → instantiate once to call
//! `describe` and `init` with its configuration. Only a policy that passes every step becomes
//! a [`LoadedPolicy`]; any failure is a [`LoadError`] naming the file and the cause.
//!
//! Around it: [`super::ticker`] bounds CPU time per call, [`super::cache`] keeps compiled code,
//! [`super::loaded`] holds what a load yields and the warm-instance pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::LearningPolicy as PolicyWorld;
use super::cache::{FunctionCache, cached_path, compile, default_cache_dir};
use super::context::{Stage, StageSet};
use super::hooks::HookExports;
use super::instance::{Fault, HostState, PolicyInstance};
use super::loaded::PolicyIo;
pub use super::loaded::{LoadedPolicy, MAX_WARM_INSTANCES};
use super::prepared::{Budget, Prepared};
use super::ticker::{EpochTicker, TickerGuard};
use super::{HostServices, PolicyLimits};

/// Largest linear memory any policy may be given; per-policy caps must stay below.
pub const MAX_MEMORY_CAP: usize = 1 << 30;

/// How the engine is built.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Policy instances alive at once (the pooling allocator's slots).
    pub max_instances: u32,
    /// Where compiled code is cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Epoch tick: the granularity of CPU deadlines.
    pub tick: Duration,
    /// Keep a second, baseline compiler (Winch) for [`PolicyEngine::load_quickly`]: a policy
    /// whose optimised code is not in the cache yet is compiled by it in a fraction of the
    /// time, so a reload takes effect at once; the optimised code follows in the background.
    pub baseline_tier: bool,
    /// Fresh instances made ahead of sessions, all policies together (0: none; each session
    /// makes its own while it waits). See [`super::prepared`].
    pub prepared_instances: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            cache_dir: default_cache_dir(),
            tick: Duration::from_millis(5),
            baseline_tier: false,
            prepared_instances: 0,
        }
    }
}

/// Which compiler made a loaded policy's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeTier {
    /// Cranelift, optimising: what policies normally run on.
    Optimized,
    /// Winch, the baseline compiler: compiles several times faster, runs slower; used
    /// between a reload and the moment the optimised code is ready.
    Baseline,
}

impl CodeTier {
    /// `optimized` or `baseline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Optimized => "optimized",
            Self::Baseline => "baseline",
        }
    }
}

/// Why a policy could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// File.
        file: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a valid WebAssembly component.
    #[error("{file}: not a valid WebAssembly component: {cause}")]
    Invalid {
        /// File.
        file: PathBuf,
        /// Cause.
        cause: String,
    },
    /// Imports the host cannot satisfy: another WIT version or unknown interfaces.
    #[error(
        "{file}: does not match the host interface sluice:policy@0.2.1 (or 0.2.0, 0.1.0): built for another WIT version, or imports something the host does not provide: {cause}"
    )]
    Link {
        /// File.
        file: PathBuf,
        /// Cause.
        cause: String,
    },
    /// Lacks the exports of the policy world.
    #[error("{file}: missing or wrong exports of sluice:policy/hooks (or learner): {cause}")]
    Exports {
        /// File.
        file: PathBuf,
        /// Cause.
        cause: String,
    },
    /// `describe` failed or answered nonsense.
    #[error("{file}: describe failed: {cause}")]
    Describe {
        /// File.
        file: PathBuf,
        /// Cause.
        cause: String,
    },
    /// `init` refused the configuration or faulted.
    #[error("{file}: policy `{policy}` refused its configuration: {cause}")]
    Init {
        /// File.
        file: PathBuf,
        /// Policy name.
        policy: String,
        /// Cause.
        cause: String,
    },
    /// The limits asked for are beyond what the engine allows.
    #[error("{file}: {cause}")]
    Limits {
        /// File.
        file: PathBuf,
        /// Cause.
        cause: String,
    },
}

/// What to load: a component file, its configuration and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// Path of the `.wasm`.
    pub path: PathBuf,
    /// Name to log the policy under; defaults to the name from `describe`.
    pub name: Option<String>,
    /// Key/value configuration passed to `init` and `config-get`.
    pub config: Vec<(String, String)>,
    /// Per-call limits.
    pub limits: PolicyLimits,
}

impl PolicySpec {
    /// A spec with default limits and no configuration.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), name: None, config: Vec::new(), limits: PolicyLimits::default() }
    }
}

/// The process's policy engine: one wasmtime `Engine`, one `Linker`, the compile cache (and,
/// when asked for, a baseline-compiler engine for fast reloads).
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<HostState>,
    baseline: Option<(Engine, Linker<HostState>)>,
    options: EngineOptions,
    ticker: Arc<TickerGuard>,
    prepared: Arc<Budget>,
}

/// A linker with WASI (deny-by-default, see [`super::instance`]) and the host imports.
fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| anyhow::anyhow!("cannot link WASI: {e}"))?;
    PolicyWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
        .map_err(|e| anyhow::anyhow!("cannot link host imports: {e}"))?;
    super::bindings::v0_1::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
        .map_err(|e| anyhow::anyhow!("cannot link the host imports of interface 0.1.0: {e}"))?;
    Ok(linker)
}

/// Whether `component` imports `message.sender-checks` (interface 0.2.0 and later): only
/// then is its tenant's mail checked for its sake.
fn imports_sender_checks(component: &wasmtime::component::Component, engine: &Engine) -> bool {
    use wasmtime::component::types::ComponentItem;
    component.component_type().imports(engine).any(|(name, item)| {
        name.starts_with("sluice:policy/types@")
            && match item.ty {
                ComponentItem::ComponentInstance(instance) => {
                    instance.exports(engine).any(|(export, _)| export == "[method]message.sender-checks")
                }
                _ => false,
            }
    })
}

/// What both engines share: components, epoch deadlines, stack limits.
fn base_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_component_model(true)
        .max_wasm_stack(1 << 20)
        .async_stack_size(2 << 20);
    config
}

/// The baseline engine: Winch, instances allocated on demand (it only runs a policy for the
/// moments until the optimised code replaces it), the same deadlines and stack limits.
fn baseline_engine() -> anyhow::Result<Engine> {
    let mut config = base_config();
    config.strategy(wasmtime::Strategy::Winch);
    Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot build the baseline wasm engine: {e}"))
}

impl PolicyEngine {
    /// Build the engine: pooling allocator, epoch interruption, async calls.
    pub fn new(options: EngineOptions) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        let n = options.max_instances.max(1);
        pool.total_component_instances(n)
            // Components made by other languages' toolchains link several core modules: a
            // componentize-py component has 38 core instances.
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            // A live instance keeps its fiber stack between calls: one per instance, or idle
            // sessions holding instances would run out of stacks long before connections.
            .total_stacks(n)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_memory_size(MAX_MEMORY_CAP)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto);

        let mut config = base_config();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // With a baseline tier, optimised code is compiled in the background while the
            // relay runs: on one thread, so that it leaves the other cores (and the shared
            // compile thread pool the baseline compiler needs for the next reload) free.
            .parallel_compilation(!options.baseline_tier);
        // Functions already compiled (in an earlier version of a policy, or in another policy:
        // they share the standard library and the SDK) are not compiled again: a new version
        // of a policy compiles only what changed, which is what makes its reload fast.
        config
            .enable_incremental_compilation(Arc::new(FunctionCache::default()))
            .map_err(|e| anyhow::anyhow!("cannot enable incremental compilation: {e}"))?;
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot build the wasm engine: {e}"))?;
        let main_linker = linker(&engine)?;
        let baseline = match options.baseline_tier {
            true => {
                let engine = baseline_engine()?;
                let linker = linker(&engine)?;
                Some((engine, linker))
            }
            false => None,
        };

        let engines: Vec<Engine> =
            std::iter::once(engine.clone()).chain(baseline.as_ref().map(|(e, _)| e.clone())).collect();
        let ticker = EpochTicker::start(options.tick, engines)?;
        let prepared = Budget::new(options.prepared_instances);
        Ok(Self { engine, linker: main_linker, baseline, options, ticker, prepared })
    }

    /// Prepared instances held now, all policies together.
    pub fn prepared_instances(&self) -> usize {
        self.prepared.held()
    }

    /// Load, link, describe and initialise one policy for `tenant`, with optimised code.
    pub async fn load(
        &self,
        spec: &PolicySpec,
        tenant: &str,
        services: HostServices,
    ) -> Result<Arc<LoadedPolicy>, LoadError> {
        self.load_tier(spec, tenant, services, false).await
    }

    /// Like [`Self::load`], but when the optimised code of this file is not in the compile
    /// cache and the engine has a baseline tier, compile with the baseline compiler (several
    /// times faster). The caller replaces the result with [`Self::load`]'s once that is ready.
    pub async fn load_quickly(
        &self,
        spec: &PolicySpec,
        tenant: &str,
        services: HostServices,
    ) -> Result<Arc<LoadedPolicy>, LoadError> {
        self.load_tier(spec, tenant, services, true).await
    }

    /// Whether the optimised code for content `hash` is in the on-disk compile cache.
    fn optimized_cached(&self, hash: &str) -> bool {
        self.options.cache_dir.as_deref().is_some_and(|dir| cached_path(dir, &self.engine, hash).is_file())
    }

    async fn load_tier(
        &self,
        spec: &PolicySpec,
        tenant: &str,
        services: HostServices,
        quickly: bool,
    ) -> Result<Arc<LoadedPolicy>, LoadError> {
        let file = spec.path.clone();
        if spec.limits.memory_bytes > MAX_MEMORY_CAP {
            return Err(LoadError::Limits {
                file,
                cause: format!(
                    "memory cap {} exceeds the engine maximum {MAX_MEMORY_CAP}",
                    spec.limits.memory_bytes
                ),
            });
        }
        let bytes =
            tokio::fs::read(&file).await.map_err(|source| LoadError::Read { file: file.clone(), source })?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let (mut engine, mut linker, mut code) = match &self.baseline {
            Some((engine, linker)) if quickly && !self.optimized_cached(&hash) => {
                (engine, linker, CodeTier::Baseline)
            }
            _ => (&self.engine, &self.linker, CodeTier::Optimized),
        };

        // Compilation is CPU-bound (milliseconds to seconds): keep it off the async workers.
        let bytes = Arc::new(bytes);
        let compiled = loop {
            let compiler = engine.clone();
            // Baseline code is not written to the cache: it only bridges the time until the
            // optimised code is ready.
            let cache_dir = match code {
                CodeTier::Optimized => self.options.cache_dir.clone(),
                CodeTier::Baseline => None,
            };
            let (hash, path, bytes) = (hash.clone(), file.clone(), bytes.clone());
            let compiled = tokio::task::spawn_blocking(move || {
                compile(&compiler, cache_dir.as_deref(), &bytes, &hash, &path)
            })
            .await
            .map_err(|e| LoadError::Invalid {
                file: spec.path.clone(),
                cause: format!("compiler task failed: {e}"),
            })?;
            match compiled {
                // What the baseline compiler does not support on this host (a proposal, or
                // vector instructions without the CPU features it needs) the optimising one
                // may: the policy loads, only not quickly.
                Err(e) if code == CodeTier::Baseline => {
                    tracing::info!(file = %file.display(), error = %e, "the baseline compiler cannot compile this policy; compiling optimised code");
                    (engine, linker, code) = (&self.engine, &self.linker, CodeTier::Optimized);
                }
                other => break other,
            }
        };
        let component = compiled?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link { file: file.clone(), cause: format!("{e:#}") })?;
        let exports = HookExports::locate(&component)
            .map_err(|cause| LoadError::Exports { file: file.clone(), cause })?;
        let reads_sender_checks = imports_sender_checks(&component, engine);

        let provisional_name = spec.name.clone().unwrap_or_else(|| {
            file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "policy".into())
        });
        let io_named = |policy: String| {
            Arc::new(PolicyIo {
                policy,
                tenant: tenant.to_string(),
                config: spec.config.clone(),
                limits: spec.limits.clone(),
                services: services.clone(),
                tick: self.options.tick,
                ticker: self.ticker.ticker.clone(),
            })
        };
        let probed = PolicyInstance::probe(engine, &instance_pre, exports, io_named(provisional_name)).await;
        let (mut probe, exports) = match probed {
            Ok(probed) => probed,
            Err(Fault::Exports(cause)) => return Err(LoadError::Exports { file, cause }),
            Err(fault) => return Err(LoadError::Describe { file, cause: fault.to_string() }),
        };
        let info = probe
            .describe()
            .await
            .map_err(|fault| LoadError::Describe { file: file.clone(), cause: fault.to_string() })?;
        let described_name = info.name.trim().to_string();
        if described_name.is_empty()
            || described_name.len() > 64
            || described_name.chars().any(char::is_control)
        {
            return Err(LoadError::Describe { file, cause: format!("invalid policy name {:?}", info.name) });
        }
        let mut stages = StageSet::default();
        for stage in info.stages {
            stages.insert(Stage::from_wit(stage));
        }
        let name = spec.name.clone().unwrap_or(described_name);
        match probe.init().await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(LoadError::Init { file, policy: name, cause: message }),
            Err(fault) => return Err(LoadError::Init { file, policy: name, cause: fault.to_string() }),
        }
        let io = io_named(name.clone());
        let learns = exports.learns();
        Ok(Arc::new(LoadedPolicy {
            name,
            version: info.version,
            stages,
            file,
            hash,
            spec: spec.clone(),
            loaded_at: std::time::SystemTime::now(),
            code,
            pre: instance_pre,
            exports,
            io,
            reads_sender_checks,
            learns,
            breaker: Arc::default(),
            warm: std::sync::Mutex::new(Vec::new()),
            prepared: Prepared::new(self.prepared.clone()),
            engine: engine.clone(),
            _ticker: self.ticker.clone(),
        }))
    }
}
