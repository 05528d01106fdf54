#!/usr/bin/env bash
# Builds {{name}}.wasm, the policy component (needs: pip install componentize-py==0.25.1).
# --stub-wasi: the component imports no WASI (the relay grants none a policy needs).
set -euo pipefail
cd "$(dirname "$0")"
componentize-py -d wit -w policy componentize --stub-wasi app -o {{name}}.wasm
echo "built {{name}}.wasm"
