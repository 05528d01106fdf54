"""rules: scored regular-expression rules over headers and bodies, the way SpamAssassin's
header and body rules work, written in the policy's configuration.

A rule is one configuration key:

    rule.NAME = "TARGET /REGEX/FLAGS SCORE"      # fires when REGEX matches TARGET
    rule.NAME = "TARGET !/REGEX/FLAGS SCORE"     # fires when it does not
    meta.NAME = "EXPRESSION SCORE"               # && || ! ( ) over other rules' names

TARGET is `subject`, `from`, `to`, `header:NAME` (every value of that header), `body` (the
text body, or the HTML body without its tags), `html` (the HTML source), `uri` (every
http(s) URL in the bodies), `all-headers`. FLAGS: `i` (ignore case), `m`, `s`. The built-in
rules below apply unless `builtin = "no"`; a configured rule of the same name replaces one;
`score.NAME = "0"` turns a rule off. With `stats = "yes"` each hit also increments a daily
counter in the host's key-value store (`hits:NAME:YYYY-MM-DD`, kept eight days).
"""

import datetime
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

BUILTIN = {
    "SUBJ_MONEY_NOW": r"subject /\b(free|cash|money|prize|bonus)\b.*\b(now|today|winner|instantly)\b/i 1.5",
    "BODY_YOU_WON": r"body /\b(you have|you've) (been selected|won)\b/i 2.5",
    "BODY_WIRE_TRANSFER": r"body /\b(western union|moneygram|wire transfer|bank transfer fee)\b/i 1.5",
    "BODY_URGENT_ACTION": r"body /\b(urgent|immediate(ly)?) (action|response|attention|reply)\b/i 1.0",
    "BODY_CLAIM_PRIZE": r"body /\bclaim (your|the) (prize|reward|winnings|funds)\b/i 2.0",
    "HDR_BULK_MAILER": r"header:X-Mailer /\b(mass|bulk) ?mail/i 1.5",
    "FROM_NUMERIC_USER": r"from /[<\s]\d{6,}@/ 1.0",
    "URI_NUMERIC_HOST": r"uri /^https?:\/\/\d+\.\d+\.\d+\.\d+/ 1.5",
}
BUILTIN_META = {
    "META_ADVANCE_FEE": "BODY_YOU_WON && (BODY_WIRE_TRANSFER || BODY_CLAIM_PRIZE) 2.5",
}

RULE = re.compile(r"^\s*(\S+)\s+(!?)/(.*)/([ims]*)\s+(-?\d+(?:\.\d+)?)\s*$", re.S)
META = re.compile(r"^\s*(.+?)\s+(-?\d+(?:\.\d+)?)\s*$", re.S)
TARGETS = ("subject", "from", "to", "body", "html", "uri", "all-headers")
URI = re.compile(r"\bhttps?://[^\s<>\"')\]]+", re.I)
TAGS = re.compile(r"<[^>]*>")
NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")


class Rule:
    def __init__(self, name, text):
        m = RULE.match(text)
        if not m:
            raise ValueError(f"rule.{name}: expected 'TARGET /REGEX/FLAGS SCORE', got {text!r}")
        target, negated, pattern, flags, score = m.groups()
        if target not in TARGETS and not (target.startswith("header:") and len(target) > 7):
            raise ValueError(f"rule.{name}: unknown target {target!r}")
        options = 0
        for f in flags:
            options |= {"i": re.I, "m": re.M, "s": re.S}[f]
        try:
            self.regex = re.compile(pattern, options)
        except re.error as e:
            raise ValueError(f"rule.{name}: bad regular expression: {e}") from None
        self.name, self.target, self.negated, self.score = name, target, negated == "!", float(score)

    def fires(self, texts):
        found = any(self.regex.search(t) for t in texts)
        return found != self.negated


class Meta:
    """A boolean expression over rule names, parsed once (no eval)."""

    def __init__(self, name, text):
        m = META.match(text)
        if not m:
            raise ValueError(f"meta.{name}: expected 'EXPRESSION SCORE', got {text!r}")
        expression, score = m.groups()
        self.name, self.score = name, float(score)
        self.tokens = re.findall(r"&&|\|\||!|\(|\)|[A-Za-z_][A-Za-z0-9_]*|\S", expression)
        self.position = 0
        try:
            self.tree = self.parse_or()
            if self.position != len(self.tokens):
                raise ValueError(f"unexpected {self.tokens[self.position]!r}")
        except (ValueError, IndexError) as e:
            raise ValueError(f"meta.{name}: cannot read {expression!r}: {e or 'unexpected end'}") from None

    def next(self):
        token = self.tokens[self.position]
        self.position += 1
        return token

    def peek(self):
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def parse_or(self):
        left = self.parse_and()
        while self.peek() == "||":
            self.next()
            left = ("or", left, self.parse_and())
        return left

    def parse_and(self):
        left = self.parse_not()
        while self.peek() == "&&":
            self.next()
            left = ("and", left, self.parse_not())
        return left

    def parse_not(self):
        if self.peek() == "!":
            self.next()
            return ("not", self.parse_not())
        if self.peek() == "(":
            self.next()
            inner = self.parse_or()
            if self.next() != ")":
                raise ValueError("missing )")
            return inner
        token = self.next()
        if not NAME.match(token):
            raise ValueError(f"unexpected {token!r}")
        return ("rule", token)

    def names(self, node=None):
        node = node or self.tree
        if node[0] == "rule":
            return {node[1]}
        return set().union(*(self.names(child) for child in node[1:]))

    def fires(self, hits, node=None):
        node = node or self.tree
        kind = node[0]
        if kind == "rule":
            return node[1] in hits
        if kind == "not":
            return not self.fires(hits, node[1])
        if kind == "and":
            return self.fires(hits, node[1]) and self.fires(hits, node[2])
        return self.fires(hits, node[1]) or self.fires(hits, node[2])


def load(config):
    settings = dict(config)
    rules, metas = {}, {}
    if settings.get("builtin", "yes").lower() not in ("no", "false", "0"):
        rules.update({n: Rule(n, t) for n, t in BUILTIN.items()})
        metas.update({n: Meta(n, t) for n, t in BUILTIN_META.items()})
    for key, value in config:
        kind, _, name = key.partition(".")
        if kind in ("rule", "meta") and not NAME.match(name):
            raise ValueError(f"{key}: rule names are A-Z, 0-9 and _, starting with a letter")
        if kind == "rule":
            rules[name] = Rule(name, value)
        elif kind == "meta":
            metas[name] = Meta(name, value)
    for key, value in config:
        kind, _, name = key.partition(".")
        if kind != "score":
            continue
        target = rules.get(name) or metas.get(name)
        if target is None:
            raise ValueError(f"{key}: no rule named {name}")
        try:
            target.score = float(value)
        except ValueError:
            raise ValueError(f"{key}: not a number: {value!r}") from None
    for meta in metas.values():
        unknown = meta.names() - set(rules)
        if unknown:
            raise ValueError(f"meta.{meta.name}: no rule named {', '.join(sorted(unknown))}")
    rules = {n: r for n, r in rules.items() if r.score != 0}
    metas = {n: m for n, m in metas.items() if m.score != 0}
    stats = settings.get("stats", "no").lower() in ("yes", "true", "1")
    return rules, metas, stats


def texts_of(message):
    """Every target's texts, read from the host only when a rule needs them."""
    cache = {}

    def get(target):
        if target in cache:
            return cache[target]
        if target == "subject":
            value = [message.subject() or ""]
        elif target in ("from", "to"):
            value = message.header_all(target)
        elif target.startswith("header:"):
            value = message.header_all(target[len("header:"):])
        elif target == "all-headers":
            value = [f"{h.name}: {h.value}" for h in message.headers()]
        elif target == "html":
            value = [message.html_body(256 * 1024) or ""]
        elif target == "body":
            text = message.text_body(256 * 1024)
            if text is None:
                text = TAGS.sub(" ", message.html_body(256 * 1024) or "")
            value = [text]
        else:  # uri
            value = URI.findall(get("body")[0]) + URI.findall(get("html")[0])
        cache[target] = value
        return value

    return get


def keep_going(symbols=()):
    return types.Decision(types.Verdict_Continue(), False, list(symbols), [])


class Hooks(exports.Hooks):
    rules = {}
    metas = {}
    stats = False

    def describe(self):
        return types.PolicyInfo(name="rules", version="0.1.0", stages=[types.Stage.DATA])

    def init(self, config):
        try:
            Hooks.rules, Hooks.metas, Hooks.stats = load(config)
        except ValueError as e:
            raise Err(str(e))

    def on_connect(self, ctx):
        return keep_going()

    def on_helo(self, ctx):
        return keep_going()

    def on_mail(self, ctx):
        return keep_going()

    def on_rcpt(self, ctx, rcpt):
        return keep_going()

    def on_data(self, ctx, message):
        texts = texts_of(message)
        hits = {n for n, r in Hooks.rules.items() if r.fires(texts(r.target))}
        hits |= {n for n, m in Hooks.metas.items() if m.fires(hits)}
        symbols = []
        for name in sorted(hits):
            rule = Hooks.rules.get(name) or Hooks.metas[name]
            symbols.append(types.Symbol(name, rule.score, None))
        if hits:
            host.log(host.LogLevel.DEBUG, "rules hit", [(n, "") for n in sorted(hits)])
        if hits and Hooks.stats:
            days = host.now_millis() // 86_400_000
            day = (datetime.date(1970, 1, 1) + datetime.timedelta(days=days)).isoformat()
            for name in hits:
                try:
                    host.kv_incr(f"hits:{name}:{day}", 1, 8 * 86_400)
                except Err as e:
                    host.log(host.LogLevel.WARN, "rule statistics not counted", [("error", str(e.value))])
        return keep_going(symbols)
