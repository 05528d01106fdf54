#!/usr/bin/env bash
# Builds {{name}}.wasm, the policy component. Needs clang, lld, wasi-libc and clang's wasm32
# runtime (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32), and to make
# the component wasm-tools (cargo install wasm-tools) or Node.js (npx runs jco).
set -euo pipefail
cd "$(dirname "$0")"
${CC_WASM:-clang} --target=wasm32-wasi -mexec-model=reactor -O2 -s -Wall -Wextra -Ibindings \
    -o core.wasm policy.c bindings/policy.c bindings/policy_component_type.o
if command -v wasm-tools >/dev/null; then
    wasm-tools component new core.wasm -o {{name}}.wasm
else
    npx -y @bytecodealliance/jco@1.35.0 new core.wasm -o {{name}}.wasm >/dev/null
fi
rm -f core.wasm
echo "built {{name}}.wasm"
