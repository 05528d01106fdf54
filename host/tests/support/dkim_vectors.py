#!/usr/bin/env python3
"""DKIM and ARC test vectors made by another implementation (dkimpy).

Usage: dkim_vectors.py DIR
  Writes DIR/fixture.dns (the keys and policies, in the format of `sluice policy test --dns`)
  and DIR/NAME.eml for each case, and prints JSON {NAME: {"dkim": [...], "arc": ..., "sealers":
  [...]}} with the results a correct verifier gives.
"""
import base64
import json
import os
import subprocess
import sys

# dns.py beside this script is the tests' name server, not dnspython (which dkimpy imports).
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
import dkim  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

DIR = sys.argv[1]
os.makedirs(DIR, exist_ok=True)


def rsa_key(bits=2048):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()


def ed_key():
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed), "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()


def openssl_rsa_key(bits):
    """A key the cryptography package refuses to make (under 1024 bits), made by openssl."""
    pem = subprocess.run(["openssl", "genrsa", str(bits)], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, capture_output=True,
                         check=True).stdout
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


rsa_pem, rsa_record = rsa_key()
tiny_pem, tiny_record = openssl_rsa_key(512)
ed_seed, ed_record = ed_key()
fwd_pem, fwd_record = rsa_key()
weak_pem, weak_record = rsa_key(1024)
fixture = [
    f"rsa._domainkey.origin.test TXT {rsa_record}",
    f"ed._domainkey.origin.test TXT {ed_record}",
    f"weak._domainkey.origin.test TXT {weak_record}",
    f"tiny._domainkey.origin.test TXT {tiny_record}",
    f"arc._domainkey.forwarder.test TXT {fwd_record}",
    "broken._domainkey.origin.test TXT v=DKIM1; k=rsa; p=AAAA-not-base64",
    "slow._domainkey.origin.test TIMEOUT",
    "origin.test TXT v=spf1 ip4:192.0.2.10 -all",
    "_dmarc.origin.test TXT v=DMARC1; p=reject",
]
open(os.path.join(DIR, "fixture.dns"), "w").write("\n".join(fixture) + "\n")

BASE = (b"From: Olive <olive@origin.test>\r\nTo: bob@example.test\r\nSubject: Quarterly figures\r\n"
        b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <v1@origin.test>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"The figures are attached in spirit.\r\n\r\n-- \r\nOlive\r\n")
HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]
cases = {}


def write(name, message, expect):
    open(os.path.join(DIR, name + ".eml"), "wb").write(message)
    cases[name] = expect


def sign(message, selector, key, **kw):
    return dkim.sign(message, selector, b"origin.test", key, include_headers=HEADERS,
                     canonicalize=(b"relaxed", b"relaxed"), **kw) + message


rsa_signed = sign(BASE, b"rsa", rsa_pem)
write("rsa", rsa_signed, {"dkim": ["pass"], "arc": "none"})
write("rsa-simple", dkim.sign(BASE, b"rsa", b"origin.test", rsa_pem, include_headers=HEADERS) + BASE,
      {"dkim": ["pass"], "arc": "none"})
write("ed25519", sign(BASE, b"ed", ed_seed, signature_algorithm=b"ed25519-sha256"), {"dkim": ["pass"], "arc": "none"})
write("weak-1024", sign(BASE, b"weak", weak_pem), {"dkim": ["pass"], "arc": "none"})
# RFC 8301: a signature made with a key under 1024 bits is not valid, however well it checks.
write("rsa-512", sign(BASE, b"tiny", tiny_pem), {"dkim": ["permerror"], "arc": "none"})
write("tampered-body", rsa_signed.replace(b"in spirit", b"in letter"), {"dkim": ["fail"], "arc": "none"})
write("tampered-header", rsa_signed.replace(b"Quarterly figures", b"Quarterly figures!"),
      {"dkim": ["fail"], "arc": "none"})
write("both-signatures", sign(sign(BASE, b"rsa", rsa_pem), b"ed", ed_seed, signature_algorithm=b"ed25519-sha256"),
      {"dkim": ["pass", "pass"], "arc": "none"})
write("unknown-selector", sign(BASE, b"gone", rsa_pem), {"dkim": ["permerror"], "arc": "none"})
write("broken-key", sign(BASE, b"broken", rsa_pem), {"dkim": ["permerror"], "arc": "none"})
write("key-timeout", sign(BASE, b"slow", rsa_pem), {"dkim": ["temperror"], "arc": "none"})
write("malformed-signature", b"DKIM-Signature: v=1; a=rsa-sha256; d=origin.test; s=rsa; b=!!!; bh=???\r\n" + BASE,
      {"dkim": ["permerror"], "arc": "none"})

# A mailing list receives the signed message, checks it, seals it (ARC), then tags the subject
# and adds a footer: the author's signature breaks, the seal holds.
received = b"Authentication-Results: lists.forwarder.test; dkim=pass header.d=origin.test; spf=pass smtp.mailfrom=origin.test\r\n" + rsa_signed
seal = b"".join(dkim.arc_sign(received, b"arc", b"forwarder.test", fwd_pem, b"lists.forwarder.test",
                              include_headers=HEADERS))
write("arc-sealed", seal + received, {"dkim": ["pass"], "arc": "pass", "sealers": ["forwarder.test"]})
listed = (seal + received).replace(b"Subject: Quarterly figures", b"Subject: [team] Quarterly figures")
listed = listed.replace(b"-- \r\nOlive\r\n", b"-- \r\nOlive\r\n_______\r\nteam mailing list\r\n")
# The list's seal covered the message before its own changes; a list seals after changing,
# so seal again over what it sends.
received2 = b"Authentication-Results: lists.forwarder.test; dkim=pass header.d=origin.test; spf=pass smtp.mailfrom=origin.test\r\n" + \
    rsa_signed.replace(b"Subject: Quarterly figures", b"Subject: [team] Quarterly figures").replace(
        b"-- \r\nOlive\r\n", b"-- \r\nOlive\r\n_______\r\nteam mailing list\r\n")
seal2 = b"".join(dkim.arc_sign(received2, b"arc", b"forwarder.test", fwd_pem, b"lists.forwarder.test",
                               include_headers=HEADERS))
write("arc-list", seal2 + received2, {"dkim": ["fail"], "arc": "pass", "sealers": ["forwarder.test"]})
write("arc-broken", (seal + received).replace(b"in spirit", b"in letter"),
      {"dkim": ["fail"], "arc": "fail", "sealers": ["forwarder.test"]})

json.dump(cases, sys.stdout)
