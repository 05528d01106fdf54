#!/usr/bin/env bash
# What policies cost, in one command: per message for each language (component size, compile
# time, a fresh and a warm instance: host/benches/languages.rs), per message for the shipped
# Rust chain (criterion: host/benches/policy_cost.rs), its critical path with instances made
# ahead of sessions (host/benches/critical_path.rs), then reload latency and reloads under
# load (bench/reload.py). Builds what it needs; the JavaScript, Python and C toolchains must be
# installed (scripts/test.sh installs them; policies/README.md lists them).
#
# Usage: bench/policy-cost.sh [--quick]     (--quick: small samples, to check that it runs)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${1:-}

policies/build.sh js python c
cargo build --release --target wasm32-wasip2 \
    -p sender-guard -p rate-limit -p greylist -p dnsbl -p spam-heuristics
cargo build --release -p sluice

echo "== cost per message by language (cargo bench -p sluice --bench languages)"
if [ "$QUICK" = --quick ]; then
    cargo bench -p sluice --bench languages -- --messages 5
else
    cargo bench -p sluice --bench languages
    echo "== the shipped Rust chain per message (cargo bench -p sluice --bench policy_cost)"
    cargo bench -p sluice --bench policy_cost -- --warm-up-time 2 --measurement-time 5
fi

echo "== the critical path with instances made ahead (cargo bench -p sluice --bench critical_path)"
if [ "$QUICK" = --quick ]; then
    cargo bench -p sluice --bench critical_path -- --quick
else
    cargo bench -p sluice --bench critical_path
fi

echo "== reload latency and reloads under load (bench/reload.py)"
if [ "$QUICK" = --quick ]; then
    python3 bench/reload.py --reloads 4 --clients 2 --latency-runs 2 --cold-restarts 1
else
    python3 bench/reload.py
fi
