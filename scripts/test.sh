#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints (host and wasm targets), and every test —
# unit tests, the policies built as components and run through the real engine, the
# `sluice policy test` CLI on the golden suite and the shared corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
# The relay tests drive the server with swaks too (its TLS needs Net::SSLeay).
if ! command -v swaks >/dev/null || ! swaks --support 2>/dev/null | grep -q "TLS supported"; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends swaks libnet-ssleay-perl libio-socket-ssl-perl
fi
# The shared-state tests run a real Redis server; the C policies need clang, lld,
# wasi-libc and clang's wasm32 runtime; the JavaScript ones node and npm; the edge tests
# HAProxy and Dovecot; the console's test Chromium.
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
MISSING=()
command -v redis-server >/dev/null || MISSING+=(redis-server)
command -v clang >/dev/null || MISSING+=(clang)
command -v wasm-ld >/dev/null || MISSING+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || MISSING+=(wasi-libc)
# clang's runtime for wasm32 (its builtins), which the clang package does not bring.
compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a' >/dev/null ||
    MISSING+=(libclang-rt-dev-wasm32)
command -v node >/dev/null || MISSING+=(nodejs)
command -v npm >/dev/null || MISSING+=(npm)
# The edge tests: HAProxy in front of the relay, Dovecot's LMTP server behind it.
command -v haproxy >/dev/null || MISSING+=(haproxy)
command -v dovecot >/dev/null || MISSING+=(dovecot-core)
[ -x /usr/lib/dovecot/lmtp ] || MISSING+=(dovecot-lmtpd)
# The benchmarks' name server (bench/throughput.py --tiny runs below).
command -v unbound >/dev/null || MISSING+=(unbound)
# The console's browser test: Debian's Chromium and its WebDriver.
command -v chromium >/dev/null || MISSING+=(chromium)
command -v chromedriver >/dev/null || MISSING+=(chromium-driver)
# Policies from an OCI registry: a real registry on loopback (the CNCF distribution server).
command -v docker-registry >/dev/null || MISSING+=(docker-registry)
# The release's package test: the unit checked by systemd-analyze.
command -v systemd-analyze >/dev/null || MISSING+=(systemd)
# Sluice inside Postfix (milter, policy delegation): a private Postfix instance per test.
command -v postfix >/dev/null || MISSING+=(postfix)
if [ ${#MISSING[@]} -gt 0 ]; then
    # Postfix without a system configuration: nothing of it runs until a test starts its own.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${MISSING[@]}"
fi
# The Python policies: componentize-py (pinned; the version policies/README.md documents).
if ! command -v componentize-py >/dev/null || [ "$(componentize-py --version 2>/dev/null)" != "componentize-py 0.25.1" ]; then
    python3 -m pip install --quiet componentize-py==0.25.1
    # pyenv makes a shim for a new command only on rehash.
    command -v pyenv >/dev/null && pyenv rehash
fi
# The sender-check tests: dkimpy (with Ed25519 and ARC) makes and checks signatures, PyYAML
# reads the RFC 7208 SPF suite (fetched from PyPI, pyspf's source distribution, on first use);
# the registry tests' token service signs its tokens with cryptography.
if ! python3 -c "import dkim, nacl, authres, yaml, dns.resolver, cryptography" 2>/dev/null; then
    python3 -m pip install --quiet dkimpy pynacl authres pyyaml dnspython cryptography
fi
if [ ! -d ../shared/corpus ]; then
    echo "scripts/test.sh: ../shared/corpus is missing; the tests read the shared mail corpus beside the repository" >&2
    exit 1
fi

# Policies, SDK and fixtures, as they are really built.
WASM_PACKAGES=(-p sluice-policy -p sluice-policy-learning)
for manifest in policies/*/Cargo.toml host/tests/policies/*/Cargo.toml; do
    WASM_PACKAGES+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)")
done

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== rooms: no import cycle, the protocol core on its own (docs/architecture.md)"
python3 scripts/rooms.py --check
echo "== cargo clippy (host)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo clippy (wasm32-wasip2)"
cargo clippy --target wasm32-wasip2 "${WASM_PACKAGES[@]}" -- -D warnings
echo "== policies in every language (policies/build.sh)"
policies/build.sh --require-all js python c
echo "== cargo test"
cargo test --workspace
echo "== the release tarball, tested away from the checkout (static binary, unit, relay)"
PROFILE=serve ./scripts/release.sh
./scripts/package-test.sh
echo "== benchmark scripts start (tiny runs; figures come from full runs, see bench/README.md)"
python3 bench/throughput.py --tiny --sluice target/debug/sluice
python3 scripts/bayes-cv.py --folds 2 --sluice target/debug/sluice \
    --bayes target/artifacts/wasm32-wasip2/release/bayes.wasm \
    --heuristics target/artifacts/wasm32-wasip2/release/spam_heuristics.wasm
python3 bench/idle.py --counts 200 --sluice target/debug/sluice
