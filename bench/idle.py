#!/usr/bin/env python3
"""Memory per idle connection: Sluice's resident memory with 1,000 and 10,000 open, idle SMTP
sessions.

Usage: python3 bench/idle.py [--counts 1000,10000] [--sluice PATH] [--ehlo] [--keep]

Builds Sluice in release mode unless --sluice names a binary (and the policy), starts `sluice serve` on loopback
(one tenant with the shipped spam-heuristics policy, so the policy engine is loaded as in
production; limits raised to 12,000 connections), then opens connections from this process in
batches, reads each one's 220 greeting (and, with --ehlo, sends EHLO and reads the reply), and
leaves them idle. For each count it prints the relay's RSS (VmRSS of /proc/PID/status) before
the first connection and with every connection open, the peak (VmHWM), and the difference per
connection. Connections come from 127.0.0.1 through 127.0.0.63 (loopback), each kept open until
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

from benchlib import ROOT, WASM, finish, free_ports, wait_port


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
            if not s.recv(512).startswith(b"220"):
                sys.exit("no greeting")
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
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(counts) + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"the file limit ({hard}) is below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    if args.sluice is not None:
        args.sluice = os.path.abspath(args.sluice)
    else:
        subprocess.run(["cargo", "build", "--release", "-p", "sluice"], cwd=ROOT, check=True)
        args.sluice = os.path.join(ROOT, "target", "release", "sluice")
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip2", "-p", "spam-heuristics"],
                   cwd=ROOT, check=True)
    policy = os.path.join(WASM, "spam_heuristics.wasm")
    if not os.path.exists(policy):
        sys.exit(f"{policy} is missing: cargo build --release --target wasm32-wasip2 -p spam-heuristics")

    print(f"{'connections':>11} {'RSS before':>11} {'RSS open':>10} {'peak':>10} {'per connection':>15}")
    for count in counts:
        work = tempfile.mkdtemp(prefix="sluice-idle-")
        port, sink = free_ports(2)
        with open(os.path.join(work, "sluice.toml"), "w") as f:
            f.write(f"""[server]
hostname = "relay.test"
listen = ["127.0.0.1:{port}"]
max_connections = 12000
max_connections_per_ip = 12000
[spool]
dir = "spool"
[[tenant]]
name = "idle"
domains = ["example.com"]
next_hop = "smtp:127.0.0.1:{sink}"
[[tenant.policy]]
path = "{policy}"
""")
        relay = subprocess.Popen([args.sluice, "serve", "--config", "sluice.toml"], cwd=work,
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "relay.log"), "wb"))
        try:
            wait_port(port, timeout=300, process=relay)
            time.sleep(1)
            before = status(relay.pid, "VmRSS")
            conns = open_idle(port, count, args.ehlo)
            time.sleep(2)
            if relay.poll() is not None:
                sys.exit("the relay exited; see its log")
            rss, peak = status(relay.pid, "VmRSS"), status(relay.pid, "VmHWM")
            per = (rss - before) * 1024 / count
            print(f"{count:>11} {before / 1024:>8.1f} MiB {rss / 1024:>6.1f} MiB {peak / 1024:>6.1f} MiB "
                  f"{per / 1024:>11.1f} KiB", flush=True)
            for s in conns:
                s.close()
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait()
            finish(work, args.keep)


if __name__ == "__main__":
    main()
