#!/usr/bin/env bash
# Tests the release tarball (scripts/release.sh) away from the checkout: the static binary is
# static, checks the packaged server configuration (builtin policies, no files beside it),
# runs the relay from an empty folder with the shipped policies built in, takes a message to
# a real next hop, answers `sluice health`, stops cleanly on SIGTERM; and systemd-analyze
# verify accepts the unit. Usage: scripts/package-test.sh [dist/sluice-…tar.gz]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TARBALL=${1:-$(ls -t dist/sluice-*-x86_64-linux-musl.tar.gz | head -n 1)}
WORK=$(mktemp -d /tmp/sluice-package.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
tar -xzf "$TARBALL" -C "$WORK"
PKG=$(echo "$WORK"/sluice-*)
BIN=$PKG/sluice
fail() { echo "package test: $*" >&2; exit 1; }

echo "== the binary is static"
ldd "$BIN" 2>&1 | grep -Eq "statically linked|not a dynamic executable" || fail "not static: $(ldd "$BIN" 2>&1)"

echo "== systemd-analyze verify accepts the unit"
sed "s|/usr/local/bin/sluice|$BIN|g" "$PKG/sluice.service" > "$WORK/sluice.service"
systemd-analyze verify "$WORK/sluice.service"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SMTP=$(free_port); ADMIN=$(free_port); SINK=$(free_port)
mkdir -p "$WORK/run/etc" "$WORK/run/sink"
cd "$WORK/run"
openssl rand -hex 32 > etc/admin.token
export SLUICE_CACHE_DIR=$WORK/run/cache

echo "== sluice check of the packaged configuration (policies built in)"
sed -e "s|/var/lib/sluice|$WORK/run/var|g" -e "s|/etc/sluice/admin.token|$WORK/run/etc/admin.token|" \
    "$PKG/sluice.toml" > etc/packaged.toml
"$BIN" check --config etc/packaged.toml

echo "== the relay from an empty folder"
sed -e "s|0.0.0.0:25\"|127.0.0.1:$SMTP\"|" -e "s|127.0.0.1:9125|127.0.0.1:$ADMIN|" \
    -e "s|smtp:mail.internal.example.com:25|smtp:127.0.0.1:$SINK|" \
    -e '/zen.spamhaus.org/d' -e 's|path = "builtin:dnsbl"|path = "builtin:sender-guard"\nconfig = { domains = "example.com" }|' \
    -e 's|path = "builtin:greylist"|path = "builtin:greylist"\nconfig = { exempt_networks = "127.0.0.0/8" }|' \
    etc/packaged.toml > etc/sluice.toml
python3 "$REPO/host/tests/support/sink.py" "$SINK" sink &
"$BIN" serve --config etc/sluice.toml 2> relay.log &
RELAY=$!
for _ in $(seq 1 300); do
    "$BIN" health --config etc/sluice.toml >/dev/null 2>&1 && break
    kill -0 $RELAY 2>/dev/null || fail "the relay exited: $(cat relay.log)"
    sleep 0.2
done
"$BIN" health --config etc/sluice.toml
python3 - "$SMTP" <<'PY'
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    refused = s.sendmail("alice@remote.test", ["bob@example.com"],
                         "From: alice@remote.test\r\nTo: bob@example.com\r\nSubject: packaged\r\n"
                         "Message-ID: <p@remote.test>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nhello\r\n")
    assert refused == {}, refused
PY
for _ in $(seq 1 100); do ls sink/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
ls sink/*.eml >/dev/null 2>&1 || fail "the next hop got nothing: $(cat relay.log)"
ls cache/builtin/*/ | grep -q spam-heuristics.wasm || fail "no builtin policy written to the cache"
kill -TERM $RELAY
wait $RELAY || fail "the relay did not exit cleanly on SIGTERM: $(tail -5 relay.log)"
"$BIN" health --config etc/sluice.toml >/dev/null 2>&1 && fail "health says ok with the relay stopped"
echo "package test: ok ($(basename "$TARBALL"))"
