// What the build scripts of `sluice` (host/build.rs: the shipped policies built into the
// binary) and `sluice-test-artifacts` (host/artifacts/build.rs: every component for the
// tests) share, `include!`d by both: finding the policy crates and building them for
// wasm32-wasip2 in release mode in target/artifacts, one target directory for both.

/// `(package name, directory)` of each Rust crate in `dir`, sorted.
fn crates_in(dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("Cargo.toml")) else { continue };
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = ").map(|v| v.trim().trim_matches('"').to_string()));
        if let Some(name) = name {
            found.push((name, entry.path()));
        }
    }
    found.sort();
    found
}

/// Build `crates` (found under `root`) and return each one's component file, in order;
/// rebuilt when they, the SDK, the interface or the lock file change.
fn build_components(root: &std::path::Path, crates: &[(String, std::path::PathBuf)]) -> Vec<std::path::PathBuf> {
    for (_, dir) in crates {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for dir in ["guest-sdk", "wit", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let target_dir = root.join("target").join("artifacts");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    for (name, _) in crates {
        cmd.args(["-p", name]);
    }
    let status = cmd.status().expect("run cargo to build the policy components");
    assert!(
        status.success(),
        "building the policy components failed; is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)"
    );
    crates
        .iter()
        .map(|(name, _)| {
            let file = target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
            assert!(file.is_file(), "{} was not built", file.display());
            file
        })
        .collect()
}
