//! The compile cache: compiled components on disk, keyed by content hash and engine
//! configuration (a `.cwasm` only loads into an engine built the same way), and compiled
//! functions in memory (Cranelift's incremental cache), so that a new version of a policy
//! compiles only the functions that changed.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::LoadError;

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

/// Compiled functions by Cranelift's key (the function's code and the compiler settings), in
/// memory for the life of the process, up to [`FUNCTION_CACHE_BYTES`] (then new entries are
/// not kept).
#[derive(Debug, Default)]
pub(crate) struct FunctionCache {
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
pub(crate) fn cached_path(dir: &Path, engine: &Engine, content_hash: &str) -> PathBuf {
    dir.join(format!("{}.cwasm", cache_key(engine, content_hash)))
}

/// Compile `bytes`, through the cache in `cache_dir` when one is configured.
/// Components at least this large are announced while they compile (JavaScript and Python
/// ones: 10 to 40 MiB, seconds to a minute of compiling on first load).
pub const LARGE_COMPONENT_BYTES: usize = 2 << 20;

/// A large component's compile, for whoever shows progress ([`watch_compiles`]).
#[derive(Debug, Clone, Copy)]
pub enum Compiling<'a> {
    /// Compiling began: the file and its size in bytes.
    Started(&'a Path, usize),
    /// It ended (compiled or not) after so many seconds.
    Finished(&'a Path, f64),
}

type CompileWatcher = Box<dyn Fn(Compiling<'_>) + Send + Sync>;
static WATCHER: std::sync::OnceLock<CompileWatcher> = std::sync::OnceLock::new();

/// Have `watcher` told of each large component's compile (the command line draws a spinner
/// on a terminal); the first call wins. Without one, each is logged.
pub fn watch_compiles(watcher: impl Fn(Compiling<'_>) + Send + Sync + 'static) {
    let _ = WATCHER.set(Box::new(watcher));
}

/// Compile `bytes`, telling the watcher (or the log) when the component is large.
fn compile_watched(engine: &Engine, bytes: &[u8], file: &Path) -> wasmtime::Result<Component> {
    if bytes.len() < LARGE_COMPONENT_BYTES {
        return Component::new(engine, bytes);
    }
    let started = std::time::Instant::now();
    match WATCHER.get() {
        Some(watch) => watch(Compiling::Started(file, bytes.len())),
        None => tracing::info!(
            file = %file.display(),
            mib = format!("{:.1}", bytes.len() as f64 / 1048576.0).as_str(),
            "compiling a large component (once: the result is cached)"
        ),
    }
    let compiled = Component::new(engine, bytes);
    let secs = started.elapsed().as_secs_f64();
    match WATCHER.get() {
        Some(watch) => watch(Compiling::Finished(file, secs)),
        None => tracing::info!(file = %file.display(), secs = format!("{secs:.1}").as_str(), "compiled"),
    }
    compiled
}

pub(crate) fn compile(
    engine: &Engine,
    cache_dir: Option<&Path>,
    bytes: &[u8],
    hash: &str,
    file: &Path,
) -> Result<Component, LoadError> {
    let invalid =
        |e: wasmtime::Error| LoadError::Invalid { file: file.to_path_buf(), cause: cause(bytes, &e) };
    let Some(dir) = cache_dir else {
        return compile_watched(engine, bytes, file).map_err(invalid);
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
    let component = compile_watched(engine, bytes, file).map_err(invalid)?;
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

/// Why `bytes` are not a component, on one line: what to do when they are a core module, else
/// the compiler's causes joined.
fn cause(bytes: &[u8], error: &wasmtime::Error) -> String {
    if let Some(advice) = core_module(bytes) {
        return format!("it is {advice}");
    }
    let text = format!("{error:#}");
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// What to say of a core WebAssembly module given where a component is needed, when `head`
/// starts one.
pub fn core_module(head: &[u8]) -> Option<&'static str> {
    (head.get(..8) == Some(b"\0asm\x01\0\0\0")).then_some(
        "a core WebAssembly module, not a component: build the policy for wasm32-wasip2 \
         (`cargo build --target wasm32-wasip2`), or make this module a component with \
         `wasm-tools component new`",
    )
}
