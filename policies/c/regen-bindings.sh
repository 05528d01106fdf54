#!/usr/bin/env bash
# Regenerate the C bindings in policies/c/bindings/ from wit/ (after a change to the interface).
# Needs wit-bindgen-cli 0.63.0: cargo install wit-bindgen-cli@0.63.0 --locked
#   --no-default-features --features c   (several minutes on two cores; CI uses the committed
# bindings). `--autodrop-borrows yes`: the bindings drop the borrowed message handle when a
# hook returns, so policies need not.
set -euo pipefail
cd "$(dirname "$0")"
wit-bindgen c ../../wit --world policy --autodrop-borrows yes --out-dir bindings
