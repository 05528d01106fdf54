#!/usr/bin/env python3
"""The RFC 7208 test suite of the openspf project (as published in pyspf's source
distribution) turned into DNS fixtures in the format of `sluice policy test --dns`.

Usage: spf_suite.py DIR
  Reads DIR/rfc7208-tests.yml, fetching pyspf's sdist from PyPI into DIR when it is not there,
  and prints JSON: [{"scenario", "fixture", "tests": [{"name", "helo", "host", "mailfrom",
  "results", "fixture_complete"}]}]. SPF (type 99) records are served as TXT where a name has
  no TXT of its own, as the suite's drivers do; CNAME records are
  served as the target's records under the alias's name.
"""
import glob
import ipaddress
import json
import os
import subprocess
import sys
import tarfile

import yaml

DIR = sys.argv[1]
SUITE = os.path.join(DIR, "rfc7208-tests.yml")
if not os.path.exists(SUITE):
    os.makedirs(DIR, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
         "pyspf==2.0.14", "-d", DIR],
        check=True,
    )
    with tarfile.open(glob.glob(os.path.join(DIR, "pyspf-*.tar.gz"))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("test/rfc7208-tests.yml"))
        with open(SUITE, "wb") as out:
            out.write(tar.extractfile(member).read())


def escaped(text):
    """Zone-file escapes (`\\DDD`) for what a fixture line cannot hold as it is."""
    return "".join(c if 0x21 <= ord(c) <= 0x7E and c not in '"\\#' else f"\\{ord(c):03d}" for c in text)


def owner(name):
    """The fixture's name for a suite name: PTR names are keyed by the address."""
    labels = name.lower().rstrip(".").split(".")
    if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
        return ".".join(reversed(labels[:4]))
    if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
        nibbles = "".join(reversed(labels[:32]))
        return str(ipaddress.IPv6Address(":".join(nibbles[i:i + 4] for i in range(0, 32, 4))))
    return escaped(name)


def text(value):
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return str(value)


scenarios = []
for doc in yaml.safe_load_all(open(SUITE)):
    if not doc:
        continue
    lines, complete = [], True
    for name, records in (doc.get("zonedata") or {}).items():
        name = str(name)
        kinds = {list(r)[0] if isinstance(r, dict) else r for r in records}
        real = {list(r)[0] for r in records if isinstance(r, dict) and list(r.values())[0] != "NONE"}
        for record in records:
            if record == "TIMEOUT":
                # The suite's TIMEOUT is for the types the name has no records of (TXT: NONE
                # says it has none); beside real TXT records it is the type SPF lookup's,
                # which RFC 7208 checkers no longer make.
                if "TXT" not in real:
                    lines.append(f"{owner(name)} TIMEOUT")
                continue
            if not isinstance(record, dict):
                complete = False
                continue
            (kind, value), = record.items()
            if value == "NONE":
                continue
            if kind == "SPF":
                if "TXT" in kinds:
                    continue
                kind = "TXT"
            if kind == "MX":
                value = f"{value[0]} {value[1] or '.'}"
            elif kind in ("A", "AAAA", "PTR"):
                value = str(value)
            elif kind == "TXT":
                value = text(value)
            elif kind == "CNAME":
                value = str(value)
            else:
                complete = False
                continue
            lines.append(f"{owner(name)} {kind} \"{escaped(value)}\"")
    tests = []
    for test_name, test in doc["tests"].items():
        results = test["result"] if isinstance(test["result"], list) else [test["result"]]
        tests.append({
            "name": test_name,
            "helo": str(test.get("helo", "")),
            "host": str(test["host"]),
            "mailfrom": str(test.get("mailfrom", "")),
            "results": results,
            "fixture_complete": complete,
        })
    scenarios.append({"scenario": doc["description"], "fixture": "\n".join(lines) + "\n", "tests": tests})
json.dump(scenarios, sys.stdout)
