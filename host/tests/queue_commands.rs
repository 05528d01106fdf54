//! One spool, one relay, and `sluice queue` beside it: a second relay on the same spool is
//! refused with the first one's pid; while a relay runs, the queue commands that change the
//! spool go through its admin API (its delivery task carries them out); with none running,
//! they lock the spool and work on it themselves. `list` and `show` read it at any time.

mod relay_common;

use std::process::Command;
use std::time::Duration;

use relay_common::*;
use sluice_test_artifacts::PROBE;

/// Two tenants: `example` quarantines everything; `other` sends to a port nobody listens on,
/// so its mail stays queued with a last error.
fn config(admin: u16, dead: u16) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[relay]\ntrusted_networks = []\n\
         [delivery]\nretry_base_secs = 600\nretry_max_secs = 1200\n\
         [[tenant]]\nname = \"example\"\ndomains = [\"example.test\"]\nnext_hop = \"smtp:127.0.0.1:{dead}\"\n\
         [[tenant.policy]]\npath = \"{PROBE}\"\nconfig = {{ verdict = \"quarantine\" }}\n\
         [[tenant]]\nname = \"other\"\ndomains = [\"other.test\"]\nnext_hop = \"smtp:127.0.0.1:{dead}\"\n"
    )
}

fn send(port: u16, to: &str) {
    let out = python(
        port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT)\nprint(s.sendmail('alice@remote.test', ['{to}'], '{MESSAGE}'))"
        ),
    );
    assert_eq!(out.trim(), "{}");
}

fn ids(dir: &std::path::Path, store: &str) -> Vec<String> {
    files(&dir.join("spool").join(store), ".mail")
        .iter()
        .map(|p| p.file_stem().expect("id").to_string_lossy().into_owned())
        .collect()
}

#[test]
fn one_spool_one_relay_and_the_queue_commands_beside_it() {
    let dir = temp_dir("queue-commands");
    let (port, dead) = (free_port(), free_port());
    let mut r = relay(&dir, port, &config(free_port(), dead));

    // A second relay on the same spool (its own ports) is refused, naming the first.
    let second = dir.join("second.toml");
    std::fs::write(
        &second,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\n[spool]\ndir = \"{}\"\n[[tenant]]\nname = \"t\"\ndomains = [\"t.test\"]\nnext_hop = \"smtp:127.0.0.1:25\"\n",
            free_port(),
            dir.join("spool").display()
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(&second)
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .output()
        .expect("second relay");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second relay started on the same spool: {text}");
    let pid = r.proc.0.id();
    assert!(text.contains(&format!("is in use by another process (pid {pid}, relay")), "{text}");
    assert!(text.contains("one spool serves one relay"), "{text}");
    // Checking a configuration beside the running relay needs no lock.
    let (ok, checked) = sluice(&dir, &["check"]);
    assert!(ok && checked.contains("configuration ok"), "{checked}");

    send(port, "bob@example.test");
    send(port, "carol@other.test");
    send(port, "dave@other.test");
    let quarantined = ids(&dir, "quarantine");
    assert_eq!(quarantined.len(), 1);
    // Each queued message is tried once and fails: its last error is recorded.
    wait_for("first attempts", Duration::from_secs(20), || {
        let (_, json) = sluice(&dir, &["queue", "list", "--tenant", "other", "--json"]);
        json.lines().filter(|l| l.contains("\"attempts\":1")).count() == 2
    });

    let (ok, list) = sluice(&dir, &["queue", "list"]);
    assert!(ok && list.starts_with("ID "), "{list}");
    assert!(
        list.contains("LAST ERROR / REASON") && list.contains("quarantine") && list.contains("in "),
        "{list}"
    );
    assert!(list.contains("carol@other.test") && list.to_lowercase().contains("refused"), "{list}");
    let (ok, json) = sluice(&dir, &["queue", "list", "--tenant", "other", "--json"]);
    assert!(
        ok && json.lines().count() == 2 && json.lines().all(|l| l.contains("\"store\":\"queue\"")),
        "{json}"
    );
    let (_, none) = sluice(&dir, &["queue", "list", "--recipient", "nobody@"]);
    assert!(none.contains("no messages in the queue or the quarantine match"), "{none}");
    let (ok, old) = sluice(&dir, &["queue", "list", "--older-than", "1h"]);
    assert!(ok && old.contains("no messages"), "{old}");
    assert!(!sluice(&dir, &["queue", "list", "--older-than", "soon"]).0);

    // While the relay runs, changes go through its admin API.
    let (ok, flushed) = sluice(&dir, &["queue", "flush"]);
    assert!(ok && flushed.contains("2 message(s) due now"), "{flushed}");
    wait_for("second attempts", Duration::from_secs(20), || {
        let (_, json) = sluice(&dir, &["queue", "list", "--tenant", "other", "--json"]);
        json.lines().filter(|l| l.contains("\"attempts\":2")).count() == 2
    });
    let (ok, deleted) = sluice(&dir, &["queue", "delete", &quarantined[0]]);
    assert!(ok && deleted.contains(&format!("{} deleted", quarantined[0])), "{deleted}");
    assert!(ids(&dir, "quarantine").is_empty());
    let (ok, unknown) = sluice(&dir, &["queue", "delete", "00000000000000000000"]);
    assert!(!ok && unknown.contains("404") && unknown.contains("no such message"), "{unknown}");

    // Hold by filter, through the relay: into the quarantine until released.
    let (ok, held) = sluice(&dir, &["queue", "hold", "--recipient", "carol@"]);
    assert!(ok && held.contains("held (in the quarantine until released)"), "{held}");
    let (_, json) = sluice(&dir, &["queue", "list", "--store", "quarantine", "--json"]);
    assert!(
        json.lines().count() == 1
            && json.contains("carol@other.test")
            && json.contains("held by an operator"),
        "{json}"
    );
    let carol = ids(&dir, "quarantine");
    let (ok, released) = sluice(&dir, &["queue", "release", &carol[0]]);
    assert!(ok && released.contains("released into the queue"), "{released}");
    assert!(ids(&dir, "quarantine").is_empty());
    // A change to everything needs a filter or ids.
    let (ok, refused) = sluice(&dir, &["queue", "delete"]);
    assert!(!ok && refused.contains("say which messages"), "{refused}");
    let (ok, none) = sluice(&dir, &["queue", "hold", "--tenant", "nobody"]);
    assert!(ok && none.trim().is_empty(), "{none}");

    // With no relay, the command locks the spool and changes it itself.
    let _ = r.proc.0.kill();
    let _ = r.proc.0.wait();
    let queued = ids(&dir, "queue");
    assert_eq!(queued.len(), 2);
    let (ok, deleted) = sluice(&dir, &["queue", "delete", &queued[0]]);
    assert!(ok && deleted.contains(&format!("{} deleted", queued[0])), "{deleted}");
    assert_eq!(ids(&dir, "queue"), vec![queued[1].clone()]);
    let (ok, flushed) = sluice(&dir, &["queue", "flush", "--tenant", "other"]);
    assert!(ok && flushed.contains("1 message(s) due now"), "{flushed}");
    let (ok, held) = sluice(&dir, &["queue", "hold", &queued[1]]);
    assert!(ok && held.contains("held"), "{held}");
    assert_eq!(ids(&dir, "quarantine"), vec![queued[1].clone()]);
    let (ok, deleted) = sluice(&dir, &["queue", "delete", "--store", "quarantine", "--tenant", "other"]);
    assert!(ok && deleted.contains(&format!("{} deleted", queued[1])), "{deleted}");
    assert!(ids(&dir, "quarantine").is_empty() && ids(&dir, "queue").is_empty());
}
