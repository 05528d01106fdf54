//! What an operator reads when something is wrong: one line, in words, with the file, the
//! line of the configuration and what to do — never a debug dump — and nothing created on
//! disk for a configuration that cannot run.

mod relay_common;

use relay_common::*;

fn config(dir: &std::path::Path, policy: &str) {
    let text = format!(
        "[server]\nhostname = \"relay.test\"\nlisten = [\"127.0.0.1:{}\"]\n[spool]\ndir = \"var/spool\"\n\
         [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"maildir:var/mail\"\n\
         [[tenant.policy]]\npath = \"{policy}\"\n",
        free_port()
    );
    std::fs::write(dir.join("sluice.toml"), text).expect("config");
}

#[test]
fn a_missing_policy_file_is_named_with_its_line_and_nothing_is_created() {
    let dir = temp_dir("missing-policy");
    config(&dir, "policies/nowhere.wasm");
    for command in ["check", "serve"] {
        let (ok, text) = sluice(&dir, &[command]);
        assert!(!ok, "{text}");
        assert_eq!(text.trim().lines().count(), 1, "{text}");
        assert!(
            text.contains("sluice.toml: line 11: tenant[0] (example).policy[0].path: ")
                && text.contains("policies/nowhere.wasm: cannot read: No such file or directory"),
            "{text}"
        );
        assert!(!dir.join("var").exists(), "{command} created var/ for a configuration that cannot run");
    }
}

#[test]
fn a_core_module_instead_of_a_component_says_how_to_build_one() {
    let dir = temp_dir("core-module");
    // The smallest core module: the magic number and version 1.
    std::fs::write(dir.join("core.wasm"), b"\0asm\x01\0\0\0").expect("module");
    config(&dir, "core.wasm");
    let (ok, text) = sluice(&dir, &["check"]);
    assert!(!ok && text.trim().lines().count() == 1, "{text}");
    assert!(text.contains("line 11: tenant[0] (example).policy[0].path"), "{text}");
    assert!(
        text.contains("a core WebAssembly module, not a component") && text.contains("wasm32-wasip2"),
        "{text}"
    );
    assert!(text.contains("wasm-tools component new"), "{text}");
}

#[test]
fn reload_without_the_relay_s_configuration_says_what_to_give() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).arg("reload").output().expect("sluice");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("embedded default configuration: no [admin] listen address")
            && text.contains("--config FILE"),
        "{text}"
    );
}

#[test]
fn every_command_s_help_has_a_description_and_examples() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["check"],
        &["queue"],
        &["reload"],
        &["policy", "test"],
        &["policy", "rollback"],
        &["learn"],
        &["dkim", "keygen"],
    ];
    for command in commands {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(*command)
            .arg("--help")
            .output()
            .expect("sluice");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command:?}: {text}");
        let examples = text.split_once("Examples:\n").map(|(_, e)| e).unwrap_or_default();
        assert!(examples.lines().next().is_some_and(|l| l.starts_with("  sluice")), "{command:?}: {text}");
        let description = text.lines().next().unwrap_or_default();
        assert!(description.len() > 80, "{command:?}: a long description, not {description:?}");
    }
}
