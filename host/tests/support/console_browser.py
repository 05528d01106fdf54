#!/usr/bin/env python3
"""The web console in a real browser: Debian's chromium driven through chromedriver (W3C
WebDriver over HTTP, no client library).

Usage: console_browser.py SLUICE PROBE_WASM WORKDIR SCREENSHOT

Starts a next hop (sink.py), a relay with an admin token and two tenants (`example`
quarantines everything, `other` accepts), sends one message to each, then in the browser:
signs in with the token, waits for both transactions and the quarantined message to show,
saves a screenshot, releases the message (the next hop then receives it), reloads the
policies (the outcome is shown), checks the page on a phone-sized window, and restarts the relay under the open page, which must recover.
Exits non-zero, saying why, on the first failure.
"""
import base64
import json
import os
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import free_port, wait_port  # noqa: E402

SLUICE, PROBE, WORK, SCREENSHOT = sys.argv[1:5]
HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "c0ffee00c0ffee00c0ffee00c0ffee00"
MESSAGE = ("From: Alice <alice@remote.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
           "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@remote.test>\r\n\r\nHello.\r\n")


class WebDriver:
    """The few W3C WebDriver commands the test needs."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1700", f"--user-data-dir={WORK}/chromium-profile"],
            },
        }}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as e:
            raise SystemExit(f"webdriver {method} {path}: {e.code} {e.read().decode()[:500]}")

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        element = self.s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(element.values()))

    def type(self, css, text):
        self.s("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css):
        self.s("POST", f"/element/{self.find(css)}/click", {})

    def window(self, width, height):
        self.s("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def quit(self):
        try:
            self.call("DELETE", f"/session/{self.session}")
        except SystemExit:
            pass


def wait(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def start_relay(config, smtp_port, admin_port):
    log = open(os.path.join(WORK, "relay.log"), "a")
    env = dict(os.environ, SLUICE_LOG="info",
               SLUICE_CACHE_DIR=os.path.join(os.path.dirname(WORK), "sluice-test-cache"))
    proc = subprocess.Popen([SLUICE, "serve", "--config", config], stderr=log, env=env)
    wait_port(smtp_port, proc, timeout=300)
    wait_port(admin_port, proc)
    return proc


def sink_messages(sink_dir):
    return sorted(f for f in os.listdir(sink_dir) if f.endswith(".eml")) if os.path.isdir(sink_dir) else []


def main():
    os.makedirs(WORK, exist_ok=True)
    smtp_port, admin_port, sink_port, driver_port = free_port(), free_port(), free_port(), free_port()
    sink_dir = os.path.join(WORK, "sink")
    with open(os.path.join(WORK, "admin.token"), "w") as f:
        f.write(TOKEN + "\n")
    config = os.path.join(WORK, "sluice.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
hostname = "relay.test"
listen = ["127.0.0.1:{smtp_port}"]
[spool]
dir = "spool"
[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "admin.token"
[relay]
trusted_networks = []
[[tenant]]
name = "example"
domains = ["example.test"]
next_hop = "smtp:127.0.0.1:{sink_port}"
[[tenant.policy]]
path = "{PROBE}"
config = {{ verdict = "quarantine" }}
[[tenant]]
name = "other"
domains = ["other.test"]
next_hop = "smtp:127.0.0.1:{sink_port}"
""")
    procs = []
    driver = None
    try:
        sink = subprocess.Popen([sys.executable, os.path.join(HERE, "sink.py"), str(sink_port), sink_dir])
        procs.append(sink)
        wait_port(sink_port, sink)
        relay = start_relay(config, smtp_port, admin_port)
        procs.append(relay)
        with smtplib.SMTP("127.0.0.1", smtp_port) as s:
            s.sendmail("alice@remote.test", ["bob@other.test"], MESSAGE.format(to="bob@other.test", subject="accepted"))
            s.sendmail("alice@remote.test", ["carol@example.test"],
                       MESSAGE.format(to="carol@example.test", subject="quarantined"))
        wait("the accepted message at the next hop", lambda: len(sink_messages(sink_dir)) == 1)

        chromedriver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={driver_port}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(chromedriver)
        wait_port(driver_port, chromedriver)
        driver = WebDriver(driver_port)
        url = f"http://127.0.0.1:{admin_port}/"
        driver.go(url)
        # The page asks for the token before it shows anything.
        wait("the sign-in form", lambda: driver.js("return !document.getElementById('login').hidden"))
        assert driver.js("return document.getElementById('app').hidden"), "data shown before sign-in"
        driver.type("#token", TOKEN)
        driver.click("#login button[type=submit]")
        wait("live data", lambda: driver.js("return document.body.dataset.live === '1'"))
        outcomes = wait("both transactions", lambda: (lambda o: o if {"accept", "quarantine"} <= set(o) else None)(
            driver.js("return [...document.querySelectorAll('#tx-table td.outcome')].map(td => td.textContent.split(' ')[0])")))
        print("transactions shown:", outcomes)
        wait("the quarantined message", lambda: driver.js(
            "return document.querySelector('#queue-table tr[data-store=quarantine]') !== null"))
        chains = driver.js("return [...document.querySelectorAll('#tenant-list article')].map(a => a.dataset.tenant)")
        assert {"edge", "example", "other"} <= set(chains), chains
        assert driver.js("return document.querySelectorAll('#chart rect').length") > 0, "no chart bars"
        driver.screenshot(SCREENSHOT)
        print("screenshot:", SCREENSHOT)
        # Every control has a name a screen reader can read.
        unnamed = driver.js("return [...document.querySelectorAll('button, input')].filter("
                            "e => !(e.textContent.trim() || e.labels?.length || e.getAttribute('aria-label'))).length")
        assert unnamed == 0, f"{unnamed} unnamed controls"

        # Release from the quarantine: the next hop receives it.
        driver.js("document.querySelector('#queue-table tr[data-store=quarantine] button[data-action=release]').click()")
        wait("the released message at the next hop", lambda: len(sink_messages(sink_dir)) == 2)
        status = wait("the outcome shown", lambda: (lambda t: t if "done" in t else None)(
            driver.js("return document.getElementById('status').textContent")))
        print("status:", status)

        # Reload from the console: the outcome is shown.
        driver.click("#reload")
        status = wait("the reload's outcome", lambda: (lambda t: t if t.startswith("Reload: done") else None)(
            driver.js("return document.getElementById('status').textContent")))
        print("status:", status)

        # On a phone: nothing wider than the screen but the tables' own scrolling boxes.
        driver.window(390, 844)
        time.sleep(0.5)
        overflow = driver.js("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow}px wider than a phone's screen"
        driver.window(1280, 1700)

        # The relay restarts under the open page: the page says so, then recovers by itself.
        relay.terminate()
        relay.wait(timeout=30)
        wait("the page to notice", lambda: driver.js("return document.body.dataset.live === '0'"), timeout=20)
        relay = start_relay(config, smtp_port, admin_port)
        procs.append(relay)
        wait("the page to recover", lambda: driver.js("return document.body.dataset.live === '1'"), timeout=20)
        print("console ok")
    finally:
        if driver:
            driver.quit()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
