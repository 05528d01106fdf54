//! Builds every policy crate of the workspace (`policies/*` and `host/tests/policies/*`) for
//! `wasm32-wasip2` in release mode, in a target directory of its own, and writes one constant
//! per component with its path, plus `ALL`, the list the tests must cover.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crates_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
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

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..").canonicalize().expect("workspace root");
    let mut crates = crates_in(&root.join("policies"));
    let shipped: Vec<String> = crates.iter().map(|(n, _)| n.clone()).collect();
    crates.extend(crates_in(&root.join("host/tests/policies")));

    // The Rust crates only: policies/js holds node_modules, which must not be scanned.
    for (_, dir) in &crates {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    // A new crate changes Cargo.lock.
    for dir in ["guest-sdk", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let target_dir = root.join("target").join("artifacts");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    for (name, _) in &crates {
        cmd.args(["-p", name]);
    }
    let status = cmd.status().expect("run cargo to build the policy components");
    assert!(
        status.success(),
        "building the policy components failed; is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)"
    );

    let mut out = String::new();
    let mut all = String::from(
        "/// Every component: (package name, path, shipped in `policies/`).\npub const ALL: &[(&str, &str, bool)] = &[\n",
    );
    for (name, _) in &crates {
        let file = target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
        assert!(file.is_file(), "{} was not built", file.display());
        let constant = name.to_uppercase().replace('-', "_");
        out.push_str(&format!(
            "/// `{name}` component.\npub const {constant}: &str = {:?};\n",
            file.display().to_string()
        ));
        all.push_str(&format!("    ({name:?}, {constant}, {}),\n", shipped.contains(name)));
    }
    all.push_str("];\n");
    out.push_str(&all);
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("artifacts.rs");
    std::fs::write(dest, out).expect("write artifacts.rs");
}
