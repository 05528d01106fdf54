#!/usr/bin/env python3
"""Tenant isolation under load: one tenant's throughput while another tenant's policy misbehaves.

Usage: python3 bench/isolation.py [--sluice target/release/sluice] [--messages 3000]
                                  [--sessions 10] [--noisy-rate 200] [--noisy-sessions 10]
                                  [--runs 3] [--keep]

Needs Postfix's smtp-source and smtp-sink (Debian package postfix; no Postfix instance is
configured or started) and release builds:
    cargo build --release -p sluice
    cargo build --release --target wasm32-wasip2 -p spam-heuristics -p probe

On loopback only it starts one smtp-sink per tenant (their next hops) and `sluice serve` with
two tenants:
  - steady (steady.test): the shipped spam-heuristics policy;
  - noisy (noisy.test): the test probe policy, healthy (it adds a header) or faulting at RCPT
    on every message: `loop` (spins until its CPU deadline), `alloc` (grows memory until its
    cap), `log` (logs until its deadline), `trap` (panics).
For each scenario a fresh relay is started; smtp-source sends --messages messages to steady
(--sessions at a time, a new connection per message) while a Python client offers noisy
--noisy-rate messages a second (from --noisy-sessions threads, a new connection each, going on
whatever the replies: smtp-source stops at the first refusal) for the whole measurement. The
figure is steady's throughput (messages its sink received / time from the first connection to
the last delivery), median of --runs; each faulting scenario is compared with the
healthy-neighbour scenario (the same offered load on noisy, nothing faulting) and with steady
alone.
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import ROOT, WASM, Sink, free_ports, server_config, start_sluice, wait_port


def config(port, steady_sink, noisy_sink, noisy_fault):
    probe = os.path.join(WASM, "probe.wasm")
    spam = os.path.join(WASM, "spam_heuristics.wasm")
    if noisy_fault:
        probe_config = f'fault = "{noisy_fault}", fault_stage = "rcpt"'
    else:
        probe_config = 'header = "X-Probe: healthy"'
    return server_config(port, 2000) + f"""[state]
backend = "memory"
[relay]
trusted_networks = []
[[tenant]]
name = "steady"
domains = ["steady.test"]
next_hop = "smtp:127.0.0.1:{steady_sink}"
[[tenant.policy]]
path = "{spam}"
[[tenant]]
name = "noisy"
domains = ["noisy.test"]
next_hop = "smtp:127.0.0.1:{noisy_sink}"
[[tenant.policy]]
path = "{probe}"
config = {{ {probe_config} }}
"""


def smtp_source(port, messages, sessions, rcpt):
    args = ["smtp-source", "-m", str(messages), "-s", str(sessions), "-l", "4096",
            "-f", "sender@remote.test", "-t", rcpt, f"127.0.0.1:{port}"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def noisy_worker(port, rate, threads):
    """Offer `rate` messages a second to tenant noisy, one connection each, whatever the replies
    (smtp-source stops at the first refusal): `threads` clients, each on its own schedule."""
    import smtplib
    import threading

    body = "Subject: noisy\r\n\r\n" + ("x" * 76 + "\r\n") * 52
    interval = threads / rate

    def client(offset):
        due = time.time() + offset
        while True:
            due += interval
            try:
                s = smtplib.SMTP("127.0.0.1", port, timeout=30)
                s.ehlo("c.remote.test")
                s.mail("sender@remote.test")
                if s.rcpt("user@noisy.test")[0] == 250:
                    s.data(body)
                s.quit()
            except (OSError, smtplib.SMTPException):
                pass
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            else:
                due = time.time()

    for i in range(threads):
        threading.Thread(target=client, args=(i * interval / threads,), daemon=True).start()
    while True:
        time.sleep(3600)


def measure(args, noisy_fault, with_neighbour):
    """Steady's throughput (msg/s) per run, and noisy's deliveries meanwhile."""
    workdir = tempfile.mkdtemp(prefix="sluice-isolation-")
    port, steady_port, noisy_port = free_ports(3)
    steady_sink, noisy_sink = Sink(steady_port, workdir, "steady"), Sink(noisy_port, workdir, "noisy")
    env = dict(os.environ, SLUICE_LOG="error")
    relay = start_sluice(args.sluice, workdir, config(port, steady_port, noisy_port, noisy_fault), env)
    rates = []
    noisy = None
    try:
        wait_port(port, process=relay)
        if with_neighbour:
            # A constant offered load on noisy for the whole measurement.
            noisy = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--noisy-worker", str(port),
                                      str(args.noisy_rate), str(args.noisy_sessions)])
            time.sleep(2.0)
        for _ in range(args.runs):
            before = steady_sink.count()
            started = time.time()
            smtp_source(port, args.messages, args.sessions, "user@steady.test").wait()
            deadline = time.time() + 300
            while steady_sink.count() - before < args.messages and time.time() < deadline:
                time.sleep(0.02)
            got = steady_sink.count() - before
            if got < args.messages:
                print(f"  only {got} of {args.messages} messages arrived", file=sys.stderr)
            rates.append(got / (time.time() - started))
    finally:
        if noisy:
            noisy.kill()
            noisy.wait()
        noisy_delivered = noisy_sink.count()
        relay.send_signal(signal.SIGTERM)
        relay.wait()
        steady_sink.stop()
        noisy_sink.stop()
        if args.keep:
            print(f"  kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rates, noisy_delivered


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", default=os.path.join(ROOT, "target", "release", "sluice"))
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--noisy-sessions", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--noisy-rate", type=int, default=200, help="messages a second offered to noisy")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--noisy-worker", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.noisy_worker:
        noisy_worker(*args.noisy_worker)
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install postfix (no instance is configured or started)")
    for f in (args.sluice, os.path.join(WASM, "probe.wasm"), os.path.join(WASM, "spam_heuristics.wasm")):
        if not os.path.exists(f):
            sys.exit(f"{f} is missing; see the build commands in this script's header")

    print(f"steady: {args.messages} messages x {args.runs} runs, {args.sessions} sessions (smtp-source); "
          f"noisy: {args.noisy_rate} msg/s offered by {args.noisy_sessions} clients throughout; "
          "4 KiB messages, one connection each")
    scenarios = [("steady alone", None, False), ("healthy neighbour", None, True)]
    scenarios += [(f"neighbour's policy: {f}", f, True) for f in ("loop", "alloc", "log", "trap")]
    baseline = None
    alone = None
    for name, fault, neighbour in scenarios:
        rates, noisy = measure(args, fault, neighbour)
        median = statistics.median(rates)
        runs = ", ".join(f"{r:.0f}" for r in rates)
        line = f"{name:<28} steady {median:7.1f} msg/s (runs: {runs})"
        if neighbour:
            line += f"; noisy delivered {noisy}"
        if alone is None:
            alone = median
        elif baseline is None:
            baseline = median
            line += f"; {median / alone:.2f} of alone"
        else:
            line += f"; {median / baseline:.2f} of healthy-neighbour, {median / alone:.2f} of alone"
        print(line, flush=True)


if __name__ == "__main__":
    main()
