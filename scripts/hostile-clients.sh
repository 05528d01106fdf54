#!/usr/bin/env bash
# Hostile clients at full size, one attack at a time, while a well-behaved client keeps
# sending: slowloris, 10,000 connections from one address, command floods, 100 MiB of DATA
# against a 10 MiB limit, a 16 MiB command line, garbage, TLS garbage, AUTH brute force.
# Prints one JSON line per attack with the good client's latency and the relay's peak memory
# (see host/tests/support/hostile.py). Usage: scripts/hostile-clients.sh [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sluice
dir=$(mktemp -d /tmp/sluice-hostile.XXXXXX)
trap 'rm -rf "$dir"' EXIT
python3 host/tests/support/hostile.py --sluice target/release/sluice --dir "$dir" --seconds 5 \
    --connections 10000 --data-mib 100 "$@"
