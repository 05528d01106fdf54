#!/usr/bin/env bash
# Builds a release that runs without a checkout: the static (musl) `sluice`, with the shipped
# policies built in, and dist/sluice-VERSION-x86_64-linux-musl.tar.gz holding it beside the
# systemd unit, the sysusers file, a server configuration and the README. The unpacked folder
# is also the container image's build context (packaging/Dockerfile, FROM scratch):
#     docker build -t sluice:VERSION dist/sluice-VERSION-x86_64-linux-musl
# PROFILE=serve builds the quick profile of scripts/serve.sh instead (dependencies not
# optimised: minutes instead of a quarter of an hour; what CI's package test uses).
# Installs the musl target and Debian's musl-tools (ring's C code) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl
PROFILE=${PROFILE:-release}

for t in "$TARGET" wasm32-wasip2; do
    rustup target list --installed 2>/dev/null | grep -qx "$t" || rustup target add "$t"
done
if ! command -v musl-gcc >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends musl-tools
fi
export CC_x86_64_unknown_linux_musl=musl-gcc
cargo build --locked --profile "$PROFILE" --target "$TARGET" -p sluice
BIN=target/$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/sluice
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
NAME=sluice-$VERSION-x86_64-linux-musl
OUT=dist/$NAME
rm -rf "$OUT" "dist/$NAME.tar.gz"
mkdir -p "$OUT/data"
cp "$BIN" "$OUT/sluice"
strip "$OUT/sluice" 2>/dev/null || true
cp packaging/Dockerfile packaging/sluice.service packaging/sluice.sysusers packaging/sluice.toml README.md "$OUT/"
# The container's own configuration: SMTP on an unprivileged port (published as 25), the
# admin API inside the container only until a configuration with a token is mounted.
sed -e 's/^listen = \["0.0.0.0:25"\]/listen = ["0.0.0.0:2525"]/' \
    -e '/^token_file = /d' packaging/sluice.toml > "$OUT/container.toml"
cp /etc/ssl/certs/ca-certificates.crt "$OUT/"
touch "$OUT/data/.keep"
tar -czf "dist/$NAME.tar.gz" -C dist "$NAME"
echo "$OUT/sluice: $(du -h "$OUT/sluice" | cut -f1), $(ldd "$OUT/sluice" 2>&1 | head -n 1 | tr -d '\t')"
echo "dist/$NAME.tar.gz: $(du -h "dist/$NAME.tar.gz" | cut -f1)"
