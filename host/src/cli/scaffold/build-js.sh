#!/usr/bin/env bash
# Builds {{name}}.wasm, the policy component (needs Node.js and npm).
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm install --no-audit --no-fund --loglevel=error
node build.mjs
