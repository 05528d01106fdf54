#!/usr/bin/env python3
"""End-to-end throughput, Sluice against Postfix in the same run: smtp-source -> relay ->
smtp-sink, with fsync on in both relays, alternating the relays run after run.

Usage: python3 bench/throughput.py [--messages 20000] [--sessions 20] [--runs 5]
                                   [--sizes 4096,102400] [--connections new,reuse]
                                   [--setups direct,postfix,sluice,sluice+rust,sluice+rust+bayes,
                                             sluice+rust+dmarc+bayes,sluice+rust-warm,sluice+js,sluice+python]
                                   [--sluice PATH] [--baseline PATH] [--tiny] [--keep]

One command from a fresh clone (as root, for Debian's postfix package and a private Postfix
instance): it installs Postfix if missing (its smtp-source and smtp-sink drive every run; no
system instance is configured or started), builds Sluice and the shipped Rust policies in
release mode (unless --sluice names a binary), and uses the JavaScript and Python policies if
`policies/build.sh js python` has built them (those setups are skipped otherwise).

Set-ups, each on its own loopback port and delivering to its own smtp-sink:
  direct         smtp-source -> smtp-sink, the ceiling of the generator itself
  postfix        a private Postfix instance (queue and configuration under the work folder),
                 relayhost the sink: Debian's Postfix as a user would run it, fsync on
  sluice         Sluice, no policies
  sluice+rust    Sluice with every shipped Rust policy in one chain: sender-guard, rate-limit
                 (a limit the run never reaches: the counting still happens), greylist (the
                 benchmark's triplet passed greylisting before the runs, as a known sender's
                 has), dnsbl (two zones, the loopback client checked too: NXDOMAIN from the
                 benchmark's name server), spam-heuristics
  sluice+rust+bayes the Rust chain and the bayes policy after it, its model trained by
                 `sluice learn` on ../shared/corpus before the relay starts (every message is
                 classified: 2 key-value batch reads and up to 1000 tokens)
  sluice+rust+dmarc+bayes the Rust chain, then dmarc and the trained bayes; the loopback client
                 is not trusted (`trusted_networks = []`), so the relay checks SPF, DKIM and
                 DMARC of every message as mail from the internet (the sender domain's records
                 from the benchmark's name server: SPF passes, no DKIM signature, DMARC passes
                 through SPF)
  sluice+rust-warm the same chain with warm instances (sessions_per_instance = 100 on each
                 policy): what the chain costs without instantiating five policies per session
  sluice+js      Sluice with the JavaScript url-guard policy (warm instances, 100 sessions each)
  sluice+python  Sluice with the Python rules policy (warm instances, 100 sessions each)
  postfix+rspamd Postfix with rspamd as its milter, when rspamd is installed (skipped otherwise)
  postfix+sluice Postfix with Sluice as its milter ([milter] listen, no SMTP listener),
                 running the shipped Rust chain as sluice+rust does
  postfix+sluice-warm the same with warm instances, as sluice+rust-warm
  postfix+sluice-bare the same with no policies: what the milter protocol and Sluice's
                 conversation cost Postfix and Sluice before any policy runs
  SETUP@baseline with --baseline PATH: the sluice set-up SETUP run by another (earlier) build,
                 alternating with this one in the same run (default: sluice@baseline and
                 sluice+rust@baseline are added)

Every relay asks one name server the benchmark starts on loopback: Debian's unbound (installed
if missing, as root) holding the sender domain's SPF and DMARC records and answering every other
name NXDOMAIN with a cacheable SOA; without unbound, a built-in server answering NXDOMAIN only.

Sluice runs with its defaults otherwise: the embedded state store, the spool committing with
fsync before every 250 (group commit), info logging to a file. For every message size and
connection mode (new: a connection per message; reuse: smtp-source -d, 20 sessions each sending
all their messages on one connection), each run of each set-up sends --messages messages and
ends when the sink has received them all; the figure is messages / (first connection to last
delivery). Runs alternate between set-ups; each waits for the relays' queues to be empty. The
table gives the median of --runs, the ratio to Postfix, the share of the direct rate, and
messages lost (sent but not received at the sink, summed over the runs; must be 0),
duplicates (received twice: allowed, counted), for Sluice the relay process's CPU time (user
and system, all threads) per message over the run (for Postfix with a milter, the milter's:
Sluice's process, or rspamd's main process and workers), and the load generator's (smtp-source and
smtp-sink together), medians of the runs. The two CPU figures bound the rate on this machine:
no set-up can pass (CPUs x 1,000,000) / (relay + generator microseconds) messages a second.

--tiny: 40 messages, 1 run, 4 KiB, new connections (CI checks that the script still starts).
"""
import argparse
import os
import resource
import shutil
import signal
import smtplib
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import (ROOT, Resolver, Sink, finish, free_ports, need_postfix_tools, process_cpu_seconds, server_config,
                      start_sluice, wait_port)

RELEASE_WASM = os.path.join(ROOT, "target", "wasm32-wasip2", "release")
SHIPPED_RUST = ["sender-guard", "rate-limit", "greylist", "dnsbl", "spam-heuristics", "dmarc", "bayes"]
CORPUS = os.path.join(ROOT, "..", "shared", "corpus")
SENDER = "sender@remote.test"
RECIPIENT = "user@example.com"
# The sender domain's SPF and DMARC records, as the benchmark's name server holds them: mail
# from the loopback client passes SPF, and DMARC through it.
SENDER_RECORDS = ['remote.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"',
                  '_dmarc.remote.test. 300 IN TXT "v=DMARC1; p=reject"']


def nxdomain_server(port):
    """A name server on loopback that answers every question NXDOMAIN, with an SOA whose
    minimum lets resolvers cache the answer (as a real DNSBL's negative answers are)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))

    def serve():
        soa = (b"\x00" + struct.pack("!HHIH", 6, 1, 300, 22) + b"\x00\x00" +
               struct.pack("!IIIII", 1, 3600, 600, 86400, 300))
        while True:
            data, addr = sock.recvfrom(4096)
            try:
                pos = 12
                while data[pos] != 0:
                    pos += data[pos] + 1
                question = data[12:pos + 5]
                header = data[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 1, 0)
                sock.sendto(header + question + soa, addr)
            except (IndexError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()


class Postfix:
    """A private Postfix instance: its own configuration and queue under `base`, smtpd on
    loopback `port`, everything relayed to the sink. Stopped by stop()."""

    def __init__(self, base, port, sink_port, milter=None):
        self.conf = os.path.join(base, "etc")
        self.spool = os.path.join(base, "spool")
        data = os.path.join(base, "data")
        for d in (self.conf, self.spool, data):
            os.makedirs(d, exist_ok=True)
        shutil.chown(data, "postfix")
        shutil.copy("/etc/postfix/master.cf", self.conf)
        if os.path.exists("/etc/postfix/dynamicmaps.cf"):
            shutil.copy("/etc/postfix/dynamicmaps.cf", self.conf)
        settings = {
            "compatibility_level": "3.6", "config_directory": self.conf, "queue_directory": self.spool,
            "data_directory": data, "myhostname": "relay.test", "mydomain": "relay.test",
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4", "mynetworks": "127.0.0.0/8",
            "mydestination": "", "local_recipient_maps": "", "alias_maps": "", "alias_database": "",
            "local_transport": "error:5.1.1 local delivery disabled", "relay_domains": "example.com",
            "relayhost": f"[127.0.0.1]:{sink_port}", "smtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled", "biff": "no", "notify_classes": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "maillog_file": os.path.join(base, "maillog"), "maillog_file_prefixes": f"/var, /dev/stdout, {base}",
        }
        if milter:
            # A milter that fails defers the message: a failure is never counted as throughput.
            settings.update({"smtpd_milters": milter, "milter_default_action": "tempfail",
                             "milter_protocol": "6"})
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write("# Private instance of bench/throughput.py: loopback only, relays to the sink.\n")
            f.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
        postconf = ["postconf", "-c", self.conf]
        subprocess.run(postconf + ["-M#", "smtp/inet"], stderr=subprocess.DEVNULL)
        subprocess.run(postconf + ["-Me", f"127.0.0.1:{port}/inet=127.0.0.1:{port} inet n - n - - smtpd"], check=True)
        subprocess.run(postconf + ["-F", "*/*/chroot = n"], check=True)
        subprocess.run(["postfix", "-c", self.conf, "check"], check=True)
        subprocess.run(["postfix", "-c", self.conf, "start"], check=True)
        self.port = port
        wait_port(port)

    def queued(self):
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.spool, sub)):
                n += len(files)
        return n

    def stop(self):
        subprocess.run(["postfix", "-c", self.conf, "stop"], stderr=subprocess.DEVNULL)
        pid_file = os.path.join(self.spool, "pid", "master.pid")
        for _ in range(40):
            try:
                pid = int(open(pid_file).read().strip())
                os.kill(pid, 0)
            except (OSError, ValueError):
                return
            time.sleep(0.5)


class Rspamd:
    """rspamd with its packaged rules, a private run folder, and a milter proxy on `port`."""

    def __init__(self, base, port, dns_port):
        os.makedirs(os.path.join(base, "local.d"), exist_ok=True)
        with open(os.path.join(base, "local.d", "worker-proxy.inc"), "w") as f:
            f.write(f'bind_socket = "127.0.0.1:{port}";\nmilter = yes;\nupstream "local" {{ default = yes; self_scan = yes; }}\n')
        with open(os.path.join(base, "local.d", "options.inc"), "w") as f:
            # The benchmark's name server, as Sluice's: NXDOMAIN at once for the lists it asks.
            f.write(f'dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; }}\n')
        self.proc = subprocess.Popen(
            ["rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd", "-c", "/etc/rspamd/rspamd.conf",
             "--var", f"LOCAL_CONFDIR={base}", "--var", f"DBDIR={base}", "--var", f"RUNDIR={base}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "rspamd.log"), "wb"))
        wait_port(port, process=self.proc)

    def cpu_seconds(self):
        """CPU time of rspamd's main process and its workers so far."""
        pids = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            pids.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return sum(process_cpu_seconds(pid) for pid in pids)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Sluice:
    """`sluice serve` in its own folder with `policies` (a TOML fragment) for its one tenant."""

    def __init__(self, binary, base, port, sink_port, dns_port, policies, sync, learn=None, inbound=False,
                 milter=False):
        os.makedirs(base, exist_ok=True)
        self.base = base
        self.port = port
        config = server_config(port, 4000, server="max_message_bytes = 10485760\n", spool=f'sync = "{sync}"\n')
        if milter:
            # Only a milter server on `port`, for the Postfix in front.
            config = config.replace(f'listen = ["127.0.0.1:{port}"]', "listen = []")
            config += f'[milter]\nlisten = "127.0.0.1:{port}"\nmax_connections = 4000\n'

        if inbound:
            # The loopback client is not a trusted network: its mail is mail from the internet,
            # whose sender the relay checks (SPF, DKIM, DMARC) for the policies that read it.
            config += "[relay]\ntrusted_networks = []\n"
        config += f"""[dns]
nameservers = ["127.0.0.1:{dns_port}"]
[[tenant]]
name = "bench"
domains = ["example.com"]
next_hop = "smtp:127.0.0.1:{sink_port}"
{policies}"""
        if learn:
            # The model first: `sluice learn` writes the tenant's state before the relay holds it.
            with open(os.path.join(base, "sluice.toml"), "w") as f:
                f.write(config)
            subprocess.run([os.path.abspath(binary), "learn", "--quiet", "--config", os.path.join(base, "sluice.toml"),
                            "--tenant", "bench", "--policy", learn,
                            "--spam", os.path.join(CORPUS, "spam"), "--ham", os.path.join(CORPUS, "ham")],
                           check=True, stdout=subprocess.DEVNULL)
        self.proc = start_sluice(binary, base, config)
        wait_port(port, timeout=300, process=self.proc)

    def cpu_seconds(self):
        """User and system CPU time of the relay process so far, all its threads."""
        return process_cpu_seconds(self.proc.pid)

    def queued(self):
        queue = os.path.join(self.base, "spool", "queue")
        return sum(1 for name in os.listdir(queue) if name.endswith(".mail"))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def policy(path, config="", extra=""):
    return f'[[tenant.policy]]\npath = "{path}"\n{extra}' + (f"config = {{ {config} }}\n" if config else "")


def rust_chain(extra=""):
    wasm = lambda name: os.path.join(RELEASE_WASM, name.replace("-", "_") + ".wasm")  # noqa: E731
    return "".join([
        policy(wasm("sender-guard"), 'domains = "example.com"', extra),
        policy(wasm("rate-limit"), 'messages = "100000000", recipients = "100000000", window_seconds = "60"', extra),
        policy(wasm("greylist"), 'delay_seconds = "0"', extra),
        policy(wasm("dnsbl"), 'zones = "zen.dnsbl.test,bl.dnsbl.test", check_non_public = "true"', extra),
        policy(wasm("spam-heuristics"), "", extra),
    ])


def smtp_source(port, messages, sessions, size, reuse):
    args = ["smtp-source", "-c", "-m", str(messages), "-s", str(sessions), "-l", str(size),
            "-f", SENDER, "-t", RECIPIENT]
    if reuse:
        args.append("-d")
    args.append(f"127.0.0.1:{port}")
    return subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def warm_up(port):
    """Two messages through a relay before its runs: the greylist's triplet passes (delay 0:
    the first is deferred, the second passes) and every policy is compiled and loaded."""
    body = "Subject: warm-up\r\n\r\nhello\r\n"
    for _ in range(2):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                s.sendmail(SENDER, [RECIPIENT], body)
        except smtplib.SMTPException:
            pass


def one_run(relay, sink, args, size, reuse):
    """Throughput of one run (msg/s), messages lost (negative: duplicates) and the load
    generator's CPU time per message (smtp-source and smtp-sink, microseconds)."""
    deadline = time.time() + 600
    while relay is not None and relay.queued() > 0 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    port = relay.port if relay is not None else sink.port
    before = sink.count()
    started = time.time()
    generator = resource.getrusage(resource.RUSAGE_CHILDREN)
    sink_cpu = sink.cpu_seconds()
    out = smtp_source(port, args.messages, args.sessions, size, reuse)
    source = resource.getrusage(resource.RUSAGE_CHILDREN)
    source_cpu = source.ru_utime + source.ru_stime - generator.ru_utime - generator.ru_stime
    if out.returncode != 0:
        print(f"  smtp-source exited {out.returncode}: {out.stderr.decode(errors='replace')[-300:]}", file=sys.stderr)
    deadline = time.time() + 600
    while sink.count() - before < args.messages and time.time() < deadline:
        time.sleep(0.02)
    got = sink.count() - before
    generator_cpu = 1e6 * (source_cpu + sink.cpu_seconds() - sink_cpu) / args.messages
    return got / (time.time() - started), args.messages - got, generator_cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="4096,102400")
    ap.add_argument("--connections", default="new,reuse")
    ap.add_argument("--setups",
                    default="direct,postfix,postfix+rspamd,postfix+sluice,sluice,sluice+rust,sluice+rust+bayes,"
                            "sluice+rust+dmarc+bayes,sluice+rust-warm,"
                            "sluice+js,sluice+python")
    ap.add_argument("--sluice", help="the sluice binary (default: build target/release/sluice)")
    ap.add_argument("--baseline", help="an earlier sluice binary to measure in the same run")
    ap.add_argument("--spool-sync", default="group", choices=["group", "file"],
                    help="how Sluice's spool commits before a 250 ([spool] sync)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.messages, args.runs, args.sizes, args.connections, args.sessions = 40, 1, "4096", "new", 5

    need_postfix_tools()
    setups = args.setups.split(",")
    if args.baseline and not any(s.endswith("@baseline") for s in setups):
        for setup in ["sluice+rust", "sluice"]:
            if setup in setups:
                setups.insert(setups.index(setup) + 1, setup + "@baseline")
    if args.sluice is None:
        subprocess.run(["cargo", "build", "--release", "-p", "sluice"], cwd=ROOT, check=True)
        args.sluice = os.path.join(ROOT, "target", "release", "sluice")
    if any(s.startswith("sluice+rust") or s.startswith("postfix+sluice") for s in setups):
        build = ["cargo", "build", "--release", "--target", "wasm32-wasip2"]
        for name in SHIPPED_RUST:
            build += ["-p", name]
        subprocess.run(build, cwd=ROOT, check=True)
    components = {"sluice+js": os.path.join(ROOT, "target", "policies", "js", "url-guard.wasm"),
                  "sluice+python": os.path.join(ROOT, "target", "policies", "python", "rules.wasm")}
    for setup, path in components.items():
        if setup in setups and not os.path.exists(path):
            print(f"{setup}: skipped, {path} is missing (build it with policies/build.sh)", file=sys.stderr)
            setups.remove(setup)
    if "postfix+rspamd" in setups and shutil.which("rspamd") is None:
        print("postfix+rspamd: skipped, rspamd is not installed (apt-get install rspamd)", file=sys.stderr)
        setups.remove("postfix+rspamd")

    work = tempfile.mkdtemp(prefix="sluice-throughput-")
    os.chmod(work, 0o755)  # Postfix's daemons run as user postfix
    ports = free_ports(1 + 2 * len(setups))
    dns_port = ports.pop()
    relays = {}
    sinks = {}
    stoppers = []
    try:
        resolver = Resolver(dns_port, work, SENDER_RECORDS, nxdomain_server)
        stoppers.append(resolver)
        for setup in setups:
            # Each set-up has its own next hop: a late delivery of one never counts for another.
            port, sink_port = ports.pop(), ports.pop()
            sinks[setup] = Sink(sink_port, work, setup.replace("+", "-"))
            sinks[setup].port = sink_port
            stoppers.append(sinks[setup])
            base = os.path.join(work, setup.replace("+", "-"))
            if setup == "direct":
                relays[setup] = None
            elif setup == "postfix":
                relays[setup] = Postfix(base, port, sink_port)
            elif setup == "postfix+rspamd":
                milter_port = free_ports(1)[0]
                rspamd = Rspamd(base + "-rspamd", milter_port, dns_port)
                stoppers.append(rspamd)
                relays[setup] = Postfix(base, port, sink_port, milter=f"inet:127.0.0.1:{milter_port}")
                relays[setup].filter = rspamd
            elif setup in ("postfix+sluice", "postfix+sluice-warm", "postfix+sluice-bare"):
                milter_port = free_ports(1)[0]
                chain = {"postfix+sluice": rust_chain(), "postfix+sluice-warm": rust_chain("sessions_per_instance = 100\n"),
                         "postfix+sluice-bare": ""}[setup]
                milter = Sluice(args.sluice, base + "-sluice", milter_port, sink_port, dns_port, chain,
                                args.spool_sync, milter=True)
                stoppers.append(milter)
                relays[setup] = Postfix(base, port, sink_port, milter=f"inet:127.0.0.1:{milter_port}")
                relays[setup].filter = milter
            else:
                setup_name, _, which = setup.partition("@")
                binary = args.baseline if which == "baseline" else args.sluice
                chain = {
                    "sluice": "",
                    "sluice+rust": rust_chain(),
                    "sluice+rust+bayes": rust_chain() + policy(os.path.join(RELEASE_WASM, "bayes.wasm")),
                    "sluice+rust+dmarc+bayes": rust_chain() + policy(os.path.join(RELEASE_WASM, "dmarc.wasm"))
                    + policy(os.path.join(RELEASE_WASM, "bayes.wasm")),
                    "sluice+rust-warm": rust_chain("sessions_per_instance = 100\n"),
                    "sluice+js": policy(components["sluice+js"], extra="sessions_per_instance = 100\n"),
                    "sluice+python": policy(
                        components["sluice+python"],
                        '"rule.SUBJ_INVOICE_URGENT" = "subject /invoice.*urgent/i 16.0", '
                        '"rule.BODY_WIRE" = "body /wire transfer/i 3.0"',
                        extra="sessions_per_instance = 100\n"),
                }[setup_name]
                learn = os.path.join(RELEASE_WASM, "bayes.wasm") if "bayes" in setup_name else None
                relays[setup] = Sluice(binary, base, port, sink_port, dns_port, chain, args.spool_sync, learn,
                                       inbound="dmarc" in setup_name)
            if relays[setup] is not None:
                stoppers.append(relays[setup])
                warm_up(relays[setup].port)

        cases = [(int(size), conn) for size in args.sizes.split(",") for conn in args.connections.split(",")]
        print(f"{args.messages} messages per run, {args.sessions} sessions, median of {args.runs} runs "
              f"(set-ups alternating); {os.cpu_count()} CPUs; name server: {resolver.kind}; "
              f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
        results = {}
        for size, conn in cases:
            for run in range(args.runs):
                for setup in setups:
                    relay = relays[setup]
                    # Sluice's CPU, or for Postfix with a milter the milter's.
                    meter = relay if isinstance(relay, Sluice) else getattr(relay, "filter", None)
                    cpu = meter.cpu_seconds() if meter is not None else None
                    rate, lost, generator = one_run(relay, sinks[setup], args, size, conn == "reuse")
                    if cpu is not None:
                        cpu = 1e6 * (meter.cpu_seconds() - cpu) / args.messages
                    results.setdefault((size, conn, setup), []).append((rate, lost, cpu, generator))
                    print(f"  {size // 1024} KiB {conn:<5} run {run + 1} {setup:<16} {rate:8.1f} msg/s"
                          + (f"  LOST {lost}" if lost > 0 else f"  duplicates {-lost}" if lost else ""),
                          file=sys.stderr, flush=True)

        print(f"\n{'size':>7} {'connection':<10} {'set-up':<16} {'msg/s':>8} {'min':>8} {'max':>8} "
              f"{'x Postfix':>9} {'of direct':>9} {'lost':>5} {'dup':>4} {'CPU us/msg':>10} {'gen us/msg':>10}")
        for size, conn in cases:
            med = {s: statistics.median(r for r, _, _, _ in results[(size, conn, s)]) for s in setups}
            for setup in setups:
                rates = [r for r, _, _, _ in results[(size, conn, setup)]]
                lost = sum(max(n, 0) for _, n, _, _ in results[(size, conn, setup)])
                dup = sum(max(-n, 0) for _, n, _, _ in results[(size, conn, setup)])
                cpus = [c for _, _, c, _ in results[(size, conn, setup)] if c is not None]
                cpu = f"{statistics.median(cpus):.0f}" if cpus else "-"
                generator = f"{statistics.median(g for _, _, _, g in results[(size, conn, setup)]):.0f}"
                ratio = f"{med[setup] / med['postfix']:.2f}" if "postfix" in med else "-"
                direct = f"{100 * med[setup] / med['direct']:.0f}%" if "direct" in med else "-"
                print(f"{size // 1024:>4} KiB {conn:<10} {setup:<16} {med[setup]:8.1f} {min(rates):8.1f} "
                      f"{max(rates):8.1f} {ratio:>9} {direct:>9} {lost:>5} {dup:>4} {cpu:>10} {generator:>10}")
            if "sluice+rust" in med and "sluice+rust+bayes" in med:
                print(f"{'':>7} {'':<10} bayes (trained) after the Rust chain: "
                      f"{100 * (1 - med['sluice+rust+bayes'] / med['sluice+rust']):.1f}% of its throughput")
            if "sluice" in med and "sluice+rust" in med:
                print(f"{'':>7} {'':<10} Rust chain overhead: {100 * (1 - med['sluice+rust'] / med['sluice']):.1f}% "
                      "of the no-policy throughput"
                      + (f"; warm instances: {100 * (1 - med['sluice+rust-warm'] / med['sluice']):.1f}%"
                         if "sluice+rust-warm" in med else ""))
        if any(n > 0 for rs in results.values() for _, n, _, _ in rs):
            sys.exit("messages were lost")
    finally:
        for s in reversed(stoppers):
            s.stop()
        finish(work, args.keep)


if __name__ == "__main__":
    main()
