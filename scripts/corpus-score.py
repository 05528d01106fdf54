#!/usr/bin/env python3
"""Score a spam/ham corpus with `sluice policy test` and print recall and false positives.

Usage: scripts/corpus-score.py [--sluice BIN] [--policy FILE.wasm ...] [--threshold 5.0]
                               [--show-fp] [--show-fn N] [--symbols] SPAM_DIR HAM_DIR

Prints how many spam messages score at or above the threshold (recall) and how many ham
messages do (false-positive rate). `--symbols` adds how often each symbol fires per class.
"""
import argparse
import collections
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(sluice, policies, directory):
    cmd = [sluice, "policy", "test", "--json", "--reject-score", "off", "--eml", directory]
    for p in policies:
        cmd += ["--policy", p]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"policy test failed: {out.stderr.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", default=os.path.join(ROOT, "target", "debug", "sluice"))
    ap.add_argument("--policy", action="append",
                    default=None, help="policy component(s); default: spam-heuristics")
    ap.add_argument("--threshold", type=float, default=5.0)
    ap.add_argument("--show-fp", action="store_true")
    ap.add_argument("--show-fn", type=int, default=0)
    ap.add_argument("--symbols", action="store_true")
    ap.add_argument("spam")
    ap.add_argument("ham")
    a = ap.parse_args()
    policies = a.policy or [os.path.join(ROOT, "target", "wasm32-wasip2", "release", "spam_heuristics.wasm")]
    spam = run(a.sluice, policies, a.spam)
    ham = run(a.sluice, policies, a.ham)
    caught = [r for r in spam if r["score"] >= a.threshold]
    false_pos = [r for r in ham if r["score"] >= a.threshold]
    print(f"spam: {len(caught)}/{len(spam)} at or above {a.threshold} "
          f"(recall {100.0 * len(caught) / max(1, len(spam)):.1f}%)")
    print(f"ham:  {len(false_pos)}/{len(ham)} at or above {a.threshold} "
          f"(false positives {100.0 * len(false_pos) / max(1, len(ham)):.2f}%)")
    if a.show_fp:
        for r in false_pos:
            print(f"  FP {r['score']:5.1f} {r['file']} {','.join(r['symbols'])}")
    if a.show_fn:
        missed = sorted((r for r in spam if r["score"] < a.threshold), key=lambda r: -r["score"])
        for r in missed[: a.show_fn]:
            print(f"  FN {r['score']:5.1f} {r['file']} {','.join(r['symbols'])}")
    if a.symbols:
        for name, rows in (("spam", spam), ("ham", ham)):
            counts = collections.Counter(s for r in rows for s in r["symbols"])
            print(f"{name} symbols:", ", ".join(f"{k}={v}" for k, v in counts.most_common()))


if __name__ == "__main__":
    main()
