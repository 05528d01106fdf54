//! The policies written in JavaScript, Python and C, built from source by `policies/build.sh`
//! (scripts/test.sh runs it before the tests): each passes its golden suite through
//! `sluice policy test`, and all three judge mail together in a running relay, loaded by the
//! same host code as the Rust ones.

mod relay_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use relay_common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built component, or a failure that says how to build it.
fn component(language: &str, name: &str) -> PathBuf {
    let path = repo().join("target/policies").join(language).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run policies/build.sh (scripts/test.sh installs the toolchains and does)",
        path.display()
    );
    path
}

fn sluice(args: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .output()
        .expect("run sluice");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// `sluice policy test --suite` on the policy's `suite/`, with the arguments of its
/// `config.args` (one option and its value per line) and its `dns.txt` if any.
fn suite(language: &str, name: &str) {
    let dir = repo().join("policies").join(language).join(name).join("suite");
    let mut args: Vec<String> = vec!["policy".into(), "test".into(), "--policy".into()];
    args.push(component(language, name).display().to_string());
    if let Ok(text) = std::fs::read_to_string(dir.join("config.args")) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (option, value) = line.split_once(' ').unwrap_or((line, ""));
            args.push(option.to_string());
            if !value.is_empty() {
                args.push(value.to_string());
            }
        }
    }
    if dir.join("dns.txt").exists() {
        args.extend(["--dns".into(), dir.join("dns.txt").display().to_string()]);
    }
    args.extend(["--suite".into(), dir.display().to_string()]);
    let (ok, out) = sluice(&args);
    let messages = std::fs::read_dir(&dir)
        .expect("suite")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml")))
        .count();
    assert!(ok && out.contains(&format!("{messages} passed, 0 failed")), "{out}");
}

#[test]
fn javascript_url_guard_suite() {
    suite("js", "url-guard");
}

#[test]
fn python_rules_suite() {
    suite("python", "rules");
}

#[test]
fn c_header_sanity_suite() {
    suite("c", "header-sanity");
}

#[test]
fn the_three_languages_judge_mail_together_in_a_relay() {
    let dir = temp_dir("languages");
    let sink_port = free_port();
    let _sink = sink(sink_port, &dir.join("sink"), &[]);
    let (c, py, js) =
        (component("c", "header-sanity"), component("python", "rules"), component("js", "url-guard"));
    let body = format!(
        "{}[[tenant.policy]]\npath = \"{}\"\n\
         [[tenant.policy]]\npath = \"{}\"\nsessions_per_instance = 100\n\
         config = {{ \"rule.SUBJ_INVOICE_URGENT\" = \"subject /invoice.*urgent/i 16.0\" }}\n\
         [[tenant.policy]]\npath = \"{}\"\nsessions_per_instance = 100\n",
        inbound(sink_port),
        c.display(),
        py.display(),
        js.display()
    );
    let r = relay(&dir, free_port(), &body);
    let phish = "From: Service <service@notify.example.org>\\r\\nTo: bob@example.test\\r\\n\
                 Subject: Your account is on hold\\r\\nMIME-Version: 1.0\\r\\n\
                 Content-Type: text/html; charset=utf-8\\r\\n\\r\\n\
                 <p>You have won! <a href=\"https://paypa1.com/verify\">Verify</a></p>\\r\\n";
    let invoice = "From: Accounts <accounts@billing.example.org>\\r\\nTo: bob@example.test\\r\\n\
                   Subject: Invoice 4471 - URGENT\\r\\nDate: Fri, 27 Nov 2026 10:00:00 +0000\\r\\n\
                   Message-ID: <i4471@billing.example.org>\\r\\n\\r\\nPay now.\\r\\n";
    let out = python(
        r.port,
        &format!(
            "s = smtplib.SMTP('127.0.0.1', PORT, timeout=60)\n\
             print(s.sendmail('x@remote.test', ['bob@example.test'], '{phish}'))\n\
             try:\n    s.sendmail('x@remote.test', ['bob@example.test'], '{invoice}')\n\
             except smtplib.SMTPDataError as e:\n    print(e.smtp_code, e.smtp_error.decode())\n\
             s.quit()\n\
             s = smtplib.SMTP('127.0.0.1', PORT, timeout=60)\n\
             print(s.sendmail('x@remote.test', ['bob@example.test'], '{phish}'))\n\
             s.quit()"
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("{}"), "{out}\n{}", log(&r.dir));
    // The Python rule configured in the relay's file rejects the invoice on its own.
    assert!(lines.get(1).is_some_and(|l| l.starts_with("550")), "{out}\n{}", log(&r.dir));
    assert_eq!(lines.get(2).copied(), Some("{}"), "{out}\n{}", log(&r.dir));
    wait_for("the phishing messages", Duration::from_secs(30), || {
        files(&dir.join("sink"), ".eml").len() == 2
    });
    // One symbol from each language's policy, on the first session's fresh instances and on
    // the second session's warm ones alike.
    for file in files(&dir.join("sink"), ".eml") {
        let delivered = std::fs::read_to_string(&file).expect("message");
        let symbols = delivered.lines().find(|l| l.starts_with("X-Spam-Symbols:")).unwrap_or_default();
        for symbol in ["HS_MISSING_DATE", "BODY_YOU_WON", "URL_LOOKALIKE"] {
            assert!(symbols.contains(symbol), "{symbol} missing: {delivered}");
        }
    }
}

/// The "Write your own" recipes of policies/README.md, run as written (in a scratch folder,
/// with `~/sluice` this repository and `sluice` the binary under test): each must end in a
/// verdict with the policy's symbol.
#[test]
fn the_readme_recipes_work() {
    let readme = std::fs::read_to_string(repo().join("policies/README.md")).expect("README");
    let recipes = &readme[readme.find("### Write your own").expect("recipes section")..];
    let blocks: Vec<&str> = recipes.split("```sh\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert_eq!(blocks.len(), 3, "one recipe per language");
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice")).parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let repo = repo().canonicalize().expect("repo");
    for (language, block) in ["javascript", "python", "c"].iter().zip(blocks) {
        let dir = temp_dir(&format!("recipe-{language}"));
        std::fs::write(
            dir.join("message.eml"),
            "From: a@example.org\r\nTo: b@example.com\r\nSubject: Free money for you\r\n\r\nhi\r\n",
        )
        .expect("message");
        let script = block.replace("~/sluice", &repo.display().to_string()).replace(
            "mkdir my-policy && cd my-policy",
            "mkdir my-policy && cd my-policy && cp ../message.eml .",
        );
        let (ok, text) = run_script(&script, &dir, &path);
        assert!(ok && text.contains("FREE_MONEY(+3.0)"), "{language} recipe:\n{text}");

        // The same recipe with the data hook of "Reading the sender checks", on a forged
        // message and the DNS of the dmarc suite.
        let suite = repo.join("policies/dmarc/suite");
        let hook = sender_hook(&readme, language);
        let (start, end) = match *language {
            "javascript" => ("  onData(ctx, message) {", "\n};"),
            "python" => ("    def on_data(self, ctx, message):", "\nPY\n"),
            _ => ("void exports_sluice_policy_hooks_on_data(", "\nC\n"),
        };
        let from = script.find(start).expect("the recipe's data hook");
        let to = from + script[from..].find(end).expect("the end of the hook");
        let variant = format!("{}{}{}", &script[..from], hook.trim_end(), &script[to..])
            .replace("my-policy && cd my-policy", "sender-policy && cd sender-policy")
            .replace("cp ../message.eml .", &format!("cp {}/forged-reject.eml message.eml", suite.display()))
            .replace(
                "--eml message.eml",
                &format!(
                    "--eml message.eml --dns {}/dns.txt --client-ip 203.0.113.7 --from x@elsewhere.test",
                    suite.display()
                ),
            );
        let (ok, text) = run_script(&variant, &dir, &path);
        assert!(ok && text.contains("FORGED_SENDER(+6.0)"), "{language} sender checks:\n{text}");
        // A recipe folder holds a whole toolchain (node_modules): not left behind on success.
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Run a shell script in `dir` with `path` as its PATH: whether it succeeded, and what it said.
fn run_script(script: &str, dir: &Path, path: &str) -> (bool, String) {
    let out = Command::new("bash")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env("SLUICE_CACHE_DIR", std::env::temp_dir().join("sluice-test-cache"))
        .output()
        .expect("bash");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// The data hook of policies/README.md's "Reading the sender checks" for `language`.
fn sender_hook(readme: &str, language: &str) -> String {
    let section = &readme[readme.find("### Reading the sender checks").expect("sender checks section")..];
    let fence = match language {
        "javascript" => "```js\n",
        "python" => "```python\n",
        _ => "```c\n",
    };
    let block = &section[section.find(fence).expect("a block per language") + fence.len()..];
    block[..block.find("```").expect("end of block")].to_string()
}

/// A large component (JavaScript: 12 MiB) compiled on a terminal shows a spinner, then how
/// long it took; once cached, nothing.
#[test]
fn a_large_compile_is_shown_on_a_terminal() {
    let cache = temp_dir("large-compile-cache");
    let command = format!(
        "{} policy test --policy {} --eml {}",
        env!("CARGO_BIN_EXE_sluice"),
        component("js", "url-guard").display(),
        repo().join("policies/js/url-guard/suite/clean.eml").display()
    );
    let run = || {
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("SLUICE_CACHE_DIR", &cache)
            .output()
            .expect("script (util-linux)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert!(first.contains("compiling ") && first.contains("MiB, once: the result is cached"), "{first}");
    assert!(first.contains("compiled ") && first.contains(" s\r\n"), "{first}");
    let second = run();
    assert!(!second.contains("compiling "), "{second}");
}
