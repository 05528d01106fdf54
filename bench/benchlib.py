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

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
