//! Training a model as an operator does: `sluice learn` into the embedded store file that
//! `sluice policy test --state` reads, or into a relay configuration's state (a tenant's model,
//! apart from the others'); and through running relays: `POST /api/learn` on one relay
//! teaches the model another relay on the same Redis uses, autolearning learns what the other
//! policies are sure of, and `POST /api/release?learn=ham` teaches a quarantined message as
//! ham and lets it go.

mod common;
mod relay_common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use relay_common::*;
use sluice_test_artifacts::{BAYES, SPAM_HEURISTICS};

fn corpus() -> PathBuf {
    common::corpus()
}

fn corpus_files(class: &str, prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    common::corpus_files(class, prefix, range).iter().map(|p| p.display().to_string()).collect()
}

use common::run_sluice as run;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `sluice learn` with these arguments, 30 spam and 30 ham of the corpus.
fn learn(extra: &[&str], forget: bool) -> Output {
    let spam = corpus_files("spam", "sapub-spam-00", 0..30);
    let ham = corpus_files("ham", "sapub-easy_ham-00", 0..30);
    let mut args = vec!["learn", "--policy", BAYES];
    args.extend(extra);
    if forget {
        args.push("--forget");
    }
    args.push("--spam");
    args.extend(spam.iter().map(String::as_str));
    args.push("--ham");
    args.extend(ham.iter().map(String::as_str));
    run(&args)
}

/// The bayes symbols `policy test` reports for `file`, with these arguments.
fn bayes_symbols(extra: &[&str], file: &str) -> Vec<String> {
    let mut args = vec!["policy", "test", "--json", "--eml", file];
    args.extend(extra);
    let out = run(&args);
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", text(&out));
    let mut names = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("json");
        for symbol in row["symbols"].as_array().expect("symbols") {
            let name = symbol.as_str().unwrap_or_default().to_string();
            if name.starts_with("BAYES_") {
                names.push(format!("{}:{name}", row["tenant"].as_str().unwrap_or_default()));
            }
        }
    }
    names
}

#[test]
fn sluice_learn_trains_the_state_file_policy_test_reads() {
    let dir = temp_dir("learn-state");
    let state = dir.join("model.redb").display().to_string();
    let config = ["--policy-config", "min_spam=10", "--policy-config", "min_ham=10"];
    let mut args = vec!["--state", state.as_str()];
    args.extend(config);
    let out = learn(&args, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("spam: 30 learned") && text(&out).contains("ham: 30 learned"),
        "{}",
        text(&out)
    );
    // Twice counts once.
    let again = learn(&args, false);
    assert!(text(&again).contains("spam: 30 already-learned"), "{}", text(&again));

    let unseen = &corpus_files("spam", "sapub-spam-00", 31..32)[0];
    let test =
        ["--policy", BAYES, "--policy-config", "bayes.min_spam=10", "--policy-config", "bayes.min_ham=10"];
    let mut with_state = test.to_vec();
    with_state.extend(["--state", state.as_str()]);
    assert_eq!(bayes_symbols(&with_state, unseen), ["default:BAYES_999"]);
    assert!(bayes_symbols(&test, unseen).is_empty(), "without --state the store is empty");

    // --forget takes it all out again.
    let out = learn(&args, true);
    assert!(text(&out).contains("forget: 60 forgotten"), "{}", text(&out));
    assert!(bayes_symbols(&with_state, unseen).is_empty());

    // A file too large to be a message is left out and named; the others are learned.
    let huge = dir.join("huge.eml");
    std::fs::File::create(&huge).expect("file").set_len(70 << 20).expect("sparse file");
    let huge = huge.display().to_string();
    let out = run(&["learn", "--policy", BAYES, "--state", &state, "--spam", &huge, unseen]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("over 64 MiB") && text(&out).contains("spam: 1 learned"), "{}", text(&out));

    // A policy that does not learn, or no store, is refused with a clear error.
    let out = run(&["learn", "--policy", SPAM_HEURISTICS, "--state", &state, "--spam", unseen]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("does not learn"), "{}", text(&out));
    let out = run(&["learn", "--policy", BAYES, "--spam", unseen]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--state") || text(&out).contains("--config"), "{}", text(&out));
}

#[test]
fn sluice_learn_into_a_relay_configuration_keeps_tenants_apart() {
    let dir = temp_dir("learn-config");
    let state = dir.join("kv.redb");
    let policy = format!(
        "[[tenant.policy]]\npath = \"{BAYES}\"\nconfig = {{ min_spam = \"10\", min_ham = \"10\" }}\n"
    );
    let config = format!(
        "[server]\nhostname = \"relay.test\"\nlisten = [\"127.0.0.1:2525\"]\n[relay]\ntrusted_networks = []\n\
         [state]\npath = \"{}\"\n\
         [[tenant]]\nname = \"alpha\"\ndomains = [\"alpha.test\"]\nnext_hop = \"smtp:127.0.0.1:2\"\n{policy}\
         [[tenant]]\nname = \"beta\"\ndomains = [\"beta.test\"]\nnext_hop = \"smtp:127.0.0.1:2\"\n{policy}",
        state.display()
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, config).expect("config");
    let path = path.display().to_string();
    let out = learn(&["--config", &path, "--tenant", "alpha"], false);
    assert!(out.status.success(), "{}", text(&out));
    let out = learn(&["--config", &path, "--tenant", "nobody"], false);
    assert!(text(&out).contains("no tenant \"nobody\""), "{}", text(&out));

    let unseen = &corpus_files("spam", "sapub-spam-00", 31..32)[0];
    let state = state.display().to_string();
    let args =
        ["--config", path.as_str(), "--state", state.as_str(), "--to", "a@alpha.test", "--to", "b@beta.test"];
    assert_eq!(bayes_symbols(&args, unseen), ["alpha:BAYES_999"], "beta's model is empty");
}

/// POST each file to the admin API `target`; the JSON answers, one per line.
fn post_files(admin: u16, target: &str, files: &[String]) -> Vec<String> {
    let list = serde_json::to_string(files).expect("json");
    python(
        admin,
        &format!(
            "import urllib.request, json\nfor f in json.loads({list:?}):\n\
             \x20   req = urllib.request.Request(f'http://127.0.0.1:{{PORT}}{target}', data=open(f, 'rb').read(), method='POST')\n\
             \x20   try:\n        print(urllib.request.urlopen(req).read().decode())\n\
             \x20   except urllib.error.HTTPError as e:\n        print(e.code, e.read().decode())"
        ),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn post(admin: u16, target: &str) -> String {
    python(
        admin,
        &format!(
            "import urllib.request\nreq = urllib.request.Request(f'http://127.0.0.1:{{PORT}}{target}', data=b'', method='POST')\n\
             try:\n    print(urllib.request.urlopen(req).read().decode())\n\
             except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())"
        ),
    )
}

/// Send the corpus file `file` to bob@example.test; the reply code to DATA.
fn send(port: u16, file: &str) -> u16 {
    let out = python(
        port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT, timeout=30)\ns.ehlo('c.remote.test')\n\
             s.mail('a@remote.test')\ns.rcpt('bob@example.test')\n\
             code, _ = s.data(open({file:?}, 'rb').read().replace(b'\\r\\n', b'\\n').replace(b'\\n', b'\\r\\n'))\n\
             print(code)\ns.quit()"
        ),
    );
    out.trim().parse().expect("code")
}

#[test]
fn feedback_on_one_relay_teaches_the_model_another_relay_on_the_same_redis_uses() {
    let dir = temp_dir("learn-redis");
    let redis_port = free_port();
    let _server = redis(redis_port, &dir);
    let sink_port = free_port();
    let sink_dir = dir.join("sink");
    let _sink = sink(sink_port, &sink_dir, &[]);
    let admin = free_port();
    let body = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [state]\nbackend = \"redis://127.0.0.1:{redis_port}/0\"\nprefix = \"learn{}:\"\n{}\
         [[tenant.policy]]\npath = \"{BAYES}\"\nconfig = {{ min_spam = \"10\", min_ham = \"10\" }}\n",
        std::process::id(),
        inbound(sink_port)
    );
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a_dir).expect("dir");
    std::fs::create_dir_all(&b_dir).expect("dir");
    let a = relay(&a_dir, free_port(), &body);
    let b = relay(&b_dir, free_port(), &body.replace(&format!(":{admin}\""), &format!(":{}\"", free_port())));

    let spam = corpus_files("spam", "sapub-spam-00", 0..30);
    let ham = corpus_files("ham", "sapub-easy_ham-00", 0..30);
    for answer in post_files(admin, "/api/learn?class=spam", &spam) {
        assert!(answer.contains("\"learned\":\"learned\""), "{answer}\n{}", log(&a.dir));
    }
    for answer in post_files(admin, "/api/learn?class=ham&tenant=example", &ham) {
        assert!(answer.contains("\"learned\":\"learned\""), "{answer}");
    }
    let again = post_files(admin, "/api/learn?class=spam", &spam[..1]);
    assert!(again[0].contains("already-learned"), "{again:?}");
    let bad = post(admin, "/api/learn?class=maybe");
    assert!(bad.starts_with("400"), "{bad}");

    // Relay b, which was never taught anything, classifies with the shared model.
    let unseen = &corpus_files("spam", "sapub-spam-00", 31..32)[0];
    assert_eq!(send(b.port, unseen), 250, "{}", log(&b.dir));
    wait_for("the message at the sink", Duration::from_secs(30), || !files(&sink_dir, ".eml").is_empty());
    let delivered = std::fs::read_to_string(&files(&sink_dir, ".eml")[0]).expect("message");
    assert!(delivered.contains("BAYES_999"), "{delivered}\n{}", log(&b.dir));
}

#[test]
fn autolearning_and_release_from_quarantine_teach_the_model() {
    let dir = temp_dir("autolearn");
    let sink_port = free_port();
    let sink_dir = dir.join("sink");
    let _sink = sink(sink_port, &sink_dir, &[]);
    let admin = free_port();
    let body = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[state]\nbackend = \"memory\"\n{}\
         autolearn = true\nautolearn_spam_score = 5.0\nautolearn_ham_score = 0.5\n\
         quarantine_score = 3.0\nreject_score = 5000.0\n\
         [[tenant.policy]]\npath = \"{SPAM_HEURISTICS}\"\n\
         [[tenant.policy]]\npath = \"{BAYES}\"\n",
        inbound(sink_port)
    );
    let r = relay(&dir, free_port(), &body);

    // A message spam-heuristics is sure of is learned as spam; one it finds clean as ham.
    let spammy = corpus().join("spam/sa-t-spam-gtube.eml");
    let spammy =
        if spammy.is_file() { spammy } else { PathBuf::from(&corpus_files("spam", "rspamd-gtube", 0..1)[0]) };
    let spammy = spammy.display().to_string();
    assert_eq!(send(r.port, &spammy), 250, "{}", log(&r.dir));
    let clean = corpus_files("ham", "sapub-easy_ham-00", 0..1)[0].clone();
    assert_eq!(send(r.port, &clean), 250, "{}", log(&r.dir));
    wait_for("autolearning", Duration::from_secs(20), || {
        post_files(admin, "/api/learn?class=spam", std::slice::from_ref(&spammy))[0]
            .contains("already-learned")
    });
    wait_for("autolearning", Duration::from_secs(20), || {
        post_files(admin, "/api/learn?class=ham", std::slice::from_ref(&clean))[0].contains("already-learned")
    });

    // The spammy one sits in quarantine (score 3 and up); released with learn=ham it is
    // learned as ham (it was spam: relearned) and delivered.
    let quarantined: Vec<PathBuf> = files(&dir.join("spool/quarantine"), ".mail");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}\n{}", log(&r.dir));
    let id = quarantined[0].file_stem().expect("stem").to_string_lossy().into_owned();
    let before = files(&sink_dir, ".eml").len();
    let answer = post(admin, &format!("/api/release?id={id}&learn=ham"));
    assert!(answer.contains("\"released\":true") && answer.contains("relearned"), "{answer}");
    wait_for("the released message at the sink", Duration::from_secs(30), || {
        files(&sink_dir, ".eml").len() > before
    });
    let again = post(admin, &format!("/api/release?id={id}"));
    assert!(again.starts_with("404"), "{again}");
}
