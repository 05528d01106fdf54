#!/usr/bin/env python3
"""A next hop for the relay's tests: a small SMTP server that stores every message it accepts.

Usage: sink.py PORT DIR [--tempfail-first N] [--reject-rcpt SUBSTRING] [--hang | --reset]
                [--tls CERT KEY | --broken-tls] [--delay SECONDS] [--no-pipelining]
                [--close-after N] [--reset-in-data N] [--auth USER:PASSWORD] [--forget-first N]

Each accepted message is written to DIR/<n>.eml with the envelope in DIR/<n>.env (JSON; "pipelined"
says whether RCPT commands were already waiting when MAIL was read). DIR/stats.json counts
connections, transactions and the most connections open at once.
--tempfail-first N answers 451 to the first N DATA commands (then recovers);
--reject-rcpt S answers 550 to every RCPT whose address contains S;
--hang accepts connections and never says anything; --reset closes them at once;
--tls offers STARTTLS with that certificate (the envelope file then says "tls": true);
--broken-tls offers STARTTLS and answers the handshake with garbage;
--delay S waits S seconds before answering the end of DATA;
--no-pipelining does not announce PIPELINING;
--close-after N drops each connection, without a word, N seconds after its last transaction;
--reset-in-data N resets the connection (RST) in the middle of the first N messages' data;
--auth U:P offers AUTH PLAIN LOGIN once TLS is on, takes only U:P, and refuses MAIL before it
(the envelope file then says "auth": U);
--forget-first N drops the first N connections without a word, neither FIN nor RST (TCP_REPAIR,
which needs CAP_NET_ADMIN): the client believes them open, as when a busy server's accept queue
lost the handshake's last ACK.
"""
import base64
import json
import os
import socket
import socketserver
import struct
import ssl
import sys
import threading
import time

args = sys.argv[1:]
PORT = int(args[0])
OUT = args[1]
TEMPFAIL = int(args[args.index("--tempfail-first") + 1]) if "--tempfail-first" in args else 0
REJECT = args[args.index("--reject-rcpt") + 1] if "--reject-rcpt" in args else None
HANG = "--hang" in args
RESET = "--reset" in args
BROKEN_TLS = "--broken-tls" in args
DELAY = float(args[args.index("--delay") + 1]) if "--delay" in args else 0.0
PIPELINING = "--no-pipelining" not in args
AUTH = args[args.index("--auth") + 1] if "--auth" in args else None
CLOSE_AFTER = float(args[args.index("--close-after") + 1]) if "--close-after" in args else None
RESET_IN_DATA = int(args[args.index("--reset-in-data") + 1]) if "--reset-in-data" in args else 0
FORGET = int(args[args.index("--forget-first") + 1]) if "--forget-first" in args else 0
TCP_REPAIR = 19  # linux/tcp.h
TLS = None
if "--tls" in args:
    i = args.index("--tls")
    TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLS.load_cert_chain(args[i + 1], args[i + 2])
lock = threading.Lock()
state = {"sessions": 0, "stored": 0, "datas": 0, "open": 0, "max_open": 0, "transactions": 0}
os.makedirs(OUT, exist_ok=True)


def save_stats():
    with open(os.path.join(OUT, "stats.tmp"), "w") as f:
        json.dump({k: state[k] for k in ("sessions", "max_open", "open", "transactions")}, f)
    os.replace(os.path.join(OUT, "stats.tmp"), os.path.join(OUT, "stats.json"))


def among_first(counter, n):
    """Whether this is one of the first `n` times `counter` comes up (then counted)."""
    with lock:
        seen = state.get(counter, 0)
        if seen < n:
            state[counter] = seen + 1
        return seen < n


def waiting(sock, rfile):
    """Whether more input is already here (buffered or on the socket), without blocking."""
    sock.setblocking(False)
    try:
        return len(rfile.peek(1)) > 0
    except (BlockingIOError, ssl.SSLWantReadError, OSError):
        return False
    finally:
        sock.setblocking(True)


class Handler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        if RESET:
            return
        if among_first("forgotten", FORGET):
            # In repair mode closing the socket sends nothing: the client is left with a
            # connection this side no longer has.
            self.request.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
            self.request.close()
            return
        if HANG:
            self.rfile.read()
            return
        with lock:
            state["sessions"] += 1
            state["open"] += 1
            state["max_open"] = max(state["max_open"], state["open"])
            save_stats()
        try:
            self.session()
        except (ConnectionError, ssl.SSLError):
            pass  # the client went away: nothing of its unfinished transaction is stored
        finally:
            with lock:
                state["open"] -= 1
                save_stats()

    def session(self):
        self.reply("220 sink.test ESMTP test sink")
        mail_from, rcpts, secure, pipelined, user = None, [], False, False, None
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                starttls = "250-STARTTLS\r\n" if (TLS or BROKEN_TLS) and not secure else ""
                pipelining = "250-PIPELINING\r\n" if PIPELINING else ""
                auth = "250-AUTH PLAIN LOGIN\r\n" if AUTH and secure else ""
                self.reply("250-sink.test\r\n" + pipelining + starttls + auth + "250 SIZE 100000000" if verb == "EHLO" else "250 sink.test")
            elif verb == "AUTH" and AUTH and secure:
                words = line.split()
                if words[1].upper() == "PLAIN" and len(words) == 3:
                    given = base64.b64decode(words[2]).split(b"\0")
                    given = (given[1] + b":" + given[2]).decode() if len(given) == 3 else ""
                else:
                    self.reply("334 VXNlcm5hbWU6")
                    name = base64.b64decode(self.rfile.readline().strip()).decode()
                    self.reply("334 UGFzc3dvcmQ6")
                    given = name + ":" + base64.b64decode(self.rfile.readline().strip()).decode()
                if given == AUTH:
                    user = AUTH.split(":")[0]
                    self.reply("235 2.7.0 ok")
                else:
                    self.reply("535 5.7.8 bad credentials")
            elif verb == "MAIL" and AUTH and not user:
                self.reply("530 5.7.0 authentication required")
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
                pipelined = waiting(self.request, self.rfile)
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = line[8:].strip().strip("<>")
                if REJECT and REJECT in addr:
                    self.reply("550 5.1.1 <%s>: no such user" % addr)
                else:
                    rcpts.append(addr)
                    self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                with lock:
                    state["datas"] += 1
                    tempfail = state["datas"] <= TEMPFAIL
                if tempfail:
                    self.reply("451 4.3.0 try again later")
                    continue
                self.reply("354 go ahead")
                data = []
                while True:
                    raw = self.rfile.readline()
                    if not raw:
                        return  # connection lost inside DATA: no message, as with any server
                    if raw == b".\r\n":
                        break
                    data.append(raw[1:] if raw.startswith(b"..") else raw)
                    if len(data) == 2 and among_first("resets", RESET_IN_DATA):
                        # Abort: linger 0 makes close() send a RST.
                        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.request.close()
                        return
                if DELAY:
                    time.sleep(DELAY)
                with lock:
                    state["stored"] += 1
                    state["transactions"] += 1
                    n = state["stored"]
                    save_stats()
                with open(os.path.join(OUT, "%d.eml" % n), "wb") as f:
                    f.write(b"".join(data))
                with open(os.path.join(OUT, "%d.env" % n), "w") as f:
                    json.dump({"from": mail_from, "to": rcpts, "tls": secure, "pipelined": pipelined, "auth": user}, f)
                self.reply("250 2.0.0 stored as %d" % n)
                if CLOSE_AFTER is not None:
                    time.sleep(CLOSE_AFTER)
                    return
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
    # socketserver's default backlog is 5. A relay starting with a full queue opens
    # destination_concurrency connections at once; beyond the backlog the kernel drops the
    # handshake's last ACK, and a connection the client believes open waits for a greeting
    # that never comes (SMTP: the server speaks first) until the client's timeout.
    request_queue_size = 256


with Server(("127.0.0.1", PORT), Handler) as server:
    print("ready", flush=True)
    server.serve_forever()
