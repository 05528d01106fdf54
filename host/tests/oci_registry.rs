//! Policies from an OCI registry — a real one, Debian's `docker-registry` (the CNCF
//! distribution server) on loopback: `sluice policy push` (signed) and `pull`; a relay whose
//! policy is `oci://…:TAG` loads it, a reload takes the tag's new component, a component
//! without a signature by `[oci] public_keys` is refused (the running generation stays), and a
//! policy pinned by digest loads from the cache with the registry gone.

mod relay_common;

use std::process::Command;

use relay_common::*;
use sluice_test_artifacts::{PROBE, RATE_LIMIT};

/// `sluice ARGS` in `dir` without a configuration: (ok, stdout and stderr).
fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(dir)
        .env("SLUICE_CACHE_DIR", dir.join("cache"))
        .output()
        .expect("sluice");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn policy_name(admin: u16) -> String {
    let out = python(
        admin,
        "import urllib.request, json\nt = json.loads(urllib.request.urlopen(f'http://127.0.0.1:{PORT}/api/policies').read())['tenants'][0]\nprint(t['policies'][0]['name'], t['policies'][0]['file'])",
    );
    out.trim().to_string()
}

#[test]
fn policies_pushed_pulled_signed_and_reloaded_by_tag() {
    let dir = temp_dir("oci");
    let port = free_port();
    let server = registry(&dir, port);
    let key = dir.join("key.pem");
    assert!(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key)
            .status()
            .expect("openssl")
            .success()
    );
    let target = format!("oci://127.0.0.1:{port}/policies/filter:prod");
    let key_arg = key.display().to_string();
    let (ok, out) = run(&dir, &["policy", "push", PROBE, &target, "--insecure", "--sign-key", &key_arg]);
    assert!(ok && out.contains("pinned: oci://"), "{out}");
    let public = out
        .split("public_keys = [\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("public key")
        .to_string();
    let pinned = out.lines().find_map(|l| l.strip_prefix("pinned: ")).expect("pinned").to_string();

    // pull checks what it gets, and the signature when asked.
    let (ok, out) =
        run(&dir, &["policy", "pull", &target, "--insecure", "-o", "pulled.wasm", "--public-key", &public]);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(dir.join("pulled.wasm")).expect("pulled"), std::fs::read(PROBE).expect("probe"));

    // A relay whose policy is the tag.
    let admin = free_port();
    let body = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[oci]\ninsecure_registries = [\"127.0.0.1:{port}\"]\npublic_keys = [\"{public}\"]\n{}\
         [[tenant.policy]]\npath = \"{target}\"\n",
        inbound(free_port())
    );
    let mut r = relay_with(&dir, free_port(), "", &body);
    let name = policy_name(admin);
    assert!(name.starts_with("probe ") && name.contains("/oci/sha256-"), "{name}");

    // The tag moves: a reload takes the new component.
    let (ok, out) = run(&dir, &["policy", "push", RATE_LIMIT, &target, "--insecure", "--sign-key", &key_arg]);
    assert!(ok, "{out}");
    let (ok, out) = sluice(&dir, &["reload"]);
    assert!(ok && out.contains("\"applied\""), "{out}");
    assert!(policy_name(admin).starts_with("rate-limit "), "{}", policy_name(admin));

    // Unsigned: refused, the running generation stays.
    let (ok, out) = run(&dir, &["policy", "push", PROBE, &target, "--insecure"]);
    assert!(ok, "{out}");
    let (ok, out) = sluice(&dir, &["reload"]);
    assert!(!ok && out.contains("not signed"), "{out}");
    assert!(policy_name(admin).starts_with("rate-limit "));
    let _ = r.proc.0.kill();
    let _ = r.proc.0.wait();

    // Pinned by digest: pulled once, then read from the cache with the registry gone.
    let pinned_body = body.replace(&target, &pinned).replace(&format!("public_keys = [\"{public}\"]\n"), "");
    std::fs::write(dir.join("sluice.toml"), format!(
        "[server]\nhostname = \"relay.test\"\nlisten = [\"127.0.0.1:{}\"]\n[spool]\ndir = \"spool\"\n{pinned_body}",
        free_port()
    ))
    .expect("config");
    let check = |dir: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["check", "--config"])
            .arg(dir.join("sluice.toml"))
            .env("SLUICE_CACHE_DIR", dir.join("cache"))
            .output()
            .expect("check");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
    drop(server);
    let (ok, out) = check(&dir);
    assert!(ok && out.contains("configuration ok"), "with the registry gone: {out}");
    // A tag cannot be resolved without its registry: the error names the policy and line.
    std::fs::write(
        dir.join("sluice.toml"),
        std::fs::read_to_string(dir.join("sluice.toml")).expect("config").replace(&pinned, &target),
    )
    .expect("config");
    let (ok, out) = check(&dir);
    assert!(!ok && out.contains("tenant[0] (example).policy[0].path") && out.contains("line"), "{out}");
}
