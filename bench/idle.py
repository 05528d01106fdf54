#!/usr/bin/env python3
"""Memory per idle connection: Sluice's resident memory with 1,000 and 10,000 open, idle SMTP
sessions.

Usage: python3 bench/idle.py [--counts 1000,10000] [--sluice PATH] [--ehlo] [--chain data|all|edge] [--keep]

Builds Sluice in release mode unless --sluice names a binary (and the shipped Rust policies),
starts `sluice serve` on loopback with one tenant and limits raised to 12,000 connections —
its chain the spam-heuristics policy (--chain data, the default: no hook before DATA, so an
idle session holds no policy instance), all five shipped Rust policies (--chain all: a
tenant's connect hooks run at its first recipient, so an idle session holds none of them
either) or spam-heuristics with dnsbl in the edge chain (--chain edge: the edge runs at
connect for every session, so every idle session holds dnsbl's instance) — then opens connections from this
process in batches, reads each one's 220 greeting (and, with --ehlo, sends EHLO and reads the reply), and
leaves them idle. For each count it prints the relay's RSS (VmRSS of /proc/PID/status) before
the first connection and with every connection open, the peak (VmHWM), the difference per
connection, and the private part of it (RssAnon): VmRSS also counts, once per instance, the
pages of a policy's compiled data image that every instance maps from the same file and has
not written to (shared page cache, not memory per connection). Connections come from 127.0.0.1 through 127.0.0.63 (loopback), each kept open until
the end of that count. Needs a file limit above the largest count (raised to the hard limit).
"""
import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import ROOT, WASM, finish, free_ports, server_config, start_sluice, wait_port

SHIPPED = ["sender-guard", "rate-limit", "greylist", "dnsbl", "spam-heuristics"]


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # KiB
    return 0


def open_idle(port, count, ehlo):
    conns = []
    batch = 200
    while len(conns) < count:
        fresh = []
        for i in range(min(batch, count - len(conns))):
            s = socket.socket()
            s.bind((f"127.0.0.{1 + (len(conns) + i) % 63}", 0))
            s.connect(("127.0.0.1", port))
            fresh.append(s)
        for s in fresh:
            s.settimeout(60)
            greeting = s.recv(512)
            if not greeting.startswith(b"220"):
                sys.exit(f"connection {len(conns) + 1}: no greeting but {greeting[:200]!r}")
            if ehlo:
                s.sendall(b"EHLO idle.test\r\n")
                reply = b""
                while b"250 " not in reply:
                    reply += s.recv(4096)
        conns += fresh
    return conns


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="1000,10000")
    ap.add_argument("--sluice", help="the sluice binary (default: build target/release/sluice)")
    ap.add_argument("--ehlo", action="store_true", help="send EHLO on each connection before leaving it idle")
    ap.add_argument("--chain", choices=["data", "all", "edge"], default="data")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(counts) + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"the file limit ({hard}) is below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    if args.sluice is None:
        subprocess.run(["cargo", "build", "--release", "-p", "sluice"], cwd=ROOT, check=True)
        args.sluice = os.path.join(ROOT, "target", "release", "sluice")
    names = SHIPPED if args.chain == "all" else ["spam-heuristics"]
    build = ["cargo", "build", "--release", "--target", "wasm32-wasip2"]
    subprocess.run(build + [arg for name in names + ["dnsbl"] for arg in ("-p", name)], cwd=ROOT, check=True)
    configs = {"sender-guard": 'config = { domains = "example.com" }\n'}
    chain = "".join(f'[[tenant.policy]]\npath = "{os.path.join(WASM, name.replace("-", "_"))}.wasm"\n'
                    + configs.get(name, "") for name in names)
    edge = f'[[edge.policy]]\npath = "{os.path.join(WASM, "dnsbl")}.wasm"\n' if args.chain == "edge" else ""

    print(f"{'connections':>11} {'RSS before':>11} {'RSS open':>10} {'peak':>10} {'per connection':>15} {'private':>10}")
    for count in counts:
        work = tempfile.mkdtemp(prefix="sluice-idle-")
        port, sink = free_ports(2)
        config = server_config(port, 12000) + edge + f"""[[tenant]]
name = "idle"
domains = ["example.com"]
next_hop = "smtp:127.0.0.1:{sink}"
{chain}"""
        relay = start_sluice(args.sluice, work, config)
        try:
            wait_port(port, timeout=300, process=relay)
            time.sleep(1)
            before, anon_before = status(relay.pid, "VmRSS"), status(relay.pid, "RssAnon")
            conns = open_idle(port, count, args.ehlo)
            time.sleep(2)
            if relay.poll() is not None:
                sys.exit("the relay exited; see its log")
            rss, peak = status(relay.pid, "VmRSS"), status(relay.pid, "VmHWM")
            per = (rss - before) * 1024 / count
            private = (status(relay.pid, "RssAnon") - anon_before) * 1024 / count
            print(f"{count:>11} {before / 1024:>8.1f} MiB {rss / 1024:>6.1f} MiB {peak / 1024:>6.1f} MiB "
                  f"{per / 1024:>11.1f} KiB {private / 1024:>6.1f} KiB", flush=True)
            for s in conns:
                s.close()
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait()
            finish(work, args.keep)


if __name__ == "__main__":
    main()
