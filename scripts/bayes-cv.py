#!/usr/bin/env python3
"""K-fold cross-validation of the bayes policy on a spam/ham corpus, through the real CLI.

Usage: scripts/bayes-cv.py [--folds 5] [--seed 1] [--threshold 5.0] [--sluice BIN]
                           [--bayes FILE.wasm] [--heuristics FILE.wasm] [--show N]
                           [--corpus DIR | --spam DIR --ham DIR]
                           [--test-spam DIR --test-ham DIR]

For each fold: `sluice learn --state FOLD.redb` on the other folds' spam and ham, then
`sluice policy test --state FOLD.redb` with spam-heuristics and bayes in one chain on the
held-out fold. A message is flagged when its score reaches the add-header threshold (5.0,
the relay's default); the score of "alone" is that policy's symbols only, of "both" their
sum. Prints spam flagged and ham flagged for spam-heuristics alone, bayes alone, and both.

With --test-spam/--test-ham there are no folds: the model is trained on the whole corpus and
measured on those directories (mail it has never seen).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASM = os.path.join(ROOT, "target", "wasm32-wasip2", "release")


def files(directory):
    return sorted(
        os.path.join(directory, f) for f in os.listdir(directory)
        if not f.startswith(".") and os.path.isfile(os.path.join(directory, f))
    )


def learn(a, state, spam, ham):
    cmd = [a.sluice, "learn", "--quiet", "--policy", a.bayes, "--state", state]
    cmd += ["--policy-config", f"min_spam={a.min}", "--policy-config", f"min_ham={a.min}"]
    for item in a.config:
        cmd += ["--policy-config", item]
    if spam:
        cmd += ["--spam", *spam]
    if ham:
        cmd += ["--ham", *ham]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"sluice learn failed: {out.stderr.strip()}")
    return out.stderr.strip().splitlines()[-1]


def score(a, state, messages):
    """{file: (heuristics score, bayes score, bayes detail, bayes micros)} of each message."""
    result = {}
    for start in range(0, len(messages), 200):
        cmd = [a.sluice, "policy", "test", "--json", "--reject-score", "off", "--state", state,
               "--policy", a.heuristics, "--policy", a.bayes,
               "--policy-config", f"bayes.min_spam={a.min}", "--policy-config", f"bayes.min_ham={a.min}"]
        for item in a.config:
            cmd += ["--policy-config", f"bayes.{item}"]
        for m in messages[start:start + 200]:
            cmd += ["--eml", m]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode not in (0, 1):
            sys.exit(f"sluice policy test failed: {out.stderr.strip()}")
        for line in out.stdout.splitlines():
            row = json.loads(line)
            h = b = 0.0
            detail = ""
            micros = 0
            for p in row["policies"]:
                total = sum(s["score"] for s in p["symbols"])
                if p["policy"] == "bayes":
                    b += total
                    micros += p["micros"] or 0
                    detail = " ".join(f"{s['name']}[{s['detail']}]" for s in p["symbols"])
                elif p["policy"] == "spam-heuristics":
                    h += total
            result[row["file"]] = (h, b, detail, micros)
    return result


BANDS = [0, .01, .05, .2, .4, .6, .8, .95, .99, .999]


def probability(detail):
    """The probability in a bayes symbol's detail (0.5: no symbol)."""
    marker = "[p="
    return float(detail.split(marker, 1)[1].split()[0]) if marker in detail else 0.5


def search(a, scores, spam, ham):
    """The most spam flagged with at most one ham, over random monotone band scores (-6..5)."""
    def band(p):
        return max(i for i, lower in enumerate(BANDS) if p >= lower)
    rows = {f: (scores[f][0], band(probability(scores[f][2]))) for f in spam + ham if f in scores}
    rng = random.Random(a.seed)
    grid = [-6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5]
    best = None
    for _ in range(a.search):
        bands = sorted(rng.choice(grid) for _ in BANDS)
        s = sum(1 for f in spam if f in rows and rows[f][0] + bands[rows[f][1]] >= a.threshold)
        h = sum(1 for f in ham if f in rows and rows[f][0] + bands[rows[f][1]] >= a.threshold)
        if h <= 1 and (best is None or s > best[0]):
            best = (s, h, bands)
    if best:
        print(f"band-score search ({a.search} settings): at most one ham flagged, at best "
              f"{best[0]}/{len(spam)} spam ({100.0 * best[0] / max(1, len(spam)):.1f}%) with scores {best[2]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=5.0)
    ap.add_argument("--min", type=int, default=50, help="min_spam and min_ham of the policy")
    ap.add_argument("--sluice", default=os.path.join(ROOT, "target", "release", "sluice"))
    ap.add_argument("--bayes", default=os.path.join(WASM, "bayes.wasm"))
    ap.add_argument("--heuristics", default=os.path.join(WASM, "spam_heuristics.wasm"))
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    ap.add_argument("--spam")
    ap.add_argument("--ham")
    ap.add_argument("--test-spam")
    ap.add_argument("--test-ham")
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                    help="bayes configuration for training and testing (repeatable)")
    ap.add_argument("--search", type=int, default=0, metavar="N",
                    help="try N random monotone settings of the band scores on the same folds")
    ap.add_argument("--show", type=int, default=0, help="list this many misses and false positives")
    a = ap.parse_args()
    spam = files(a.spam or os.path.join(a.corpus, "spam"))
    ham = files(a.ham or os.path.join(a.corpus, "ham"))
    rng = random.Random(a.seed)
    rng.shuffle(spam)
    rng.shuffle(ham)
    scores = {}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if a.test_spam or a.test_ham:
            state = os.path.join(tmp, "all.redb")
            print("trained on the whole corpus:", learn(a, state, spam, ham), file=sys.stderr)
            test_spam = files(a.test_spam) if a.test_spam else []
            test_ham = files(a.test_ham) if a.test_ham else []
            scores.update(score(a, state, test_spam + test_ham))
            spam, ham = test_spam, test_ham
        else:
            for fold in range(a.folds):
                held_spam = spam[fold::a.folds]
                held_ham = ham[fold::a.folds]
                train_spam = [m for i, m in enumerate(spam) if i % a.folds != fold]
                train_ham = [m for i, m in enumerate(ham) if i % a.folds != fold]
                state = os.path.join(tmp, f"fold{fold}.redb")
                summary = learn(a, state, train_spam, train_ham)
                print(f"fold {fold + 1}/{a.folds}: {summary}", file=sys.stderr)
                scores.update(score(a, state, held_spam + held_ham))
    t = a.threshold
    spam_set, ham_set = set(spam), set(ham)
    print(f"{len(spam)} spam, {len(ham)} ham, "
          + (f"{a.folds}-fold cross-validation" if not (a.test_spam or a.test_ham) else "unseen test set")
          + f", flagged at score >= {t} ({time.time() - started:.0f} s)")
    print(f"{'':18} {'spam flagged':>16} {'ham flagged':>16}")
    for name, pick in (("spam-heuristics", lambda h, b: h), ("bayes", lambda h, b: b), ("both", lambda h, b: h + b)):
        s = sum(1 for f in spam if f in scores and pick(*scores[f][:2]) >= t)
        h = sum(1 for f in ham if f in scores and pick(*scores[f][:2]) >= t)
        print(f"{name:18} {s:5}/{len(spam):<5} {100.0 * s / max(1, len(spam)):5.1f}% "
              f"{h:5}/{len(ham):<5} {100.0 * h / max(1, len(ham)):5.2f}%")
    def group(f):
        name = os.path.basename(f)
        return "SpamAssassin public corpus" if name.startswith("sapub-") else "test messages (SpamAssassin t/data, rspamd)"
    if not (a.test_spam or a.test_ham):
        for g in ("SpamAssassin public corpus", "test messages (SpamAssassin t/data, rspamd)"):
            gs = [f for f in spam if group(f) == g and f in scores]
            gh = [f for f in ham if group(f) == g and f in scores]
            both_s = sum(1 for f in gs if sum(scores[f][:2]) >= t)
            both_h = sum(1 for f in gh if sum(scores[f][:2]) >= t)
            print(f"  both, {g}: spam {both_s}/{len(gs)} {100.0 * both_s / max(1, len(gs)):.1f}%, "
                  f"ham {both_h}/{len(gh)} {100.0 * both_h / max(1, len(gh)):.2f}%")
    micros = sorted(v[3] for v in scores.values())
    if micros:
        print(f"bayes per message (trained model, policy test, one instance per message): median "
              f"{micros[len(micros) // 2]} us, p99 {micros[int(len(micros) * 0.99)]} us, max {micros[-1]} us")
    missing = [f for f in spam + ham if f not in scores]
    if missing:
        print(f"{len(missing)} messages got no result", file=sys.stderr)
    if a.search:
        search(a, scores, spam, ham)
    if a.show:
        fps = sorted((f for f in ham if f in scores and sum(scores[f][:2]) >= t), key=lambda f: -sum(scores[f][:2]))
        fns = sorted((f for f in spam if f in scores and sum(scores[f][:2]) < t), key=lambda f: -sum(scores[f][:2]))
        for label, rows in (("FP", fps), ("FN", fns)):
            for f in rows[: a.show]:
                h, b, d, _ = scores[f]
                print(f"  {label} heuristics {h:5.1f} bayes {b:5.1f} {os.path.basename(f)} {d}")
    _ = spam_set, ham_set


if __name__ == "__main__":
    main()
