#!/usr/bin/env python3
"""Print which rooms (top-level modules of host/src) use which, and any import cycle among them.

Usage: scripts/rooms.py [--check]   (--check: exit 1 on a cycle, or when smtp uses another room)
A room's uses are the `crate::ROOM` paths in its files (doc comments aside); tests are left out.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host", "src")


def room_of(path):
    rel = os.path.relpath(path, SRC)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def uses():
    graph = {}
    for root, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs") or "tests" in name:
                continue
            path = os.path.join(root, name)
            room = room_of(path)
            if room in ("lib", "main"):
                continue
            text = open(path, encoding="utf-8").read()
            text = text.split("#[cfg(test)]")[0]
            code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
            for other in re.findall(r"crate::([a-z_]+)", code):
                if other != room:
                    graph.setdefault(room, set()).add(other)
            graph.setdefault(room, set())
    return graph


def cycles(graph):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main():
    graph = uses()
    for room in sorted(graph):
        print(f"{room:13} -> {', '.join(sorted(graph[room])) or '-'}")
    found = cycles(graph)
    for c in found:
        print("cycle:", " <-> ".join(c))
    bad = bool(found) or bool(graph.get("smtp"))
    if graph.get("smtp"):
        print("smtp uses", ", ".join(sorted(graph["smtp"])))
    if "--check" in sys.argv and bad:
        sys.exit(1)


main()
