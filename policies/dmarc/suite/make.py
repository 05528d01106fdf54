#!/usr/bin/env python3
"""Regenerates the dmarc policy's golden suite: keys, signed messages (dkimpy, another
implementation than the relay's), the DNS fixture `dns.txt` and the expectations. The files
are committed; run this only to change the suite (`pip install dkimpy pynacl authres`).

Usage: python3 policies/dmarc/suite/make.py
"""
import base64
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
import dkim  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402


def key():
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    spki = k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()


origin_pem, origin_record = key()
list_pem, list_record = key()
open(os.path.join(HERE, "dns.txt"), "w").write(f"""# Keys and policies of the dmarc suite (made by make.py).
s1._domainkey.origin.test TXT {origin_record}
arc._domainkey.forwarder.test TXT {list_record}
origin.test TXT v=spf1 ip4:192.0.2.10 -all
_dmarc.origin.test TXT v=DMARC1; p=reject; rua=mailto:dmarc@origin.test
_dmarc.quarantine.test TXT v=DMARC1; p=quarantine
_dmarc.monitor.test TXT v=DMARC1; p=none
_dmarc.sampled.test TXT v=DMARC1; p=reject; pct=0
_dmarc.protected.test TXT v=DMARC1; p=reject
soft.test TXT v=spf1 ~all
""")


def message(sender, subject, body="Please find the figures below.\r\n"):
    return (f"From: Sender <{sender}>\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '-')}@suite.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}").encode()


def signed(msg):
    return dkim.sign(msg, b"s1", b"origin.test", origin_pem, canonicalize=(b"relaxed", b"relaxed"),
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + msg


def case(name, msg, expect):
    open(os.path.join(HERE, name + ".eml"), "wb").write(msg)
    open(os.path.join(HERE, name + ".expect"), "w").write(expect.strip() + "\n")


OUTSIDE = "client-ip: 203.0.113.7\nhelo: mx.elsewhere.test\nfrom: bounce@elsewhere.test\n"
case("aligned-dkim", signed(message("olive@origin.test", "aligned dkim")),
     "# Signed by the author's domain: DMARC passes on DKIM alone.\nfinal: accept\n"
     "symbols: DKIM_VALID, DMARC_PASS\nno-symbols: DMARC_FAIL_REJECT\n" + OUTSIDE)
case("aligned-spf", message("olive@origin.test", "aligned spf"),
     "# Sent from the origin's own address: SPF passes aligned.\nfinal: accept\nsymbols: SPF_PASS, DMARC_PASS\n"
     "client-ip: 192.0.2.10\nhelo: mail.origin.test\nfrom: olive@origin.test\n")
case("forged-reject", message("ceo@origin.test", "urgent wire transfer"),
     "# Claims origin.test (p=reject) from elsewhere, unsigned: refused.\nfinal: reject\ncode: 550\nstage: data\n"
     "symbols: DMARC_FAIL_REJECT\n" + OUTSIDE)
case("tampered", signed(message("olive@origin.test", "tampered")).replace(b"figures below", b"account below"),
     "# The author's signature no longer matches the body: DKIM fails, and DMARC with it.\nfinal: reject\n"
     "code: 550\nsymbols: DKIM_INVALID, DMARC_FAIL_REJECT\n" + OUTSIDE)
case("forged-quarantine", message("pay@quarantine.test", "invoice"),
     "# p=quarantine.\nfinal: quarantine\nsymbols: DMARC_FAIL_QUARANTINE\n" + OUTSIDE)
case("forged-monitor", message("news@monitor.test", "newsletter"),
     "# p=none: scored only.\nfinal: accept\nsymbols: DMARC_FAIL_NONE\n" + OUTSIDE)
case("pct-zero", message("info@sampled.test", "sampled out"),
     "# p=reject with pct=0: outside the sample, one step more lenient (quarantine).\nfinal: quarantine\n"
     "symbols: DMARC_FAIL_REJECT\n" + OUTSIDE)
case("never-reject", message("boss@protected.test", "protected"),
     "# protected.test is in never_reject (config.args): quarantined, not refused.\nfinal: quarantine\n"
     "symbols: DMARC_FAIL_REJECT\n" + OUTSIDE)
case("softfail", message("someone@soft.test", "soft"),
     "# ~all and no DMARC record: a small score.\nfinal: accept\nsymbols: SPF_SOFTFAIL\nno-symbols: DMARC_PASS\n"
     "client-ip: 203.0.113.7\nhelo: mx.elsewhere.test\nfrom: someone@soft.test\n")

# A mailing list at forwarder.test: checks the author's mail, tags the subject and adds a
# footer (breaking the signature), then seals what it sends (ARC).
original = signed(message("olive@origin.test", "through the list"))
changed = original.replace(b"Subject: through the list", b"Subject: [team] through the list") + \
    b"-- \r\nteam mailing list\r\n"
received = b"Authentication-Results: lists.forwarder.test; dkim=pass header.d=origin.test; " \
    b"dmarc=pass header.from=origin.test\r\n" + changed
seal = b"".join(dkim.arc_sign(received, b"arc", b"forwarder.test", list_pem, b"lists.forwarder.test",
                              include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]))
case("arc-trusted-list", seal + received,
     "# Forwarded by a list in trusted_forwarders (config.args) with a valid seal: not refused.\n"
     "final: accept\nsymbols: ARC_TRUSTED_FORWARDER, DMARC_FAIL_REJECT, DKIM_INVALID\n"
     "client-ip: 203.0.113.9\nhelo: lists.forwarder.test\nfrom: team-bounces@forwarder.test\n")
case("arc-untrusted-list", seal.replace(b"d=forwarder.test", b"d=forwarder.test") + received.replace(
     b"-- \r\nteam mailing list", b"-- \r\nteam mailing list!"),
     "# The same list mail changed after sealing: the seal fails, so does DMARC.\nfinal: reject\n"
     "symbols: DMARC_FAIL_REJECT\nno-symbols: ARC_TRUSTED_FORWARDER\n"
     "client-ip: 203.0.113.9\nhelo: lists.forwarder.test\nfrom: team-bounces@forwarder.test\n")
open(os.path.join(HERE, "config.args"), "w").write(
    "--policy-config dmarc.trusted_forwarders=forwarder.test\n--policy-config dmarc.never_reject=protected.test\n")
print("suite written to", HERE, file=sys.stderr)
