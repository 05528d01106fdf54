"""What the benchmark scripts share: paths, loopback ports, waiting for a listener, Postfix's
smtp-sink as the next hop."""
import os
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASM = os.path.join(ROOT, "target", "wasm32-wasip2", "release")


def free_ports(n):
    """`n` distinct free loopback ports (the sockets stay bound until all are chosen)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_port(port, timeout=60, process=None):
    """Wait until something listens on loopback `port`; exit if `process` exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            sys.exit(f"the relay exited ({process.returncode}); see its log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def server_config(port, connections, per_ip=None, server="", spool=""):
    """The `[server]` and `[spool]` sections every benchmark's relay starts from: loopback
    `port`, `connections` at once (`per_ip` from one address: the same by default), the spool
    in the working folder; `server` and `spool` add lines to each."""
    return (f'[server]\nhostname = "relay.test"\nlisten = ["127.0.0.1:{port}"]\n'
            f"max_connections = {connections}\nmax_connections_per_ip = {per_ip or connections}\n{server}"
            f'[spool]\ndir = "spool"\n{spool}')


def start_sluice(binary, work, config, env=None):
    """Write `config` to WORK/sluice.toml and start `sluice serve` on it in WORK, its log in
    relay_log(WORK) — not beside the configuration: the relay watches the configuration's
    folder, and a log written there would wake its watcher at every line (keep busy files
    out of it in production too). Returns the process (wait for its port with wait_port)."""
    with open(os.path.join(work, "sluice.toml"), "w") as f:
        f.write(config)
    return subprocess.Popen([os.path.abspath(binary), "serve", "--config", os.path.join(work, "sluice.toml")], cwd=work,
                            env=env, stdout=subprocess.DEVNULL, stderr=open(relay_log(work), "wb"))


def relay_log(work):
    """Where start_sluice writes the relay's log: WORK/log/relay.log."""
    os.makedirs(os.path.join(work, "log"), exist_ok=True)
    return os.path.join(work, "log", "relay.log")


def finish(work, keep):
    """Remove a run's working folder, or say where it is kept."""
    if keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def need_postfix_tools():
    """smtp-source and smtp-sink (Debian package postfix), installed if missing and possible.
    Installing the package configures and starts no Postfix instance."""
    if shutil.which("smtp-source") and shutil.which("smtp-sink"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("smtp-source/smtp-sink are missing: apt-get install postfix")
    print("installing Debian's postfix package (for smtp-source and smtp-sink)", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], input=b"postfix postfix/main_mailer_type select No configuration\n",
                   check=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postfix"], check=True, env=env, stdout=subprocess.DEVNULL)


class Sink:
    """smtp-sink with running counters; counts the messages it has received."""

    def __init__(self, port, workdir, name):
        self.out = os.path.join(workdir, f"sink-{name}.out")
        args = ["smtp-sink", "-c", f"127.0.0.1:{port}", "1024"]
        if os.geteuid() == 0:
            args[1:1] = ["-u", "nobody"]
        self.proc = subprocess.Popen(args, stdout=open(self.out, "wb"), stderr=subprocess.STDOUT)
        time.sleep(0.3)

    def count(self):
        with open(self.out, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 400))
            tail = f.read().decode(errors="replace")
        counts = [int(part.split("=")[1]) for part in tail.replace("\r", "\n").split() if part.startswith("mesg=")]
        return counts[-1] if counts else 0

    def cpu_seconds(self):
        """User and system CPU time of smtp-sink so far."""
        return process_cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def process_cpu_seconds(pid):
    """User and system CPU time of process `pid` so far, all its threads (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Resolver:
    """A caching name server on loopback `port` holding the benchmark's records: Debian's
    `unbound` (installed if missing and possible) with one static zone for the whole tree —
    `records` (lines of zone data, e.g. the sender domain's SPF and DMARC TXT records) answered,
    every other name NXDOMAIN with an SOA whose minimum lets the relay's resolver cache it, as
    a real DNSBL's negative answers are. Where unbound cannot be had, `fallback(port)` serves
    instead (and `self.kind` says which)."""

    def __init__(self, port, workdir, records, fallback):
        self.proc = None
        self.kind = "unbound"
        if not shutil.which("unbound") and os.geteuid() == 0 and shutil.which("apt-get"):
            print("installing Debian's unbound package (the benchmark's name server)", file=sys.stderr)
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "install", "-y", "-qq", "unbound"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not shutil.which("unbound"):
            print("unbound is missing: a built-in name server answers NXDOMAIN to everything", file=sys.stderr)
            self.kind = "built-in (NXDOMAIN only)"
            fallback(port)
            return
        folder = os.path.join(workdir, "unbound")
        os.makedirs(folder, exist_ok=True)
        data = "".join(f"    local-data: '{r}'\n" for r in records)
        conf = os.path.join(folder, "unbound.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{folder}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    do-ip6: no
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "." static
    local-data: ". 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300"
{data}""")
        self.proc = subprocess.Popen(["unbound", "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(folder, "log"), "wb"))
        deadline = time.time() + 10
        while time.time() < deadline and not self._answers(port):
            if self.proc.poll() is not None:
                sys.exit(f"unbound exited; see {folder}/log")
            time.sleep(0.05)

    @staticmethod
    def _answers(port):
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x06\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(query, ("127.0.0.1", port))
                return s.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
