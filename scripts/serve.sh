#!/usr/bin/env bash
# Runs the relay on its embedded default configuration: installs the wasm32-wasip2 target if
# missing, then `sluice serve` from the repository root (the shipped policies are built by the
# relay's build script and embedded in the binary; the spool and the Maildir go to ./var).
# Extra arguments go to `sluice serve` (e.g. --config FILE). The relay is built in the dev
# profile the test suite shares (dependencies optimised); set PROFILE=release for a
# production build.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
if [ "${PROFILE:-dev}" = release ]; then
    exec cargo run --release -p sluice -- serve "$@"
fi
exec cargo run -p sluice -- serve "$@"
