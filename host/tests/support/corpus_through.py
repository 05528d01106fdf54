#!/usr/bin/env python3
"""Send every message of a corpus folder through the relay, then check what the next hop got.

Usage: corpus_through.py PORT CORPUS_DIR SINK_DIR

Each message goes in a connection of its own with smtplib, with CRLF line ends (as mail
travels over SMTP), to the recipient bob+N@example.test so that its delivery can be
told apart. Every message must get a final reply to its DATA (a verdict: 2xx, 4xx or 5xx; a
dropped connection is a failure). Then, once the next hop has received every accepted message,
each delivered copy must be the message as sent, byte for byte, apart from the header fields
the relay adds on top (its Received field and the X-Spam-* fields of the verdict) and those it
owns and removes from what clients send (their X-Spam-* fields, and Authentication-Results
fields with its authserv-id, relay.test).

Prints one JSON object: messages, accepted, refused (by code), no_verdict (files), delivered,
mismatched (files). Exit status 0 when no_verdict and mismatched are empty and every accepted
message was delivered.
"""
import json
import os
import re
import smtplib
import sys
import time

port, corpus, sink = int(sys.argv[1]), sys.argv[2], sys.argv[3]
names = sorted(n for n in os.listdir(corpus) if n.endswith(".eml"))
sent, accepted, refused, no_verdict = {}, {}, {}, []
for n, name in enumerate(names):
    with open(os.path.join(corpus, name), "rb") as f:
        raw = f.read()
    # What goes on the wire (before dot-stuffing): CRLF line ends, a final CRLF.
    wire = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", raw)
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    sent[n] = (name, wire)
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=60)
        s.ehlo("client.remote.test")
        s.sendmail("sender@remote.test", [f"bob+{n}@example.test"], wire)
        accepted[n] = name
        s.quit()
    except smtplib.SMTPResponseException as e:
        refused[str(e.smtp_code)] = refused.get(str(e.smtp_code), 0) + 1
    except smtplib.SMTPRecipientsRefused as e:
        code = str(list(e.recipients.values())[0][0])
        refused[code] = refused.get(code, 0) + 1
    except (smtplib.SMTPException, OSError) as e:
        no_verdict.append(f"{name}: {e}")


def delivered_copies():
    found = {}
    if not os.path.isdir(sink):
        return found
    for entry in os.listdir(sink):
        if not entry.endswith(".env"):
            continue
        with open(os.path.join(sink, entry)) as f:
            env = json.load(f)
        for rcpt in env["to"]:
            m = re.match(r"bob\+(\d+)@example\.test", rcpt)
            if m:
                found[int(m.group(1))] = os.path.join(sink, entry[:-4] + ".eml")
    return found


deadline = time.time() + 120
copies = delivered_copies()
while time.time() < deadline and not set(accepted) <= set(copies):
    time.sleep(0.2)
    copies = delivered_copies()

added = re.compile(rb"^(Received:|X-Spam-[A-Za-z-]+:|Authentication-Results: relay\.test;)")
owned = re.compile(rb"^(x-spam-[^:]*|authentication-results[ \t]*:[ \t\r\n]*(\([^)]*\))?[ \t\r\n]*relay\.test[ \t;(\r])", re.I)


def without_owned(message):
    """The message as the relay passes it on: the client's owned fields gone. As the relay
    reads it, the header ends at the first empty line or the first line that is neither a
    field nor a continuation."""
    lines = message.split(b"\r\n")
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line == b"" or b":" not in line or line[:1] in (b" ", b"\t"):
            break
        field = [line]
        j = i + 1
        while j < len(lines) and lines[j][:1] in (b" ", b"\t"):
            field.append(lines[j])
            j += 1
        if not owned.match(b"\r\n".join(field)):
            out.extend(field)
        i = j
    return b"\r\n".join(out + lines[i:])


mismatched = []
for n in accepted:
    path = copies.get(n)
    if path is None:
        mismatched.append(f"{sent[n][0]}: not delivered")
        continue
    with open(path, "rb") as f:
        got = f.read()
    # Drop the fields the relay put on top: one Received field, its Authentication-Results
    # and the X-Spam-* fields before the message's own first line.
    lines = got.split(b"\r\n")
    i, received = 0, False
    while i < len(lines) and added.match(lines[i]):
        if lines[i].startswith(b"Received:"):
            if received:
                break
            received = True
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    rest = b"\r\n".join(lines[i:])
    if rest != without_owned(sent[n][1]):
        mismatched.append(sent[n][0])

result = {
    "messages": len(names),
    "accepted": len(accepted),
    "refused": refused,
    "no_verdict": no_verdict,
    "delivered": len(set(accepted) & set(copies)),
    "mismatched": mismatched[:20],
}
print(json.dumps(result))
sys.exit(0 if not no_verdict and not mismatched else 1)
