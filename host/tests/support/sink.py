#!/usr/bin/env python3
"""A next hop for the relay's tests: a small SMTP server that stores every message it accepts.

Usage: sink.py PORT DIR [--tempfail-first N] [--reject-rcpt SUBSTRING] [--hang | --reset]
                [--tls CERT KEY | --broken-tls]

Each accepted message is written to DIR/<n>.eml with the envelope in DIR/<n>.env (JSON).
--tempfail-first N answers 451 to DATA in the first N sessions (then recovers);
--reject-rcpt S answers 550 to every RCPT whose address contains S;
--hang accepts connections and never says anything; --reset closes them at once;
--tls offers STARTTLS with that certificate (the envelope file then says "tls": true);
--broken-tls offers STARTTLS and answers the handshake with garbage.
"""
import json
import os
import socketserver
import ssl
import sys
import threading

args = sys.argv[1:]
PORT = int(args[0])
OUT = args[1]
TEMPFAIL = int(args[args.index("--tempfail-first") + 1]) if "--tempfail-first" in args else 0
REJECT = args[args.index("--reject-rcpt") + 1] if "--reject-rcpt" in args else None
HANG = "--hang" in args
RESET = "--reset" in args
BROKEN_TLS = "--broken-tls" in args
TLS = None
if "--tls" in args:
    i = args.index("--tls")
    TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLS.load_cert_chain(args[i + 1], args[i + 2])
lock = threading.Lock()
state = {"sessions": 0, "stored": 0}
os.makedirs(OUT, exist_ok=True)


class Handler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        if RESET:
            return
        if HANG:
            self.rfile.read()
            return
        with lock:
            state["sessions"] += 1
            session = state["sessions"]
        self.reply("220 sink.test ESMTP test sink")
        mail_from, rcpts, secure = None, [], False
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                starttls = "250-STARTTLS\r\n" if (TLS or BROKEN_TLS) and not secure else ""
                self.reply("250-sink.test\r\n250-PIPELINING\r\n" + starttls + "250 SIZE 100000000" if verb == "EHLO" else "250 sink.test")
            elif verb == "STAR" and BROKEN_TLS:
                self.reply("220 go ahead")
                self.wfile.write(b"this is not TLS\r\n")
                self.wfile.flush()
                return
            elif verb == "STAR" and TLS and not secure:
                self.reply("220 go ahead")
                self.request = TLS.wrap_socket(self.request, server_side=True)
                self.rfile = self.request.makefile("rb")
                self.wfile = self.request.makefile("wb")
                secure = True
            elif verb == "MAIL":
                mail_from, rcpts = line[10:].strip().split(" ")[0].strip("<>"), []
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = line[8:].strip().strip("<>")
                if REJECT and REJECT in addr:
                    self.reply("550 5.1.1 <%s>: no such user" % addr)
                else:
                    rcpts.append(addr)
                    self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                if session <= TEMPFAIL:
                    self.reply("451 4.3.0 try again later")
                    continue
                self.reply("354 go ahead")
                data = []
                while True:
                    raw = self.rfile.readline()
                    if not raw or raw == b".\r\n":
                        break
                    data.append(raw[1:] if raw.startswith(b"..") else raw)
                with lock:
                    state["stored"] += 1
                    n = state["stored"]
                with open(os.path.join(OUT, "%d.eml" % n), "wb") as f:
                    f.write(b"".join(data))
                with open(os.path.join(OUT, "%d.env" % n), "w") as f:
                    json.dump({"from": mail_from, "to": rcpts, "tls": secure}, f)
                self.reply("250 2.0.0 stored as %d" % n)
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            elif verb == "RSET" or verb == "NOOP":
                self.reply("250 ok")
            else:
                self.reply("502 5.5.1 not here")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


with Server(("127.0.0.1", PORT), Handler) as server:
    print("ready", flush=True)
    server.serve_forever()
