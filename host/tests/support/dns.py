#!/usr/bin/env python3
"""A DNS server for the relay's tests: answers A and MX questions from a fixed table over
UDP (and says NXDOMAIN for names it does not know); with a FIXTURE file (the format of
`sluice policy test --dns`: `NAME TYPE VALUE` per line, TYPE one of A, MX, TXT), its records too.

Usage: dns.py PORT [FIXTURE]
  mx-ok.test       MX 10 mail.mx-ok.test
  mail.mx-ok.test  A  127.0.0.1
  no-mx.test       A  127.0.0.1          (no MX: implicit MX)
  null-mx.test     MX 0 .                (RFC 7505)
"""
import socket
import struct
import sys

PORT = int(sys.argv[1])
A = {"mail.mx-ok.test": "127.0.0.1", "no-mx.test": "127.0.0.1"}
MX = {"mx-ok.test": (10, "mail.mx-ok.test"), "null-mx.test": (0, "")}
TXT = {}
if len(sys.argv) > 2:
    for line in open(sys.argv[2]):
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, kind, value = (line.split(None, 2) + ["", ""])[:3]
        name, value = name.lower().rstrip("."), value.strip().strip('"')
        if kind.upper() == "TXT":
            TXT.setdefault(name, []).append(value)
        elif kind.upper() == "A":
            A[name] = value
        elif kind.upper() == "MX":
            pref, host = value.split()
            MX[name] = (int(pref), host.rstrip("."))
KNOWN = set(A) | set(MX) | set(TXT)


def encode_name(name):
    out = b""
    for label in [l for l in name.split(".") if l]:
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def parse_question(data):
    pos, labels = 12, []
    while data[pos] != 0:
        n = data[pos]
        labels.append(data[pos + 1 : pos + 1 + n].decode().lower())
        pos += n + 1
    qtype, qclass = struct.unpack("!HH", data[pos + 1 : pos + 5])
    return ".".join(labels), qtype, pos + 5


def answer(data):
    ident = data[:2]
    name, qtype, end = parse_question(data)
    question = data[12:end]
    records = []
    if qtype == 1 and name in A:
        records.append((1, socket.inet_aton(A[name])))
    if qtype == 15 and name in MX:
        pref, host = MX[name]
        records.append((15, struct.pack("!H", pref) + encode_name(host)))
    if qtype == 16 and name in TXT:
        for value in TXT[name]:
            data = value.encode()
            chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
            records.append((16, b"".join(bytes([len(c)]) + c for c in chunks)))
    rcode = 0 if name in KNOWN else 3
    flags = 0x8180 | rcode
    header = ident + struct.pack("!HHHHH", flags, 1, len(records), 0, 0)
    body = b""
    for rtype, rdata in records:
        body += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    return header + question + body


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", PORT))
print("ready", flush=True)
while True:
    data, addr = sock.recvfrom(4096)
    try:
        sock.sendto(answer(data), addr)
    except Exception:
        pass
