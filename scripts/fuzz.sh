#!/usr/bin/env bash
# Fuzz what the relay parses and decides: the SMTP conversation (any client bytes, cut anywhere,
# with any verdicts), the PROXY header parser, the SMTP command parser, the DATA receiver, address parsing, the
# configuration parser, the message adapter handed to policies and what the sender checks read
# (SPF records, DKIM/ARC fields) (host/fuzz). Each target runs
# for SECONDS (default 60), seeded from host/fuzz/seeds and host/fuzz/regressions, the shared
# mail corpus (message and data_receiver) and the shipped configuration files; the corpus grows
# in host/fuzz/corpus between runs. Prints each target's executions and whether it found a
# crash (saved in host/fuzz/artifacts/TARGET/).
# Needs cargo-fuzz (installed here when missing) and a nightly toolchain for its sanitizer; without
# nightly it builds on the stable one with RUSTC_BOOTSTRAP=1 and no sanitizer.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(conversation proxy_header smtp_command data_receiver address config message sender milter_codec)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The relay's build embeds the shipped policies, built for wasm32-wasip2 by the same
# toolchain: nightly (with AddressSanitizer) only where it has that target.
if rustup toolchain list | grep -q '^nightly' &&
    rustup target list --toolchain nightly --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    fuzz=(cargo +nightly fuzz)
    flags=()
else
    fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
    flags=(--sanitizer none)
fi
cd host
mkdir -p fuzz/corpus
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    mkdir -p "$corpus"
    for seeds in fuzz/seeds/"$target" fuzz/regressions/"$target"; do
        [ -d "$seeds" ] && cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    done
    case $target in
        # Messages as they arrive in DATA (the first byte is where the input is split).
        message | data_receiver | sender) find ../../shared/corpus -name '*.eml' -size -200k -exec cp -n {} "$corpus"/ \; 2>/dev/null || true ;;
        config) cp -n src/config/default.toml "$corpus"/default.toml; sed -n '/^```toml/,/^```/p' ../README.md | grep -v '^```' > "$corpus"/readme.toml ;;
    esac
    log=$(mktemp)
    status=0
    "${fuzz[@]}" run "${flags[@]}" "$target" "$corpus" -- -max_total_time="$seconds" -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    if [ $status -eq 0 ]; then
        echo "$target: $runs executions in ${seconds}s, no crash"
    else
        echo "$target: FAILED after $runs executions (exit $status); see host/fuzz/artifacts/$target/"
        grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5
    fi
    rm -f "$log"
done
