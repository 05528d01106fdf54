//! `sluice policy new --lang rust|js|python|c NAME`: a policy folder anywhere, self-contained
//! (the interface's WIT, or the C bindings, come from the binary), with a build script that
//! makes `NAME.wasm` and a golden suite for `sluice policy test --suite suite`.

use std::path::{Path, PathBuf};

/// The languages a policy can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the `sluice-policy` SDK.
    Rust,
    /// JavaScript, made a component by componentize-js.
    Js,
    /// Python, made a component by componentize-py.
    Python,
    /// C, with bindings from wit-bindgen, made a component by wasm-tools or jco.
    C,
}

const WIT: &str = include_str!("../../../wit/policy.wit");
const C_SOURCE: &str = include_str!("../../../policies/c/bindings/policy.c");
const C_HEADER: &str = include_str!("../../../policies/c/bindings/policy.h");
const C_TYPE: &[u8] = include_bytes!("../../../policies/c/bindings/policy_component_type.o");

/// Where the SDK was when this binary was built (a checkout): the default `--sdk`.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

/// Write the folder `path` (its last part is the policy's name) for `lang`; `sdk` is the
/// Rust SDK as a path or a git URL. The folder must not exist, or be empty.
pub fn new_policy(lang: Lang, path: &Path, sdk: Option<&str>) -> anyhow::Result<String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        anyhow::bail!(
            "{name:?}: a policy's name is lower-case letters, digits and dashes, starting with a letter \
             (e.g. no-shouting)"
        );
    }
    if path.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        anyhow::bail!("{}: the folder exists and is not empty", path.display());
    }
    let crate_name = name.replace('-', "_");
    let fill = |template: &str| template.replace("{{name}}", &name).replace("{{crate}}", &crate_name);
    let mut files: Vec<(PathBuf, Vec<u8>)> = vec![
        ("suite/free-money.eml".into(), include_bytes!("scaffold/free-money.eml").to_vec()),
        ("suite/free-money.expect".into(), include_bytes!("scaffold/free-money.expect").to_vec()),
        ("suite/plain.eml".into(), include_bytes!("scaffold/plain.eml").to_vec()),
        ("suite/plain.expect".into(), include_bytes!("scaffold/plain.expect").to_vec()),
    ];
    let mut add = |file: &str, text: String| files.push((file.into(), text.into_bytes()));
    match lang {
        Lang::Rust => {
            let dependency = rust_sdk(sdk)?;
            add("Cargo.toml", fill(include_str!("scaffold/Cargo.toml.tmpl")).replace("{{sdk}}", &dependency));
            add(".cargo/config.toml", include_str!("scaffold/cargo-config.toml").to_string());
            add("src/lib.rs", fill(include_str!("scaffold/lib.rs.tmpl")));
            add("build.sh", fill(include_str!("scaffold/build-rust.sh")));
            add(".gitignore", "/target\n*.wasm\n".to_string());
        }
        Lang::Js => {
            add("wit/policy.wit", WIT.to_string());
            add("package.json", fill(include_str!("scaffold/package.json.tmpl")));
            add("policy.js", fill(include_str!("scaffold/policy.js.tmpl")));
            add("build.mjs", fill(include_str!("scaffold/build.mjs.tmpl")));
            add("build.sh", fill(include_str!("scaffold/build-js.sh")));
            add(".gitignore", "/node_modules\n*.wasm\n".to_string());
        }
        Lang::Python => {
            add("wit/policy.wit", WIT.to_string());
            add("app.py", fill(include_str!("scaffold/app.py.tmpl")));
            add("build.sh", fill(include_str!("scaffold/build-python.sh")));
            add(".gitignore", "__pycache__/\n/wit_world\n*.wasm\n".to_string());
        }
        Lang::C => {
            add("bindings/policy.c", C_SOURCE.to_string());
            add("bindings/policy.h", C_HEADER.to_string());
            files.push(("bindings/policy_component_type.o".into(), C_TYPE.to_vec()));
            let mut add = |file: &str, text: String| files.push((file.into(), text.into_bytes()));
            add("policy.c", fill(include_str!("scaffold/policy.c.tmpl")));
            add("build.sh", fill(include_str!("scaffold/build-c.sh")));
            add(".gitignore", "*.wasm\n".to_string());
        }
    }
    for (file, bytes) in &files {
        let target = path.join(file);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&target, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", target.display()))?;
    }
    executable(&path.join("build.sh"))?;
    Ok(format!(
        "wrote {} ({:?} policy `{name}`); next:\n  cd {}\n  ./build.sh\n  sluice policy test --policy {name}.wasm --suite suite",
        path.display(),
        lang,
        path.display()
    ))
}

/// The `sluice-policy` dependency line: a path or a git URL given, else the SDK of the
/// checkout this binary was built from, else the crates.io version.
fn rust_sdk(sdk: Option<&str>) -> anyhow::Result<String> {
    let path_dependency = |path: &Path| -> anyhow::Result<String> {
        let path = path.canonicalize().map_err(|e| anyhow::anyhow!("--sdk {}: {e}", path.display()))?;
        if !path.join("Cargo.toml").is_file() {
            anyhow::bail!("--sdk {}: not the sluice-policy crate (no Cargo.toml)", path.display());
        }
        Ok(format!("{{ path = {:?} }}", path.display().to_string()))
    };
    match sdk {
        Some(url) if url.contains("://") || url.starts_with("git@") => Ok(format!("{{ git = {url:?} }}")),
        Some(path) => path_dependency(Path::new(path)),
        None if Path::new(BUILT_SDK).join("Cargo.toml").is_file() => path_dependency(Path::new(BUILT_SDK)),
        None => Ok(format!("\"{}\"", env!("CARGO_PKG_VERSION"))),
    }
}

fn executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
