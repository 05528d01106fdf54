#!/usr/bin/env bash
# Build every shipped policy, in every language, into target/policies/<language>/<name>.wasm:
#
#   policies/build.sh [--require-all] [rust] [js] [python] [c]
#
# Without language arguments it builds them all. A language whose toolchain is missing is
# skipped with a message saying what to install; with --require-all (CI) that is an error.
#
#   rust    cargo + the wasm32-wasip2 target        policies/<name>/        (Cargo crates)
#   js      node + npm (packages from policies/js/package-lock.json)     policies/js/<name>/policy.js
#   python  componentize-py (pip)                   policies/python/<name>/app.py
#   c       clang + lld + wasi-libc + libclang-rt-dev-wasm32 (Debian), and jco from policies/js (or wasm-tools)
#                                                   policies/c/<name>/policy.c
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/policies
REQUIRE_ALL=0
LANGS=()
for arg in "$@"; do
    case $arg in
        --require-all) REQUIRE_ALL=1 ;;
        rust | js | python | c) LANGS+=("$arg") ;;
        *) echo "usage: policies/build.sh [--require-all] [rust] [js] [python] [c]" >&2; exit 2 ;;
    esac
done
[ ${#LANGS[@]} -eq 0 ] && LANGS=(rust js python c)

skip() {
    if [ "$REQUIRE_ALL" = 1 ]; then
        echo "policies/build.sh: $1: $2" >&2
        exit 1
    fi
    echo "policies/build.sh: skipping $1: $2" >&2
}

build_rust() {
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        skip rust "the wasm32-wasi target is missing (rustup target add wasm32-wasip2)"
        return
    fi
    local packages=()
    for manifest in policies/*/Cargo.toml; do
        packages+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)")
    done
    cargo build --release --target wasm32-wasip2 "${packages[@]}"
    mkdir -p "$OUT/rust"
    for manifest in policies/*/Cargo.toml; do
        local name
        name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)
        cp "target/wasm32-wasip2/release/${name//-/_}.wasm" "$OUT/rust/$name.wasm"
        echo "rust: $name -> $OUT/rust/$name.wasm"
    done
}

# node_modules of policies/js, installed from its lock file when missing or stale.
js_packages() {
    command -v node >/dev/null && command -v npm >/dev/null || return 1
    if [ ! -d policies/js/node_modules/@bytecodealliance/componentize-js ] ||
        [ policies/js/package-lock.json -nt policies/js/node_modules/.package-lock.json ]; then
        (cd policies/js && npm ci --no-audit --no-fund --loglevel=error) || return 1
    fi
}

build_js() {
    if ! js_packages; then
        skip js "node and npm are needed (Debian: apt-get install nodejs npm)"
        return
    fi
    node policies/js/build.mjs "$OUT/js"
}

build_python() {
    if ! command -v componentize-py >/dev/null; then
        skip python "componentize-py is missing (pip install componentize-py==0.25.1)"
        return
    fi
    mkdir -p "$OUT/python"
    for app in policies/python/*/app.py; do
        local dir name
        dir=$(dirname "$app")
        name=$(basename "$dir")
        # --stub-wasi: the component imports no WASI at all (the host grants none it needs).
        componentize-py -d wit -w policy componentize --stub-wasi -p "$dir" app -o "$OUT/python/$name.wasm" >/dev/null
        echo "python: $name -> $OUT/python/$name.wasm"
    done
}

# `component new` from jco (installed for the JavaScript policies) or wasm-tools.
component_new() {
    if command -v wasm-tools >/dev/null; then
        wasm-tools component new "$1" -o "$2"
    else
        policies/js/node_modules/.bin/jco new "$1" -o "$2" >/dev/null
    fi
}

build_c() {
    local cc=${CC_WASM:-clang}
    local sysroot=()
    [ -n "${WASI_SYSROOT:-}" ] && sysroot=(--sysroot="$WASI_SYSROOT")
    # A C file that needs libc, built and linked for wasm32-wasi: clang, lld and wasi-libc.
    local probe
    probe=$(mktemp --suffix=.wasm)
    if ! printf '#include <string.h>\nint f(const char *s) { return (int)strlen(s); }\n' |
        "$cc" --target=wasm32-wasi "${sysroot[@]}" -mexec-model=reactor -x c - -o "$probe" 2>/dev/null; then
        rm -f "$probe"
        skip c "clang, lld, wasi-libc and the wasm32 compiler runtime are needed (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32)"
        return
    fi
    rm -f "$probe"
    if ! command -v wasm-tools >/dev/null && ! js_packages; then
        skip c "making a component needs jco (node and npm, see js) or wasm-tools"
        return
    fi
    mkdir -p "$OUT/c"
    for source in policies/c/*/policy.c; do
        local dir name core
        dir=$(dirname "$source")
        [ "$dir" = policies/c/bindings ] && continue
        name=$(basename "$dir")
        core=$(mktemp --suffix=.wasm)
        # A reactor (no main), stripped; the bindings embed the component type.
        "$cc" --target=wasm32-wasi "${sysroot[@]}" -mexec-model=reactor -O2 -s -Wall -Wextra -Werror \
            -Ipolicies/c/bindings -o "$core" "$dir"/*.c policies/c/bindings/policy.c \
            policies/c/bindings/policy_component_type.o
        component_new "$core" "$OUT/c/$name.wasm"
        rm -f "$core"
        echo "c: $name -> $OUT/c/$name.wasm"
    done
}

for lang in "${LANGS[@]}"; do
    "build_$lang"
done
