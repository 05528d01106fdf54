//! Builds the shipped Rust policies (`policies/*` with a Cargo.toml) for `wasm32-wasip2` in
//! release mode — in `target/artifacts`, the target directory the test artifacts share — and
//! writes `builtin.rs`: each component's bytes, embedded in the binary so that `sluice` runs
//! with no checkout (`path = "builtin:NAME"`, see `src/builtin.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// `(package name, directory)` of each Rust crate in `dir`.
fn crates_in(dir: &Path) -> Vec<(String, PathBuf)> {
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

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("..").canonicalize().expect("workspace root");
    let crates = crates_in(&root.join("policies"));
    for (_, dir) in &crates {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for dir in ["guest-sdk", "wit", "Cargo.lock", ".cargo/config.toml"] {
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
    let status = cmd.status().expect("run cargo to build the shipped policies");
    assert!(
        status.success(),
        "building the shipped policies (embedded in sluice) failed; is the wasm32-wasip2 target installed? \
         (rustup target add wasm32-wasip2)"
    );
    let mut out = String::from(
        "/// The shipped Rust policies: (name, component bytes).\npub const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, _) in &crates {
        let file = target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
        assert!(file.is_file(), "{} was not built", file.display());
        out.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", file.display().to_string()));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtin.rs");
    std::fs::write(dest, out).expect("write builtin.rs");
}
