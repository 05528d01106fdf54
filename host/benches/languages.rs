//! What a policy costs by the language it is written in: component size, compile time, and
//! cost per message — a fresh instance per message (the default: instantiate + `init` + the
//! hooks a message passes through) and a warm instance (`sessions_per_instance`: the hooks
//! only). Prints a Markdown table.
//!
//! Needs the components built: `cargo build --release --target wasm32-wasip2 -p
//! spam-heuristics` and `policies/build.sh js python c`. Run with
//! `cargo bench -p sluice --bench languages` (`-- --messages N` to change the sample size).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::policy::{Chain, ChainSettings, EngineOptions, ParsedMessage, PolicyEngine, PolicySpec};

const MESSAGE: &str = "Return-Path: <alice@example.org>\r\nFrom: Alice <alice@example.org>\r\n\
To: Bob <bob@example.com>\r\nSubject: Quarterly report\r\nDate: Thu, 1 Jan 2026 09:00:00 +0000\r\n\
Message-ID: <20260101090000.1234@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<p>Hi Bob,</p><p>the quarterly report is ready; see <a href=\"https://intranet.example.org/reports/q4\">the \
intranet</a> for details.</p><p>Alice</p>\r\n";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 { format!("{:.2} ms", us / 1000.0) } else { format!("{us:.1} µs") }
}

fn main() {
    let messages: usize =
        std::env::args().skip_while(|a| a != "--messages").nth(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policies: [(&str, &str, PathBuf); 4] = [
        ("Rust", "spam-heuristics", root.join("target/wasm32-wasip2/release/spam_heuristics.wasm")),
        ("C", "header-sanity", root.join("target/policies/c/header-sanity.wasm")),
        ("JavaScript", "url-guard", root.join("target/policies/js/url-guard.wasm")),
        ("Python", "rules", root.join("target/policies/python/rules.wasm")),
    ];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // No compile cache: the compile time is measured.
    let engine =
        PolicyEngine::new(EngineOptions { max_instances: 64, cache_dir: None, ..EngineOptions::default() })
            .expect("engine");
    let services = common::services();
    let message = Arc::new(ParsedMessage::parse(MESSAGE.as_bytes().to_vec()));

    println!(
        "| language | policy | component | compile | per message, fresh instance | per message, warm instance |"
    );
    println!("|---|---|---|---|---|---|");
    for (language, name, path) in policies {
        if !path.exists() {
            println!("| {language} | {name} | not built ({}) | | | |", path.display());
            continue;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let started = Instant::now();
        let fresh =
            rt.block_on(engine.load(&PolicySpec::new(&path), "bench", services.clone())).expect("load");
        let compile = started.elapsed();
        let mut spec = PolicySpec::new(&path);
        spec.limits.sessions_per_instance = u32::MAX;
        let warm = rt.block_on(engine.load(&spec, "bench", services.clone())).expect("load");
        let mut figures = Vec::new();
        for policy in [fresh, warm] {
            let chain = Arc::new(Chain::new("bench", vec![policy], ChainSettings::default()));
            for _ in 0..messages.min(20) {
                rt.block_on(common::one_message(&chain, &message));
            }
            let samples = (0..messages)
                .map(|_| {
                    let t = Instant::now();
                    rt.block_on(common::one_message(&chain, &message));
                    t.elapsed()
                })
                .collect();
            figures.push(median(samples));
        }
        let size = if size >= 1 << 20 {
            format!("{:.1} MiB", size as f64 / 1048576.0)
        } else {
            format!("{} KiB", size / 1024)
        };
        println!(
            "| {language} | {name} | {size} | {:.2} s | {} | {} |",
            compile.as_secs_f64(),
            micros(figures[0]),
            micros(figures[1])
        );
    }
}
