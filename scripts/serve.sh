#!/usr/bin/env bash
# Runs the relay on its embedded default configuration: installs the wasm32-wasip2 target if
# missing, builds the shipped policies, then `sluice serve` from the repository root (the
# default configuration names the policies and its spool and Maildir by relative paths).
# Extra arguments go to `sluice serve` (e.g. --config FILE). The relay is built in the dev
# profile the test suite shares (dependencies optimised); set PROFILE=release for a
# production build.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2 \
    -p spam-heuristics -p dnsbl -p sender-guard -p rate-limit -p greylist
if [ "${PROFILE:-dev}" = release ]; then
    exec cargo run --release -p sluice -- serve "$@"
fi
exec cargo run -p sluice -- serve "$@"
