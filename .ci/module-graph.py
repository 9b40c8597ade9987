#!/usr/bin/env python3
"""Reads each crate's import graph, file by file, and fails on a cycle.

An edge A -> B means a source file A names an item of the module in file B: through `use
crate::…`, `use super::…`, `use self::…` (grouped trees included), an inline `crate::…` or
`super::…` path, or a path through one of A's own child modules (`segment::Request`). A
`mod b;` declaration alone is not an edge: declaring a module is not depending on it. Unit
tests (`#[cfg(test)] mod tests { … }`) are left out: they may reach anywhere.

Imports point one way only when the graph has no cycle, which also rules out upward arrows to
the crate root: the root names its modules to compose them, so a module naming the root closes
a cycle.

Usage: module-graph.py [crate_src_dir ...]   (default: every crate of the workspace)
Prints each crate's file count, edge count and any cycles (strongly connected components of
two or more files); exits 1 when there is one.
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_path(src, path):
    """The module path of a file under `src`: lib.rs and main.rs are the root."""
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return ()
    return tuple(rel)


def blank(text):
    """Source with comments, string and char literals emptied (lifetimes kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        prev = text[i - 1] if i else " "
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == "r" and not (prev.isalnum() or prev == "_") and re.match(r'r#*"', text[i:]):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            j = text.find('"' + hashes, i + len(hashes) + 2)
            out.append('""')
            i = n if j < 0 else j + 1 + len(hashes)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and re.match(r"'(?:\\.[^']*|[^'\\])'", text[i:]):
            m = re.match(r"'(?:\\.[^']*|[^'\\])'", text[i:])
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip(text):
    """Source without comments, literals and unit-test modules."""
    text = blank(text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand(tree):
    """`a::{b, c::{d, self}}` -> [[a, b], [a, c, d], [a, c]]."""
    tree = tree.strip()
    depth, brace = 0, None
    for k, ch in enumerate(tree):
        if ch == "{" and depth == 0:
            brace = k
            break
    if brace is None:
        segs = [s.strip() for s in tree.split("::") if s.strip()]
        segs = [s.split(" as ")[0].strip() for s in segs]
        if segs and segs[-1] in ("self", "*"):
            segs = segs[:-1]
        return [segs]
    prefix = [s.strip() for s in tree[:brace].split("::") if s.strip()]
    inner = tree[brace + 1 : tree.rindex("}")]
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:k])
            start = k + 1
    parts.append(inner[start:])
    return [prefix + sub for part in parts if part.strip() for sub in expand(part)]


def references(text, here, is_dir_module, children):
    """Absolute module paths (tuples) that the file at module path `here` names."""
    self_mod = here
    super_mod = here[:-1]

    def absolute(segs):
        if not segs:
            return None
        head, rest = segs[0], segs[1:]
        if head == "crate":
            return tuple(rest)
        if head == "self":
            return self_mod + tuple(rest)
        if head == "super":
            base = super_mod
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
            return base + tuple(rest)
        if head in children:
            return self_mod + tuple(segs)
        return None

    refs = []
    for m in re.finditer(r"\buse\s+([^;]*);", text, flags=re.S):
        for segs in expand(m.group(1)):
            path = absolute(segs)
            if path is not None:
                refs.append(path)
    for m in re.finditer(r"\b((?:crate|super|self)(?:::" + IDENT + r")+)", text):
        refs.append(absolute(m.group(1).split("::")))
    for child in children:
        for m in re.finditer(r"(?<![:\w])" + re.escape(child) + r"((?:::" + IDENT + r")+)", text):
            refs.append(self_mod + (child,) + tuple(m.group(1).split("::")[1:]))
    return [r for r in refs if r is not None]


def graph(src):
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_path(src, path)] = path
    edges = {mod: set() for mod in files}
    for mod, path in files.items():
        with open(path, encoding="utf-8") as f:
            text = strip(f.read())
        children = set(re.findall(r"\bmod\s+(" + IDENT + r")\s*;", text))
        is_dir = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        for ref in references(text, mod, is_dir, children):
            # The longest prefix of the path that is a file.
            for n in range(len(ref), -1, -1):
                target = ref[:n]
                if target in files:
                    if target != mod:
                        edges[mod].add(target)
                    break
    return files, edges


def cycles(edges):
    """Tarjan's strongly connected components of two or more nodes."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(mod):
    return "::".join(("crate",) + mod)


def workspace_crates(root):
    dirs = []
    for entry in sorted(os.listdir(root)):
        src = os.path.join(root, entry, "src")
        if os.path.isfile(os.path.join(root, entry, "Cargo.toml")) and os.path.isdir(src):
            dirs.append(src)
    if os.path.isdir(os.path.join(root, "src")):
        dirs.append(os.path.join(root, "src"))
    return dirs


def main():
    root = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
    dirs = sys.argv[1:] or workspace_crates(root)
    failed = False
    for src in dirs:
        files, edges = graph(src)
        found = cycles(edges)
        count = sum(len(e) for e in edges.values())
        label = os.path.relpath(src, root)
        if found:
            failed = True
            print(f"{label}: {len(files)} files, {count} imports, {len(found)} cycle(s):")
            for component in found:
                members = set(component)
                print("  " + ", ".join(name(m) for m in sorted(component)))
                for m in sorted(component):
                    inside = sorted(t for t in edges[m] if t in members)
                    print(f"    {name(m)} -> {', '.join(name(t) for t in inside)}")
        else:
            print(f"{label}: {len(files)} files, {count} imports, no cycle")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
