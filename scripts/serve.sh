#!/usr/bin/env bash
# Runs the relay on its embedded default configuration: installs the wasm32-wasip2 target if
# missing, then `sluice serve` from the repository root (the shipped policies are built by the
# relay's build script and embedded in the binary; the spool and the Maildir go to ./var).
# Extra arguments go to `sluice serve` (e.g. --config FILE). The relay is built in the
# `serve` profile (dependencies lightly optimised: the quickest build to a working relay);
# PROFILE=dev shares the test suite's build, PROFILE=release makes a production build.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
exec cargo run --profile "${PROFILE:-serve}" -p sluice -- serve "$@"
