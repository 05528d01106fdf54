#!/usr/bin/env bash
# Durability under crash, the long run: mail under load while the relay is killed with SIGKILL
# at random moments (default 25 times) and restarted; then every message that got a 250 must
# have reached the next hop. Prints the figures as JSON (see host/tests/support/crash.py) and
# exits 1 on any loss. Usage: scripts/crash-test.sh [--kills N] [--senders N] [--seed S]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sluice
dir=$(mktemp -d /tmp/sluice-crash.XXXXXX)
trap 'rm -rf "$dir"' EXIT
python3 host/tests/support/crash.py --sluice target/release/sluice --dir "$dir" --kills 25 "$@"
