#!/usr/bin/env python3
"""Hostile clients against the relay, each attack while a well-behaved client keeps sending.

Usage: hostile.py --sluice BIN --dir DIR [--seconds S] [--connections N] [--data-mib M]

Starts tests/support/sink.py as the next hop and the relay (10 MiB message limit, the default
connection limits: 1,000 in all, 20 per client IP). The well-behaved client (127.0.0.1) sends
one message per connection, back to back, through every phase; each attack comes from an
address of its own in 127.0.0.0/8:
  baseline     no attack
  slowloris    200 connections sending a command one byte every half second
  connections  N connections opened as fast as possible and held open
  command-flood  one connection pipelining NOOPs without reading, and RCPTs without MAIL
  big-data     DATA of M MiB against the 10 MiB limit
  long-line    a command line of 16 MiB without an end
  garbage      10 MiB of random bytes over 10 connections
  tls-garbage  STARTTLS, then random bytes instead of a handshake, 20 times
  auth-brute-force  AUTH PLAIN with wrong passwords, 20 times, a connection each
For each it prints one JSON line: the good client's latency per message (p50, p99, max, ms),
its messages and failures, the relay's largest resident memory (KiB) and what the attack got
back. Exit status 0 when the good client never failed.
"""
import argparse
import base64
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time

from harness import free_port, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
ALICE = "alice:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"


def connect(port, source, timeout=10):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def greeted(port, source):
    """A connection from `source` past its greeting and EHLO, with its reader."""
    s = connect(port, source)
    f = s.makefile("rb")
    read_reply(f)
    s.sendall(b"EHLO attacker.remote.test\r\n")
    read_reply(f)
    return s, f


def read_to_close(s):
    """Everything the relay sends until it closes the connection."""
    data = b""
    while True:
        more = s.recv(65536)
        if not more:
            return data
        data += more


def read_reply(f):
    """One (possibly multi-line) reply from a socket file; '' when the connection closed."""
    lines = []
    while True:
        line = f.readline()
        if not line:
            return "".join(lines)
        lines.append(line.decode("latin-1"))
        if len(line) < 4 or line[3:4] != b"-":
            return "".join(lines)


class GoodClient(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.samples, self.failures, self.errors = [], 0, []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def take(self):
        with self.lock:
            samples, failures, errors = self.samples, self.failures, self.errors
            self.samples, self.failures, self.errors = [], 0, []
        return samples, failures, errors

    def run(self):
        msg = b"From: good@remote.test\r\nTo: bob@example.test\r\nSubject: good\r\n\r\nhello\r\n.\r\n"
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                s = connect(self.port, "127.0.0.1")
                f = s.makefile("rb")
                ok = read_reply(f).startswith("220")
                for cmd, want in [
                    (b"EHLO good.remote.test\r\n", "250"),
                    (b"MAIL FROM:<good@remote.test>\r\n", "250"),
                    (b"RCPT TO:<bob@example.test>\r\n", "250"),
                    (b"DATA\r\n", "354"),
                    (msg, "250"),
                    (b"QUIT\r\n", "221"),
                ]:
                    s.sendall(cmd)
                    answer = read_reply(f)
                    if not answer.startswith(want):
                        ok = False
                        with self.lock:
                            self.errors.append(answer.strip()[:100])
                        break
                s.close()
            except OSError as e:
                ok = False
                with self.lock:
                    self.errors.append(str(e))
            elapsed = (time.perf_counter() - started) * 1000
            with self.lock:
                if ok:
                    self.samples.append(elapsed)
                else:
                    self.failures += 1
            time.sleep(0.02)


class Memory(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0
        self.stop = threading.Event()

    def take(self):
        peak, self.peak = self.peak, 0
        return peak

    def run(self):
        while not self.stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.02)


def until(deadline):
    return time.time() < deadline


def slowloris(port, seconds, _args):
    socks, refused = [], 0
    for _ in range(200):
        try:
            s = connect(port, "127.0.0.2", timeout=2)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            refused += 1
    deadline, sent, i = time.time() + seconds, 0, 0
    text = b"EHLO slow.remote.test\r\n"
    while until(deadline):
        for s in socks:
            try:
                s.send(text[i % len(text):i % len(text) + 1])
                sent += 1
            except OSError:
                pass
        i += 1
        time.sleep(0.5)
    greeted = 0
    for s in socks:
        try:
            s.setblocking(True)
            s.settimeout(0.5)
            if s.recv(100).startswith(b"220"):
                greeted += 1
        except OSError:
            pass
        s.close()
    return {"opened": len(socks), "greeted_220": greeted, "bytes_sent": sent}


def connections(port, seconds, args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 1000), hard))
    socks, failed = [], 0
    deadline = time.time() + max(seconds, 30)
    for _ in range(args.connections):
        if not until(deadline):
            break
        try:
            socks.append(connect(port, "127.0.0.3", timeout=5))
        except OSError:
            failed += 1
    time.sleep(seconds)
    greetings = {}
    for s in socks:
        try:
            s.settimeout(0.2)
            code = s.recv(100)[:3].decode("latin-1") or "closed"
        except OSError:
            code = "none"
        greetings[code] = greetings.get(code, 0) + 1
        s.close()
    return {"attempted": args.connections, "connected": len(socks), "failed": failed, "greetings": greetings}


def command_flood(port, seconds, _args):
    deadline = time.time() + seconds
    noop_replies = 0
    s = connect(port, "127.0.0.4")
    s.sendall(b"EHLO flood.remote.test\r\n")
    box = {"bytes": 0}

    def reader():
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    return
                box["bytes"] += len(data)
        except OSError:
            return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    chunk = b"NOOP\r\n" * 10000
    sent = 0
    try:
        while until(deadline):
            s.sendall(chunk)
            sent += 10000
    except OSError:
        pass
    s.close()
    t.join(timeout=5)
    noop_replies = box["bytes"] // len("250 2.0.0 Ok\r\n")
    # RCPT without MAIL: protocol errors, the relay hangs up after max_errors.
    s = connect(port, "127.0.0.4")
    s.sendall(b"EHLO flood.remote.test\r\n" + b"RCPT TO:<x@example.test>\r\n" * 10000)
    last = b""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            last = (last + data)[-200:]
    except OSError:
        pass
    s.close()
    return {"noops_sent": sent, "noop_replies_about": noop_replies, "rcpt_flood_last": last.decode("latin-1").strip().splitlines()[-1:]}


def big_data(port, _seconds, args):
    s = connect(port, "127.0.0.5", timeout=60)
    f = s.makefile("rb")
    read_reply(f)
    for cmd in [b"EHLO big.remote.test\r\n", b"MAIL FROM:<big@remote.test>\r\n", b"RCPT TO:<bob@example.test>\r\n", b"DATA\r\n"]:
        s.sendall(cmd)
        read_reply(f)
    line = b"x" * 998 + b"\r\n"
    block = line * 1024  # 1 MiB
    started = time.time()
    for _ in range(args.data_mib):
        s.sendall(block)
    s.sendall(b".\r\n")
    answer = read_reply(f).strip()
    seconds = time.time() - started
    s.close()
    return {"mib_sent": args.data_mib, "reply": answer, "seconds": round(seconds, 2)}


def long_line(port, _seconds, _args):
    s = connect(port, "127.0.0.6", timeout=30)
    f = s.makefile("rb")
    read_reply(f)
    sent = 0
    try:
        for _ in range(16):
            s.sendall(b"EHLO " + b"a" * (1 << 20))
            sent += 1 << 20
    except OSError:
        pass
    try:
        answer = read_reply(f).strip()
    except OSError as e:
        answer = str(e)
    s.close()
    return {"bytes_sent": sent, "reply": answer[:120]}


def garbage(port, _seconds, _args):
    replies = []
    for _ in range(10):
        s = connect(port, "127.0.0.7", timeout=10)
        try:
            s.sendall(os.urandom(1 << 20))
        except OSError:
            pass
        try:
            data = read_to_close(s)
            replies.append(data.decode("latin-1").strip().splitlines()[-1][:60] if data.strip() else "closed")
        except OSError as e:
            replies.append(str(e)[:60])
        s.close()
    return {"connections": 10, "last_replies": sorted(set(replies))}


def tls_garbage(port, _seconds, _args):
    outcomes = {}
    for _ in range(20):
        s, f = greeted(port, "127.0.0.8")
        s.sendall(b"STARTTLS\r\n")
        ready = read_reply(f)[:3]
        try:
            s.sendall(os.urandom(65536))
            data = read_to_close(s)
            # A TLS alert record (content type 21), then the close; or a plain close.
            end = "alert, closed" if data[:1] == b"\x15" else ("closed" if not data else "answered")
        except OSError:
            end = "closed"
        key = f"{ready} then {end}"
        outcomes[key] = outcomes.get(key, 0) + 1
        s.close()
    return {"attempts": 20, "outcomes": outcomes}


def auth_brute_force(port, _seconds, _args):
    codes = {}
    for n in range(20):
        s, f = greeted(port, "127.0.0.9")
        token = base64.b64encode(f"\0alice\0guess{n}".encode())
        s.sendall(b"AUTH PLAIN " + token + b"\r\n")
        code = read_reply(f)[:3] or "closed"
        codes[code] = codes.get(code, 0) + 1
        s.close()
    return {"attempts": 20, "replies": codes}


ATTACKS = [
    ("baseline", None),
    ("slowloris", slowloris),
    ("connections", connections),
    ("command-flood", command_flood),
    ("big-data", big_data),
    ("long-line", long_line),
    ("garbage", garbage),
    ("tls-garbage", tls_garbage),
    ("auth-brute-force", auth_brute_force),
]


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--data-mib", type=int, default=100)
    ap.add_argument("--only", default=None, help="comma-separated attack names")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    sink_port, port = free_port(), free_port()
    with open(os.path.join(args.dir, "users"), "w") as f:
        f.write(ALICE + "\n")
    with open(os.path.join(args.dir, "sluice.toml"), "w") as f:
        f.write(
            f'[server]\nhostname = "relay.test"\nlisten = ["127.0.0.1:{port}"]\n'
            f"max_message_bytes = 10485760\n"
            f'[spool]\ndir = "spool"\n'
            f'[tls]\ncert = "{os.path.join(HERE, "relay-cert.pem")}"\nkey = "{os.path.join(HERE, "relay-key.pem")}"\n'
            f'[relay]\ntrusted_networks = []\nauth_users_file = "users"\nallow_plaintext_auth_on_loopback = true\n'
            f'[[tenant]]\nname = "example"\ndomains = ["example.test"]\nnext_hop = "smtp:127.0.0.1:{sink_port}"\n'
        )
    sink = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "sink.py"), str(sink_port), os.path.join(args.dir, "sink")],
        stdout=subprocess.PIPE,
    )
    sink.stdout.readline()
    env = dict(os.environ, SLUICE_LOG="warn")
    env.setdefault("SLUICE_CACHE_DIR", os.path.join(args.dir, "cache"))
    relay = subprocess.Popen(
        [args.sluice, "serve", "--config", os.path.join(args.dir, "sluice.toml")],
        stderr=open(os.path.join(args.dir, "relay.log"), "wb"), env=env,
    )
    all_ok = True
    try:
        wait_port(port, relay)
        good, memory = GoodClient(port), Memory(relay.pid)
        good.start()
        memory.start()
        chosen = set(args.only.split(",")) if args.only else None
        for name, attack in ATTACKS:
            if chosen and name not in chosen and name != "baseline":
                continue
            good.take()
            memory.take()
            started = time.time()
            result = attack(port, args.seconds, args) if attack else None
            # Each phase lasts at least the set time, so the good client is measured in it.
            time.sleep(max(0.0, started + args.seconds - time.time()))
            samples, failures, errors = good.take()
            line = {
                "attack": name,
                "seconds": round(time.time() - started, 1),
                "good_messages": len(samples),
                "good_failures": failures,
                "good_errors": sorted(set(errors))[:3],
                "good_p50_ms": percentile(samples, 0.5),
                "good_p99_ms": percentile(samples, 0.99),
                "good_max_ms": round(max(samples), 1) if samples else None,
                "relay_rss_max_kib": memory.take(),
                "result": result,
            }
            all_ok = all_ok and failures == 0 and len(samples) > 0
            print(json.dumps(line), flush=True)
        good.stop.set()
        memory.stop.set()
    finally:
        relay.kill()
        relay.wait()
        sink.kill()
        sink.wait()
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
