//! Components that cannot be policies are refused at load with an error naming the file and
//! the cause: unreadable, not wasm, a core module, another WIT version, missing exports, a
//! configuration `init` refuses.

mod common;

use common::*;
use sluice::policy::{LoadError, PolicySpec, Stage};
use sluice_test_artifacts::{ALL, INCOMPLETE, PROBE, SPAM_HEURISTICS, WRONG_VERSION};

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-loading-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

async fn load_error(spec: PolicySpec) -> (LoadError, String) {
    let engine = engine();
    let error = try_load(&engine, &spec).await.expect_err("must be refused");
    let text = error.to_string();
    assert!(text.contains(&spec.path.display().to_string()), "error does not name the file: {text}");
    (error, text)
}

#[tokio::test]
async fn a_missing_file_is_named() {
    let (error, _) = load_error(PolicySpec::new("/nonexistent/policy.wasm")).await;
    assert!(matches!(error, LoadError::Read { .. }));
}

#[tokio::test]
async fn random_bytes_are_not_a_component() {
    let path = temp_file("garbage.wasm", b"this is not webassembly at all");
    let (error, _) = load_error(PolicySpec::new(path)).await;
    assert!(matches!(error, LoadError::Invalid { .. }), "{error}");
}

#[tokio::test]
async fn a_core_module_is_not_a_component() {
    // The smallest valid core module: magic and version only.
    let path = temp_file("core.wasm", b"\0asm\x01\0\0\0");
    let (error, text) = load_error(PolicySpec::new(path)).await;
    assert!(matches!(error, LoadError::Invalid { .. }), "{text}");
}

#[tokio::test]
async fn another_wit_version_is_refused() {
    let (error, text) = load_error(PolicySpec::new(WRONG_VERSION)).await;
    assert!(matches!(error, LoadError::Link { .. }), "{text}");
    assert!(text.contains("sluice:policy/host@0.9.0"), "{text}");
}

#[tokio::test]
async fn missing_exports_are_refused() {
    let (error, text) = load_error(PolicySpec::new(INCOMPLETE)).await;
    assert!(matches!(error, LoadError::Exports { .. }), "{text}");
}

#[tokio::test]
async fn init_can_refuse_its_configuration() {
    let (error, text) = load_error(spec(PROBE, &[("refuse_init", "threshold must be a number")])).await;
    assert!(matches!(error, LoadError::Init { .. }), "{text}");
    assert!(text.contains("threshold must be a number") && text.contains("probe"), "{text}");
}

#[tokio::test]
async fn shipped_policies_check_their_configuration() {
    let (_, text) = load_error(spec(SPAM_HEURISTICS, &[("score.NO_SUCH_RULE", "1")])).await;
    assert!(text.contains("unknown symbol NO_SUCH_RULE"), "{text}");
    let (_, text) = load_error(spec(sluice_test_artifacts::SENDER_GUARD, &[])).await;
    assert!(text.contains("`domains` is required"), "{text}");
    let (_, text) = load_error(spec(sluice_test_artifacts::GREYLIST, &[("delay_seconds", "soon")])).await;
    assert!(text.contains("delay_seconds"), "{text}");
}

#[tokio::test]
async fn every_shipped_policy_loads_and_describes_itself() {
    let engine = engine();
    for (name, path, shipped) in ALL {
        if !shipped {
            continue;
        }
        let config: &[(&str, &str)] =
            if *name == "sender-guard" { &[("domains", "example.com")] } else { &[] };
        let policy = load(&engine, path, config).await;
        assert_eq!(policy.name, *name);
        assert_eq!(policy.version, "0.1.0");
        assert!(policy.stages.iter().count() > 0);
        assert_eq!(policy.hash.len(), 64);
    }
    let probe = load(&engine, PROBE, &[]).await;
    assert_eq!(probe.stages.iter().collect::<Vec<_>>(), Stage::ALL.to_vec());
}

#[tokio::test]
async fn the_compiled_cache_is_reused() {
    let cache = std::env::temp_dir().join(format!("sluice-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let options = sluice::policy::EngineOptions {
        max_instances: 8,
        cache_dir: Some(cache.clone()),
        ..Default::default()
    };
    let engine = sluice::policy::PolicyEngine::new(options.clone()).expect("engine");
    engine.load(&PolicySpec::new(PROBE), "t", services()).await.expect("load");
    let entries: Vec<_> = std::fs::read_dir(&cache).expect("cache dir").flatten().collect();
    assert_eq!(entries.len(), 1, "one compiled entry");
    let written = entries[0].metadata().expect("meta").modified().expect("mtime");
    // A second engine of the same configuration loads from the cache without rewriting it.
    let again = sluice::policy::PolicyEngine::new(options).expect("engine");
    again.load(&PolicySpec::new(PROBE), "t", services()).await.expect("load from cache");
    let entries: Vec<_> = std::fs::read_dir(&cache).expect("cache dir").flatten().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].metadata().expect("meta").modified().expect("mtime"), written);
    let _ = std::fs::remove_dir_all(&cache);
}
