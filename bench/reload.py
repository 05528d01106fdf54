#!/usr/bin/env python3
"""Hot reload under load: reload latency, and 100 reloads while 20 clients send mail.

Usage: python3 bench/reload.py [--sluice target/release/sluice] [--reloads 100] [--clients 20]
                               [--latency-runs 40] [--cold-restarts 7] [--keep]

Needs the relay and the shipped policies built in release mode:
    cargo build --release -p sluice
    cargo build --release --target wasm32-wasip2 -p spam-heuristics -p dnsbl -p greylist -p rate-limit

It starts, on loopback only, a test next hop (host/tests/support/sink.py) and `sluice serve`
with one tenant whose policy file is policies/filter.wasm, then prints:

1. reload latency: a new version of the file is renamed into place; the time until
   GET /api/policies shows the new content hash, i.e. until new sessions get the new
   generation (the file watcher's quiet period, validation and the swap): for shipped
   policies the relay has never loaded (compiled; several fresh relays: they run at once
   on baseline code, optimised code follows), and for two alternating ones it has (from
   the compile cache); and how long until a new build runs on optimised code.
2. reloads under load: 20 client threads send mail, one new connection per message, while
   the file is replaced 100 times (alternating spam-heuristics and dnsbl, every fifth time
   first by a broken file); then every message the relay answered 250 must reach the next
   hop, no transaction may fail, and every transaction's log line names one generation.
"""
import argparse
import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from benchlib import ROOT, WASM, free_ports, relay_log, server_config, start_sluice, wait_port


def deploy(target, data):
    tmp = target + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, target)


def api(admin, path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def current_hash(admin):
    listing = json.loads(api(admin, "/api/policies"))
    return listing["tenants"][0]["policies"][0]["hash"]


def metric(admin, name):
    for line in api(admin, "/metrics").splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_hash(admin, wanted, timeout=10.0):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if current_hash(admin) == wanted:
            return time.perf_counter()
        time.sleep(0.002)
    return None


def code_tier(admin):
    listing = json.loads(api(admin, "/api/policies"))
    return listing["tenants"][0]["policies"][0].get("code")


def wait_optimized(admin, timeout=30.0):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if code_tier(admin) == "optimized":
            return time.perf_counter()
        time.sleep(0.002)
    return None


def never_seen(component):
    """`component` with a custom section appended: the same code under a new content hash."""
    def leb(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)
    name = b"bench"
    payload = f"{time.time_ns()}-{os.getpid()}".encode()
    body = leb(len(name)) + name + payload
    return component + b"\x00" + leb(len(body)) + body


def sha256(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


class Relay:
    """`sluice serve` in a fresh directory (fresh compile cache) with a test next hop."""

    def __init__(self, sluice, first_policy):
        self.work = tempfile.mkdtemp(prefix="sluice-reload-bench-")
        os.makedirs(os.path.join(self.work, "policies"))
        self.filter = os.path.join(self.work, "policies", "filter.wasm")
        deploy(self.filter, first_policy)
        self.port, self.admin, sink_port = free_ports(3)
        config = server_config(self.port, 2000, per_ip=1000) + f"""[admin]
listen = "127.0.0.1:{self.admin}"
[relay]
trusted_networks = ["127.0.0.0/8"]
[delivery]
retry_base_secs = 1
retry_max_secs = 2
[[tenant]]
name = "example"
domains = ["example.test"]
next_hop = "smtp:127.0.0.1:{sink_port}"
[[tenant.policy]]
path = "policies/filter.wasm"
"""
        self.sink = subprocess.Popen([sys.executable, os.path.join(ROOT, "host/tests/support/sink.py"),
                                      str(sink_port), os.path.join(self.work, "sink")], stdout=subprocess.PIPE)
        self.sink.stdout.readline()
        env = dict(os.environ, SLUICE_CACHE_DIR=os.path.join(self.work, "cache"), SLUICE_LOG="info")
        self.relay = start_sluice(sluice, self.work, config, env)
        wait_port(self.port, process=self.relay)
        wait_port(self.admin, process=self.relay)

    def stop(self, keep=False):
        self.relay.terminate()
        self.relay.wait()
        self.sink.terminate()
        if keep:
            print(f"working directory kept: {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", default=os.path.join(ROOT, "target", "release", "sluice"))
    ap.add_argument("--reloads", type=int, default=100)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--latency-runs", type=int, default=40)
    ap.add_argument("--cold-restarts", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the working directory (printed)")
    args = ap.parse_args()
    names = ["spam_heuristics", "dnsbl", "greylist", "rate_limit"]
    paths = [os.path.join(WASM, f"{n}.wasm") for n in names]
    for path in [args.sluice] + paths:
        if not os.path.exists(path):
            sys.exit(f"missing {path}: build it first (see the docstring)")
    blobs = {n: open(p, "rb").read() for n, p in zip(names, paths)}

    # 1a. New components: a relay started on greylist gets each other shipped policy for the
    # first time (compiled then; functions it shares with what the relay already
    # compiled, such as the standard library's and the SDK's, are taken from the function
    # cache). A fresh relay and compile cache each round.
    # New components run at once on code from the baseline compiler; the optimised code
    # replaces it in the background. Each round ends with a new build of spam-heuristics
    # (a never-seen content hash) whose time to optimised code is measured too.
    cold, optimized = [], []
    for _ in range(args.cold_restarts):
        relay = Relay(args.sluice, blobs["greylist"])
        try:
            for name in ["spam_heuristics", "dnsbl", "rate_limit", "new build"]:
                blob = never_seen(blobs["spam_heuristics"]) if name == "new build" else blobs[name]
                before = time.perf_counter()
                deploy(relay.filter, blob)
                done = wait_hash(relay.admin, sha256(blob))
                cold.append((done - before) * 1000 if done else float("inf"))
                if name == "new build":
                    ready = wait_optimized(relay.admin)
                    optimized.append((ready - before) * 1000 if ready else float("inf"))
                time.sleep(0.05)
        finally:
            relay.stop()

    relay = Relay(args.sluice, blobs["spam_heuristics"])
    try:
        run(args, relay, [blobs["spam_heuristics"], blobs["dnsbl"]], cold, optimized)
    finally:
        relay.stop(args.keep)


def run(args, relay, blobs, cold, optimized):
    work, filter_path, port, admin = relay.work, relay.filter, relay.port, relay.admin
    hashes = [sha256(b) for b in blobs]

    # 1b. Known components (in the compile cache): first make sure both are.
    for i in range(2):
        deploy(filter_path, blobs[i])
        wait_hash(admin, hashes[i])
        wait_optimized(admin)
    warm = []
    for i in range(args.latency_runs):
        blob, digest = blobs[i % 2], hashes[i % 2]
        if current_hash(admin) == digest:
            blob, digest = blobs[(i + 1) % 2], hashes[(i + 1) % 2]
        before = time.perf_counter()
        deploy(filter_path, blob)
        done = wait_hash(admin, digest)
        warm.append((done - before) * 1000 if done else float("inf"))
        time.sleep(0.05)
    print("reload latency, file renamed into place -> new sessions on the new generation (ms)")
    print(f"  new components (compiled), {len(cold)} reloads:   p50 {percentile(cold, 50):.0f}  "
          f"p99 {percentile(cold, 99):.0f}  max {max(cold):.0f}")
    print(f"  ... until a new build of spam-heuristics runs on optimised code, {len(optimized)} reloads:  "
          f"p50 {percentile(optimized, 50):.0f}  p99 {percentile(optimized, 99):.0f}  max {max(optimized):.0f}")
    print(f"  known components (cached), {len(warm)} reloads:  p50 {percentile(warm, 50):.0f}  "
          f"p99 {percentile(warm, 99):.0f}  max {max(warm):.0f}")

    # 2. Reloads under load.
    failed_before = metric(admin, 'sluice_reloads_total{result="failed"}')
    applied_before = metric(admin, 'sluice_reloads_total{result="applied"}')
    stop = threading.Event()
    counts = {"sent": 0, "accepted": 0, "failed": 0}
    errors = []
    lock = threading.Lock()
    body = ("From: alice@example.test\r\nTo: bob@example.test\r\nSubject: load\r\n"
            "Date: Sat, 28 Nov 2026 00:00:00 +0000\r\nMessage-ID: <{n}@example.test>\r\n\r\n" + "x" * 4000 + "\r\n")

    def client(k):
        n = 0
        while not stop.is_set():
            n += 1
            try:
                s = smtplib.SMTP("127.0.0.1", port, timeout=30)
                refused = s.sendmail("alice@example.test", ["bob@example.test"], body.format(n=f"{k}.{n}"))
                s.quit()
                with lock:
                    counts["sent"] += 1
                    counts["accepted" if not refused else "failed"] += 1
            except Exception as e:  # any failure counts
                with lock:
                    counts["sent"] += 1
                    counts["failed"] += 1
                    errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    started = time.time()
    broken = [blobs[0][: len(blobs[0]) // 2], b"not a component at all"]
    for i in range(args.reloads):
        if i % 5 == 4:
            deploy(filter_path, broken[i % 2])
            time.sleep(0.25)
        deploy(filter_path, blobs[i % 2])
        time.sleep(0.25)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.time() - started
    # Every accepted message must reach the next hop.
    deadline = time.time() + 120
    delivered = 0
    while time.time() < deadline:
        delivered = len([f for f in os.listdir(os.path.join(work, "sink")) if f.endswith(".eml")])
        if delivered >= counts["accepted"]:
            break
        time.sleep(0.5)
    failed = metric(admin, 'sluice_reloads_total{result="failed"}') - failed_before
    applied = metric(admin, 'sluice_reloads_total{result="applied"}') - applied_before
    lines = [l for l in open(relay_log(work)) if " transaction " in l or l.rstrip().endswith("transaction")]
    generations = set()
    one_each = True
    for l in lines:
        found = [w for w in l.split() if w.startswith("generation=")]
        one_each &= len(found) == 1
        generations.update(found)
    print(f"\nreloads under load: {args.clients} clients, new connection per message, {args.reloads} file "
          f"replacements (+{args.reloads // 5} broken files) in {elapsed:.0f} s")
    print(f"  reloads applied {applied:.0f}, refused (broken file) {failed:.0f}")
    print(f"  messages sent {counts['sent']}, answered 250 {counts['accepted']}, failed {counts['failed']}, "
          f"delivered to the next hop {delivered}, lost {max(0, counts['accepted'] - delivered)}")
    print(f"  transaction log lines {len(lines)}, each naming exactly one generation: {one_each}; "
          f"generations seen {len(generations)}")
    if errors:
        print("  first errors:", errors[:3])


if __name__ == "__main__":
    main()
