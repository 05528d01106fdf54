//! The one wasmtime engine of the process and the loading of policy components.
//!
//! Loading goes: read the file → compile (or take the precompiled copy from the cache, keyed
//! by content hash and engine configuration) → link against the host imports (`InstancePre`,
//! which also proves the component speaks our WIT version) → instantiate once to call
//! `describe` and `init` with its configuration. Only a policy that passes every step becomes
//! a [`LoadedPolicy`]; any failure is a [`LoadError`] naming the file and the cause.
//!
//! A ticker thread advances the engine's epoch; every store counts the ticks its guest runs
//! through, which bounds CPU time per hook call (see [`super::instance`]). It ticks every
//! 5 ms while guest calls keep coming and sleeps once none has run for a second; the first call
//! after that wakes it ([`Clock::running`]). A busy relay wakes it 200 times a second however
//! many calls it makes; an idle one, twenty times.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::Policy as PolicyWorld;
use super::context::{Stage, StageSet};
use super::hooks::{HookExports, VerifiedExports};
use super::instance::{Fault, HostState, PolicyInstance};
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
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            cache_dir: default_cache_dir(),
            tick: Duration::from_millis(5),
            baseline_tier: false,
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

/// `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("sluice"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("sluice"))
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
        "{file}: does not match the host interface sluice:policy@0.1.0 (built for another WIT version, or imports something the host does not provide): {cause}"
    )]
    Link {
        /// File.
        file: PathBuf,
        /// Cause.
        cause: String,
    },
    /// Lacks the exports of the policy world.
    #[error("{file}: missing or wrong exports of sluice:policy/hooks@0.1.0: {cause}")]
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

/// A policy ready to be instantiated for sessions.
pub struct LoadedPolicy {
    /// Name (configured or from `describe`).
    pub name: String,
    /// Version from `describe`.
    pub version: String,
    /// Stages it hooks.
    pub stages: StageSet,
    /// File it was loaded from.
    pub file: PathBuf,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// What it was loaded from (a reload reuses it when the spec and the file's hash match).
    pub spec: PolicySpec,
    /// When it was loaded.
    pub loaded_at: std::time::SystemTime,
    /// Which compiler made its code.
    pub code: CodeTier,
    pre: InstancePre<HostState>,
    exports: VerifiedExports,
    pub(crate) io: Arc<PolicyIo>,
    /// Suspends it after faults in a row (one per loaded policy: a new load starts closed).
    pub breaker: Arc<super::breaker::Breaker>,
    /// Warm instances waiting for the next session (with `sessions_per_instance` above 1).
    warm: std::sync::Mutex<Vec<PolicyInstance>>,
    engine: Engine,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("file", &self.file)
            .finish()
    }
}

/// What every instance of one loaded policy shares: identity, configuration, services.
pub(crate) struct PolicyIo {
    pub policy: String,
    pub tenant: String,
    pub config: Vec<(String, String)>,
    pub limits: PolicyLimits,
    pub services: HostServices,
    pub tick: Duration,
    pub clock: Arc<Clock>,
}

/// How often the sleeping ticker advances the epoch (a safety net: a call that began without
/// [`Clock::running`] still meets its deadline, later).
const IDLE_TICK: Duration = Duration::from_millis(50);

/// How long the ticker keeps its full rate after the last guest call.
const AWAKE_AFTER_CALLS: Duration = Duration::from_secs(1);

/// The epoch ticker's state: calls under way, calls begun, whether the ticker sleeps, and its
/// thread (to wake when a call begins while it sleeps).
pub(crate) struct Clock {
    stop: AtomicBool,
    /// Calls under way: a call longer than [`AWAKE_AFTER_CALLS`] keeps the full rate however
    /// few calls begin meanwhile.
    active: AtomicUsize,
    /// Calls begun: short calls in quick succession may all be over whenever the ticker looks,
    /// but the count has moved.
    calls: AtomicU64,
    asleep: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Clock {
    /// Held for the length of a call into the guest: the epoch ticks at full rate meanwhile.
    /// Wakes the ticker only when it sleeps (no call for a second): a busy relay's calls cost
    /// it no thread wake-up.
    pub(crate) fn running(self: &Arc<Self>) -> Running {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst)
            && self.asleep.swap(false, Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Running(self.clone())
    }

    /// The ticker thread: ticks every `tick` while calls are under way or have been in the last
    /// [`AWAKE_AFTER_CALLS`], else every [`IDLE_TICK`] until a call wakes it.
    fn run(&self, tick: Duration, engines: &[Engine]) {
        let quiet_ticks = (AWAKE_AFTER_CALLS.as_micros() / tick.as_micros().max(1)).max(1);
        let (mut seen, mut quiet) = (self.calls.load(Ordering::Relaxed), 0u128);
        while !self.stop.load(Ordering::Relaxed) {
            let calls = self.calls.load(Ordering::Relaxed);
            if calls != seen || self.active.load(Ordering::Acquire) > 0 {
                (seen, quiet) = (calls, 0);
            } else {
                quiet += 1;
            }
            if quiet > quiet_ticks {
                self.asleep.store(true, Ordering::SeqCst);
                // A call that began between the checks above and the flag finds it set and
                // wakes the thread; one that began before it is seen at the next round.
                if self.active.load(Ordering::SeqCst) == 0 && self.calls.load(Ordering::SeqCst) == seen {
                    std::thread::park_timeout(IDLE_TICK);
                }
                self.asleep.store(false, Ordering::SeqCst);
            } else {
                std::thread::sleep(tick);
            }
            for engine in engines {
                engine.increment_epoch();
            }
        }
    }
}

/// A guest call under way (see [`Clock::running`]).
pub(crate) struct Running(Arc<Clock>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stops the epoch ticker thread when the engine and every policy loaded from it are gone.
struct Ticker {
    clock: Arc<Clock>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.clock.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.clock.thread.get() {
            thread.unpark();
        }
    }
}

/// The process's policy engine: one wasmtime `Engine`, one `Linker`, the compile cache (and,
/// when asked for, a baseline-compiler engine for fast reloads).
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<HostState>,
    baseline: Option<(Engine, Linker<HostState>)>,
    options: EngineOptions,
    ticker: Arc<Ticker>,
}

/// A linker with WASI (deny-by-default, see [`super::instance`]) and the host imports.
fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| anyhow::anyhow!("cannot link WASI: {e}"))?;
    PolicyWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
        .map_err(|e| anyhow::anyhow!("cannot link host imports: {e}"))?;
    Ok(linker)
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

        let clock = Arc::new(Clock {
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        });
        {
            let shared = clock.clone();
            let engines: Vec<Engine> =
                std::iter::once(engine.clone()).chain(baseline.as_ref().map(|(e, _)| e.clone())).collect();
            let tick = options.tick;
            let thread = std::thread::Builder::new()
                .name("sluice-epoch".into())
                .spawn(move || shared.run(tick, &engines))
                .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker: {e}"))?;
            let _ = clock.thread.set(thread.thread().clone());
        }
        Ok(Self { engine, linker: main_linker, baseline, options, ticker: Arc::new(Ticker { clock }) })
    }

    /// The epoch tick.
    pub fn tick(&self) -> Duration {
        self.options.tick
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
        let (engine, linker, code) = match &self.baseline {
            Some((engine, linker)) if quickly && !self.optimized_cached(&hash) => {
                (engine, linker, CodeTier::Baseline)
            }
            _ => (&self.engine, &self.linker, CodeTier::Optimized),
        };

        // Compilation is CPU-bound (milliseconds to seconds): keep it off the async workers.
        let component = {
            let engine = engine.clone();
            // Baseline code is not written to the cache: it only bridges the time until the
            // optimised code is ready.
            let cache_dir = match code {
                CodeTier::Optimized => self.options.cache_dir.clone(),
                CodeTier::Baseline => None,
            };
            let hash = hash.clone();
            let file = file.clone();
            tokio::task::spawn_blocking(move || compile(&engine, cache_dir.as_deref(), &bytes, &hash, &file))
                .await
                .map_err(|e| LoadError::Invalid {
                    file: spec.path.clone(),
                    cause: format!("compiler task failed: {e}"),
                })??
        };
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link { file: file.clone(), cause: format!("{e:#}") })?;
        let exports = HookExports::locate(&component)
            .map_err(|cause| LoadError::Exports { file: file.clone(), cause })?;

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
                clock: self.ticker.clock.clone(),
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
            breaker: Arc::default(),
            warm: std::sync::Mutex::new(Vec::new()),
            engine: engine.clone(),
            _ticker: self.ticker.clone(),
        }))
    }
}

/// Compiled functions by Cranelift's key (the function's code and the compiler settings), in
/// memory for the life of the process, up to [`FUNCTION_CACHE_BYTES`] (then new entries are
/// not kept).
#[derive(Debug, Default)]
struct FunctionCache {
    entries: std::sync::Mutex<FunctionEntries>,
}

#[derive(Debug, Default)]
struct FunctionEntries {
    by_key: HashMap<Vec<u8>, Arc<[u8]>>,
    bytes: usize,
}

/// Bound of the function cache.
const FUNCTION_CACHE_BYTES: usize = 256 << 20;

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        let entries = self.entries.lock().ok()?;
        entries.by_key.get(key).map(|v| std::borrow::Cow::Owned(v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let Ok(mut entries) = self.entries.lock() else { return false };
        let size = key.len() + value.len();
        if entries.bytes + size > FUNCTION_CACHE_BYTES {
            return false;
        }
        entries.bytes += size;
        entries.by_key.insert(key.to_vec(), value.into());
        true
    }
}

fn cache_key(engine: &Engine, content_hash: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{content_hash}-{:016x}", hasher.finish())
}

/// Where the compiled code of content `hash` for `engine` lives in the cache `dir`.
fn cached_path(dir: &Path, engine: &Engine, content_hash: &str) -> PathBuf {
    dir.join(format!("{}.cwasm", cache_key(engine, content_hash)))
}

/// Compile `bytes`, through the cache in `cache_dir` when one is configured.
fn compile(
    engine: &Engine,
    cache_dir: Option<&Path>,
    bytes: &[u8],
    hash: &str,
    file: &Path,
) -> Result<Component, LoadError> {
    let invalid =
        |e: wasmtime::Error| LoadError::Invalid { file: file.to_path_buf(), cause: format!("{e:#}") };
    let Some(dir) = cache_dir else {
        return Component::new(engine, bytes).map_err(invalid);
    };
    let key = cache_key(engine, hash);
    let cached = cached_path(dir, engine, hash);
    if cached.is_file() {
        // SAFETY: files in the cache directory are written only by `compile` below, from
        // this engine's own `serialize`, under a name that binds the content hash and the
        // engine configuration. A corrupt or foreign file fails deserialisation's header
        // checks and we fall back to compiling.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &cached) };
        match loaded {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(file = %cached.display(), error = %e, "ignoring unreadable compiled cache entry")
            }
        }
    }
    let component = Component::new(engine, bytes).map_err(invalid)?;
    if let Ok(serialized) = component.serialize() {
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, &serialized))
            .and_then(|()| std::fs::rename(&tmp, &cached));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(dir = %dir.display(), error = %e, "cannot write compiled cache entry");
        }
    }
    Ok(component)
}

/// Warm instances kept per policy, at most (each holds a slot of the instance pool).
pub const MAX_WARM_INSTANCES: usize = 16;

impl LoadedPolicy {
    /// An instance for a new session: a warm one when the policy allows reuse and one is
    /// waiting, else a fresh one.
    pub(crate) async fn session_instance(&self) -> Result<PolicyInstance, Fault> {
        if self.io.limits.sessions_per_instance > 1 {
            let warm = self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if let Some(mut instance) = warm {
                instance.sessions += 1;
                return Ok(instance);
            }
        }
        self.instantiate().await
    }

    /// The session of `instance` is over: keep it warm if it may serve another one.
    pub(crate) fn session_ended(&self, instance: PolicyInstance) {
        if !instance.reusable || instance.sessions >= self.io.limits.sessions_per_instance {
            return;
        }
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if warm.len() < MAX_WARM_INSTANCES {
            warm.push(instance);
        }
    }

    /// A fresh instance for one session, initialised with the policy's configuration.
    pub(crate) async fn instantiate(&self) -> Result<PolicyInstance, Fault> {
        let mut instance =
            PolicyInstance::instantiate(&self.engine, &self.pre, &self.exports, self.io.clone()).await?;
        match instance.init().await? {
            Ok(()) => Ok(instance),
            Err(message) => Err(Fault::InitRefused(message)),
        }
    }
}
