//! Builds the shipped Rust policies (`policies/*` with a Cargo.toml) and writes `builtin.rs`:
//! each component's bytes, embedded in the binary so that `sluice` runs with no checkout
//! (`path = "builtin:NAME"`, see `src/builtin.rs`).

use std::path::PathBuf;

include!("policy_build.rs");

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("..").canonicalize().expect("workspace root");
    let crates = crates_in(&root.join("policies"));
    let files = build_components(&root, &crates);
    let mut out = String::from(
        "/// The shipped Rust policies: (name, component bytes).\npub const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for ((name, _), file) in crates.iter().zip(&files) {
        out.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", file.display().to_string()));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtin.rs");
    std::fs::write(dest, out).expect("write builtin.rs");
}
