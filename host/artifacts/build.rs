//! Builds every policy crate of the workspace (`policies/*` and `host/tests/policies/*`) for
//! `wasm32-wasip2` in release mode, in a target directory of its own, and writes one constant
//! per component with its path, plus `ALL`, the list the tests must cover.

use std::path::PathBuf;

include!("../policy_build.rs");

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..").canonicalize().expect("workspace root");
    let mut crates = crates_in(&root.join("policies"));
    let shipped: Vec<String> = crates.iter().map(|(n, _)| n.clone()).collect();
    crates.extend(crates_in(&root.join("host/tests/policies")));

    // The Rust crates only: policies/js holds node_modules, which must not be scanned.
    let files = build_components(&root, &crates);

    let mut out = String::new();
    let mut all = String::from(
        "/// Every component: (package name, path, shipped in `policies/`).\npub const ALL: &[(&str, &str, bool)] = &[\n",
    );
    for ((name, _), file) in crates.iter().zip(&files) {
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
