#!/usr/bin/env python3
"""Durability under crash: mail under load, the relay killed with SIGKILL at random moments and
started again, then every message accounted for at the next hop.

Usage: crash.py --sluice BIN --dir DIR [--kills N] [--senders N] [--seed S]
                [--min-gap SECONDS] [--max-gap SECONDS] [--settle SECONDS]

Senders (one connection per message, Python's smtplib) send messages of 2 KiB to 512 KiB, each
with its own sequence number in an `X-Crash-Seq` header and a body made from it. Each attempt
ends one of four ways: `accepted` (250 to the end of DATA), `refused` (a 4xx/5xx reply to the
end of DATA), `unknown` (the connection died after the message was sent, before its reply: the
client cannot know; RFC 1047), or `not-sent` (the connection died before the end of DATA).
The next hop is tests/support/sink.py (it waits 20 ms before answering each message, so that
kills also land while messages are being delivered).

At every kill the script notes where things stood: sessions inside DATA, messages in the spool,
the next hop's open connections. After the last kill and restart it waits until the spool is
empty, then reads what the next hop received and prints one JSON object:
  attempts, accepted, refused, unknown, not_sent, delivered (distinct messages),
  lost (accepted but never delivered: must be 0), delivered_unaccepted (refused yet delivered:
  must be 0), delivered_unknown, duplicates (extra copies), corrupt (delivered copies whose body
  differs from what was sent: must be 0), kills, phases, seconds.
Exit status 0 when lost, delivered_unaccepted and corrupt are all 0.
"""
import argparse
import glob
import hashlib
import json
import os
import random
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

from harness import free_port, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = [2048, 2048, 16384, 65536, 524288]


def body_of(seq, size):
    line = f"message {seq:08d} line %06d: the quick brown fox jumps over the lazy dog\r\n"
    out, n = [], 0
    while n < size:
        text = line % len(out)
        out.append(text)
        n += len(text)
    return "".join(out)


def message_of(seq, size):
    head = (
        f"From: Sender <sender@remote.test>\r\nTo: bob@example.test\r\nSubject: crash test {seq}\r\n"
        f"Date: Sat, 28 Nov 2026 00:00:00 +0000\r\nMessage-ID: <{seq}.crash@remote.test>\r\n"
        f"X-Crash-Seq: {seq}\r\nX-Crash-Size: {size}\r\n\r\n"
    )
    return head + body_of(seq, size)


class Relay:
    def __init__(self, binary, directory, port):
        self.binary, self.dir, self.port = binary, directory, port
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        log = open(os.path.join(self.dir, f"relay-{self.starts}.log"), "wb")
        env = dict(os.environ, SLUICE_LOG="info")
        env.setdefault("SLUICE_CACHE_DIR", os.path.join(self.dir, "cache"))
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", os.path.join(self.dir, "sluice.toml")],
            stderr=log, stdout=subprocess.DEVNULL, env=env,
        )
        wait_port(self.port, self.proc)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--min-gap", type=float, default=0.3)
    ap.add_argument("--max-gap", type=float, default=1.5)
    ap.add_argument("--settle", type=float, default=120.0)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    os.makedirs(args.dir, exist_ok=True)
    sink_dir = os.path.join(args.dir, "sink")
    spool_queue = os.path.join(args.dir, "spool", "queue")
    sink_port, port = free_port(), free_port()
    with open(os.path.join(args.dir, "sluice.toml"), "w") as f:
        f.write(
            f'[server]\nhostname = "relay.test"\nlisten = ["127.0.0.1:{port}"]\n'
            f"max_message_bytes = 10485760\n"
            f'[spool]\ndir = "spool"\n'
            f"[relay]\ntrusted_networks = []\n"
            f"[delivery]\nretry_base_secs = 1\nretry_max_secs = 2\n"
            f'[[tenant]]\nname = "example"\ndomains = ["example.test"]\n'
            f'next_hop = "smtp:127.0.0.1:{sink_port}"\n'
        )
    sink = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "sink.py"), str(sink_port), sink_dir, "--delay", "0.02"],
        stdout=subprocess.PIPE,
    )
    sink.stdout.readline()
    relay = Relay(args.sluice, args.dir, port)
    relay.start()

    lock = threading.Lock()
    outcomes = {}  # seq -> (outcome, size)
    in_data = set()
    counter = [0]
    stop = threading.Event()

    def sender(index):
        local = random.Random(seed * 31 + index)
        while not stop.is_set():
            with lock:
                counter[0] += 1
                seq = counter[0]
            size = local.choice(SIZES)
            msg = message_of(seq, size)
            stage = "connect"
            try:
                s = smtplib.SMTP("127.0.0.1", port, timeout=20)
                s.ehlo("client.remote.test")
                stage = "envelope"
                code, _ = s.mail("sender@remote.test")
                if code != 250:
                    raise smtplib.SMTPResponseException(code, b"")
                code, _ = s.rcpt("bob@example.test")
                if code != 250:
                    raise smtplib.SMTPResponseException(code, b"")
                stage = "data"
                with lock:
                    in_data.add(seq)
                try:
                    code, _ = s.data(msg)
                    outcome = "accepted" if code == 250 else "refused"
                except smtplib.SMTPDataError:
                    outcome = "refused"
                except (smtplib.SMTPServerDisconnected, OSError):
                    outcome = "unknown"
                finally:
                    with lock:
                        in_data.discard(seq)
                with lock:
                    outcomes[seq] = (outcome, size)
                try:
                    s.quit()
                except (smtplib.SMTPException, OSError):
                    pass
            except (smtplib.SMTPException, OSError):
                if stage != "data":
                    with lock:
                        outcomes[seq] = ("not-sent", size)
                time.sleep(0.02)

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(args.senders)]
    started = time.time()
    for t in threads:
        t.start()

    phases = []
    for _ in range(args.kills):
        time.sleep(rng.uniform(args.min_gap, args.max_gap))
        with lock:
            inside = len(in_data)
        queued = len(glob.glob(os.path.join(spool_queue, "*.mail")))
        try:
            with open(os.path.join(sink_dir, "stats.json")) as f:
                sink_open = json.load(f).get("open", 0)
        except (OSError, ValueError):
            sink_open = 0
        relay.kill()
        phases.append({"in_data": inside, "queued": queued, "next_hop_open": sink_open})
        time.sleep(rng.uniform(0.0, 0.3))
        relay.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)

    # Everything accepted must reach the next hop, and the spool must empty.
    deadline = time.time() + args.settle
    while time.time() < deadline and glob.glob(os.path.join(spool_queue, "*.mail")):
        time.sleep(0.2)
    time.sleep(0.5)
    relay.kill()
    left_in_spool = len(glob.glob(os.path.join(spool_queue, "*.mail")))
    sink.kill()
    sink.wait()

    copies, corrupt = {}, 0
    for path in glob.glob(os.path.join(sink_dir, "*.eml")):
        with open(path, "rb") as f:
            data = f.read()
        head, _, body = data.partition(b"\r\n\r\n")
        seq = size = None
        for line in head.split(b"\r\n"):
            if line.startswith(b"X-Crash-Seq: "):
                seq = int(line.split(b": ", 1)[1])
            if line.startswith(b"X-Crash-Size: "):
                size = int(line.split(b": ", 1)[1])
        if seq is None or size is None:
            corrupt += 1
            continue
        want = hashlib.sha256(body_of(seq, size).encode()).digest()
        if hashlib.sha256(body).digest() != want:
            corrupt += 1
        copies[seq] = copies.get(seq, 0) + 1

    def having(kind):
        return {seq for seq, (outcome, _) in outcomes.items() if outcome == kind}

    accepted, refused, unknown = having("accepted"), having("refused"), having("unknown")
    delivered = set(copies)
    result = {
        "seed": seed,
        "attempts": len(outcomes),
        "accepted": len(accepted),
        "refused": len(refused),
        "unknown": len(unknown),
        "not_sent": len(having("not-sent")),
        "delivered": len(delivered),
        "lost": len(accepted - delivered),
        "lost_seqs": sorted(accepted - delivered)[:20],
        "delivered_unaccepted": len(delivered & (refused | having("not-sent"))),
        "delivered_unknown": len(delivered & unknown),
        "duplicates": sum(n - 1 for n in copies.values()),
        "corrupt": corrupt,
        "left_in_spool": left_in_spool,
        "kills": len(phases),
        "kills_in_data": sum(1 for p in phases if p["in_data"]),
        "kills_with_queue": sum(1 for p in phases if p["queued"]),
        "kills_while_delivering": sum(1 for p in phases if p["queued"] and p["next_hop_open"]),
        "phases": phases,
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(result))
    ok = result["lost"] == 0 and result["delivered_unaccepted"] == 0 and corrupt == 0 and left_in_spool == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
