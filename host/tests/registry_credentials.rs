//! Registries that ask who is calling, with Debian's `docker-registry` on loopback: one with
//! passwords (`auth: htpasswd`, HTTP Basic), one with the distribution token protocol
//! (`auth: token`, Bearer tokens from `tests/support/registry_tokens.py`, which hands
//! anonymous readers a pull-only token as public registries do). Credentials come from an auth
//! file in the format `docker login` writes: `[oci] auth_file`, `--auth-file` or
//! `$REGISTRY_AUTH_FILE`.

mod relay_common;

use std::path::Path;
use std::process::Command;

use relay_common::*;
use sluice_test_artifacts::PROBE;

/// `sluice ARGS` with `HOME` somewhere empty (no `~/.docker/config.json` of this machine's) and
/// `env`; success and everything it said.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("HOME", dir)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .envs(env.iter().copied())
        .env("SLUICE_CACHE_DIR", dir.join("cache"))
        .output()
        .expect("sluice");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// An auth file as `docker login` writes it, for `registry`.
fn auth_file(dir: &Path, name: &str, registry: &str, user_password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(user_password);
    let path = dir.join(name);
    std::fs::write(&path, format!("{{\"auths\": {{\"{registry}\": {{\"auth\": \"{encoded}\"}}}}}}"))
        .expect("auth file");
    path.display().to_string()
}

/// A relay whose one policy is `target`, with `[oci]` keys `oci`: it starts (the policy was
/// pulled) and its policy answers.
fn relay_on(dir: &Path, target: &str, oci: &str) {
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let port = free_port();
    write_config(
        dir,
        port,
        "",
        &format!("[oci]\n{oci}{}[[tenant.policy]]\npath = \"{target}\"\n", inbound(sink_port)),
    );
    let r = start_env(dir, port, &[], &[("HOME", &dir.display().to_string())]);
    assert!(log(&r.dir).contains("policy pulled from its registry"), "{}", log(&r.dir));
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.sendmail('a@remote.test', ['bob@example.test'], '{MESSAGE}'))"
        ),
    );
    assert_eq!(out.trim(), "{}");
}

#[test]
fn a_registry_with_passwords() {
    let dir = temp_dir("registry-basic");
    let port = free_port();
    let htpasswd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/registry.htpasswd");
    let _registry = registry_with(
        &dir,
        port,
        &format!("auth:\n  htpasswd:\n    realm: sluice-test\n    path: {}\n", htpasswd.display()),
    );
    let registry = format!("127.0.0.1:{port}");
    let target = format!("oci://{registry}/policies/filter:prod");

    // No credentials: a clear refusal, naming where they would come from.
    let (ok, out) = run(&dir, &["policy", "push", PROBE, &target, "--insecure"], &[]);
    assert!(!ok && out.contains("asks for credentials") && out.contains("--auth-file"), "{out}");
    // Wrong ones: refused, naming the user.
    let wrong = auth_file(&dir, "wrong.json", &registry, "policy:guess");
    let (ok, out) = run(&dir, &["policy", "push", PROBE, &target, "--insecure", "--auth-file", &wrong], &[]);
    assert!(!ok && out.contains("refused") && out.contains("as policy"), "{out}");
    // The right ones.
    let right = auth_file(&dir, "right.json", &registry, "policy:s3cret");
    let (ok, out) = run(&dir, &["policy", "push", PROBE, &target, "--insecure", "--auth-file", &right], &[]);
    assert!(ok, "{out}");

    // The relay reads the registry with [oci] auth_file (here in the username/password form).
    let relay_dir = dir.join("relay");
    std::fs::create_dir_all(&relay_dir).expect("relay dir");
    std::fs::write(
        relay_dir.join("auth.json"),
        format!("{{\"auths\": {{\"{registry}\": {{\"username\": \"policy\", \"password\": \"s3cret\"}}}}}}"),
    )
    .expect("auth file");
    relay_on(
        &relay_dir,
        &target,
        &format!("insecure_registries = [\"{registry}\"]\nauth_file = \"auth.json\"\n"),
    );

    // Without it, `sluice check` says what is missing.
    let bare = dir.join("bare");
    std::fs::create_dir_all(&bare).expect("dir");
    std::fs::write(
        bare.join("sluice.toml"),
        format!(
            "[oci]\ninsecure_registries = [\"{registry}\"]\n[[tenant]]\nname = \"t\"\ndomains = [\"t.test\"]\n\
             next_hop = \"smtp:127.0.0.1:25\"\n[[tenant.policy]]\npath = \"{target}\"\n"
        ),
    )
    .expect("config");
    let config = bare.join("sluice.toml").display().to_string();
    let (ok, out) = run(&bare, &["check", "--config", &config], &[]);
    assert!(!ok && out.contains("asks for credentials") && out.contains("[oci] auth_file"), "{out}");
}

#[test]
fn a_registry_with_tokens() {
    let dir = temp_dir("registry-token");
    let (port, token_port) = (free_port(), free_port());
    let cert = dir.join("token-issuer.pem");
    let _tokens = support(
        "registry_tokens.py",
        &[token_port.to_string(), cert.display().to_string(), "policy:s3cret".into()],
    );
    let _registry = registry_with(
        &dir,
        port,
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: sluice-test\n    \
             issuer: sluice-test-issuer\n    rootcertbundle: {}\n",
            cert.display()
        ),
    );
    let registry = format!("127.0.0.1:{port}");
    let target = format!("oci://{registry}/policies/filter:prod");

    // Pushing needs a user: anonymous readers get a pull-only token.
    let (ok, out) = run(&dir, &["policy", "push", PROBE, &target, "--insecure"], &[]);
    assert!(!ok && out.contains("refused"), "{out}");
    // The credentials from $REGISTRY_AUTH_FILE: a token for pull and push.
    let right = auth_file(&dir, "auth.json", &registry, "policy:s3cret");
    let (ok, out) =
        run(&dir, &["policy", "push", PROBE, &target, "--insecure"], &[("REGISTRY_AUTH_FILE", &right)]);
    assert!(ok, "{out}");

    // Anyone may pull, with the anonymous token.
    let pulled = dir.join("pulled.wasm");
    let (ok, out) =
        run(&dir, &["policy", "pull", &target, "--insecure", "--output", &pulled.display().to_string()], &[]);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(&pulled).expect("pulled"), std::fs::read(PROBE).expect("probe"));

    // So may the relay, without an auth file.
    let relay_dir = dir.join("relay");
    std::fs::create_dir_all(&relay_dir).expect("relay dir");
    relay_on(&relay_dir, &target, &format!("insecure_registries = [\"{registry}\"]\n"));
}
