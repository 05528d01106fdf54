//! `sluice policy new` from an empty folder, in each language, exactly as the README shows it
//! (its block under "Start a policy anywhere", with `--lang rust` replaced by each language):
//! at most five commands to a passing golden suite with the example's symbol. And the refusals:
//! a bad name, a folder that is not empty.

mod relay_common;

use std::path::Path;
use std::process::Command;

use relay_common::*;

/// The README's commands.
fn readme_block() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
    let section = &readme[readme.find("### Start a policy anywhere").expect("the README's section")..];
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("its commands");
    block.to_string()
}

#[test]
fn a_policy_in_each_language_from_an_empty_folder() {
    let block = readme_block();
    let commands = block.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).count();
    assert!(commands <= 5, "{commands} commands:\n{block}");
    assert!(block.contains("--lang rust"), "{block}");
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice")).parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // Rust policies share one target folder across runs (the SDK's dependencies built once).
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold");
    for lang in ["rust", "js", "python", "c"] {
        let dir = temp_dir(&format!("policy-new-{lang}"));
        let script = block.replace("--lang rust", &format!("--lang {lang}"));
        let out = Command::new("bash")
            .arg("-ec")
            .arg(&script)
            .current_dir(&dir)
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", &shared)
            .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
            .output()
            .expect("bash");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{lang}:\n{text}");
        assert!(text.contains("FREE_MONEY(+3.0)") && text.contains("2 passed, 0 failed"), "{lang}:\n{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_bad_name_or_a_full_folder_is_refused() {
    let dir = temp_dir("policy-new-refusals");
    let run = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).current_dir(&dir).output().expect("sluice");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, text) = run(&["policy", "new", "--lang", "rust", "My_Policy"]);
    assert!(!ok && text.contains("lower-case letters, digits and dashes"), "{text}");
    std::fs::create_dir_all(dir.join("taken")).expect("dir");
    std::fs::write(dir.join("taken/file"), "x").expect("file");
    let (ok, text) = run(&["policy", "new", "--lang", "c", "taken"]);
    assert!(!ok && text.contains("exists and is not empty"), "{text}");
    let (ok, text) = run(&["policy", "new", "--lang", "rust", "x", "--sdk", "/nonexistent"]);
    assert!(!ok && text.contains("--sdk /nonexistent"), "{text}");
}
