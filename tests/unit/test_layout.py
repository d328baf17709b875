"""The package's layering, read from the source: who may import whom, and no circles.

Every module under sigma_exporter/ is parsed with `ast`; every import counts,
at module level, inside a function ("lazy") or under `if TYPE_CHECKING:`
alike (a type-only import is still a dependency, and a circle for mypy). A
module belongs to a part: its subpackage (`source`, `poll`, ...) or, at the
top level, its own name (`config`, `cli`, ...). RULES says which parts each
part may import; its own part and the package root (`__version__`) always.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pytest
from conftest import ROOT

# --- the rules (the target layout; adjust here when the layout changes) ------------

RUNTIME = frozenset({"config", "strictyaml", "grammar", "metrics", "logsetup", "redact",
                     "tlsfiles", "helptext", "buildinfo", "docs", "source", "collect", "poll",
                     "web", "agent", "outputs", "oneshot", "app"})
# Leaf modules every part may use: logging with fields, redaction, the grammars,
# the TLS file checks, the --help layout, what this build is.
BASE = frozenset({"logsetup", "redact", "grammar", "tlsfiles", "helptext", "buildinfo"})

# part -> the other parts it may import, at module level or lazily
RULES: dict[str, frozenset[str]] = {
    "grammar": frozenset(),
    "logsetup": frozenset(),
    "redact": frozenset(),
    "tlsfiles": frozenset(),
    "helptext": frozenset(),
    "buildinfo": frozenset(),
    "metrics": frozenset(),
    "strictyaml": BASE,
    "config": BASE | {"strictyaml"},
    "docs": frozenset({"metrics"}),
    "source": BASE | {"config", "metrics"},
    "collect": BASE | {"source", "metrics", "config"},
    "agent": BASE | {"source", "collect", "config"},
    # The outputs source: playlists on disk or at the origin (the HTTP client of source/).
    "outputs": BASE | {"source", "collect", "config", "metrics"},
    # The status summary reads the outputs source's typed report.
    "poll": BASE | {"source", "collect", "config", "metrics", "outputs"},
    "web": BASE | {"poll", "collect", "config", "strictyaml", "metrics"},
    "app": RUNTIME - {"app", "oneshot"},
    # `once` and check-config's host checks: the poll side without the server stack.
    "oneshot": BASE | {"source", "collect", "config", "metrics", "outputs", "poll"},
    "cli": BASE | {"app", "oneshot", "config", "strictyaml"},
    # The simulator, scenarios and fake NVML use the runtime's parts, never the process.
    "sim": RUNTIME - {"app"},
}
# part -> parts it may import only inside a function (the subcommand that needs them)
LAZY_RULES: dict[str, frozenset[str]] = {
    "cli": frozenset({"sim", "agent"}),  # `simulate`, `demo`; NVML bindings only when asked
    "oneshot": frozenset({"agent"}),  # NVML bindings only when check-config asks
}
# module -> parts that one module may import beyond its part's rule
MODULE_RULES: dict[str, frozenset[str]] = {
    "sigma_exporter.sim.demo": frozenset({"app"}),  # the demo runs the real exporter
    # check-config reads the web config file as start-up does (no server stack in it)
    "sigma_exporter.cli": frozenset({"web"}),
}

# Edges that break RULES and import circles the tree still has: none. A new one
# fails test_the_tree_keeps_the_rules; an entry here that is fixed fails
# test_known_violations_are_still_there, so these sets can only shrink.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()
KNOWN_CYCLES: set[frozenset[str]] = set()

PACKAGE = "sigma_exporter"


# --- the checker -------------------------------------------------------------------

@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module (or package, for `import sigma_exporter`)
    lazy: bool  # inside a function: runs when called, not when imported


def module_name(path_parts: Iterable[str]) -> str:
    parts = list(path_parts)
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, ast.Module]:
    """Every module of the package: dotted name -> its syntax tree."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        name = module_name(path.relative_to(ROOT).parts)
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def imports(name: str, tree: ast.Module, modules: Iterable[str]) -> set[Edge]:
    """The package modules `name` imports. `from pkg import x` is the module pkg.x
    when that is a module, else pkg."""
    known = set(modules)
    is_package = f"{name}.__init__" in known or any(m.startswith(name + ".") for m in known)
    edges: set[Edge] = set()

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, inner)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = name.split(".")
                    anchor = anchor[:len(anchor) - child.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in known else base, inner)
            visit(child, inner)

    def add(target: str, lazy: bool) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            edges.add(Edge(name, target, lazy))

    visit(tree, False)
    return edges


def part_of(module: str) -> str:
    """`sigma_exporter.poll.poller` -> `poll`; `sigma_exporter.cli` -> `cli`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(edges: Iterable[Edge], rules: Mapping[str, frozenset[str]] = RULES,
               lazy_rules: Mapping[str, frozenset[str]] = LAZY_RULES,
               module_rules: Mapping[str, frozenset[str]] = MODULE_RULES) -> set[tuple[str, str]]:
    """The (importer, imported) pairs the rules do not allow."""
    bad = set()
    for edge in edges:
        src, dst = part_of(edge.source), part_of(edge.target)
        if dst in ("", src):  # the package root (__version__), or its own part
            continue
        allowed = rules.get(src, frozenset()) | module_rules.get(edge.source, frozenset())
        if edge.lazy:
            allowed |= lazy_rules.get(src, frozenset())
        if dst not in allowed:
            bad.add((edge.source, edge.target))
    return bad


def cycles(edges: Iterable[Edge]) -> set[frozenset[str]]:
    """The import circles: every strongly connected set of two or more modules, or
    one that imports itself (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.add(member)
                if member == node:
                    break
            if len(members) > 1 or node in graph[node]:
                found.add(frozenset(members))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def package_edges() -> set[Edge]:
    modules = package_modules()
    return set().union(*(imports(name, tree, modules) for name, tree in modules.items()))


# --- the tests ---------------------------------------------------------------------

def test_every_part_has_a_rule() -> None:
    parts = {part_of(name) for name in package_modules()} - {""}
    assert parts - {"app"} <= set(RULES), f"no rule for {sorted(parts - set(RULES))}"


def test_imports_follow_the_layers() -> None:
    new = violations(package_edges()) - KNOWN_VIOLATIONS
    assert not new, "imports against tests/unit/test_layout.py's RULES:\n" + "\n".join(
        f"  {src} -> {dst}" for src, dst in sorted(new))


def test_no_import_circle() -> None:
    new = cycles(package_edges()) - KNOWN_CYCLES
    assert not new, "import circles:\n" + "\n".join(
        "  " + " <-> ".join(sorted(circle)) for circle in new)


def test_known_violations_are_still_there() -> None:
    """A fixed violation leaves the allow-list, so it cannot come back unseen."""
    edges = package_edges()
    fixed = (KNOWN_VIOLATIONS - violations(edges)) | (KNOWN_CYCLES - cycles(edges))
    assert not fixed, f"fixed: remove from KNOWN_VIOLATIONS / KNOWN_CYCLES: {sorted(fixed)}"


# --- the checker, on graphs made up for it -----------------------------------------

def _edges(*pairs: tuple[str, str], lazy: bool = False) -> set[Edge]:
    return {Edge(f"{PACKAGE}.{a}", f"{PACKAGE}.{b}", lazy) for a, b in pairs}


def test_checker_flags_a_forbidden_edge() -> None:
    ok = _edges(("poll.poller", "source.client"), ("web.server", "poll.poller"))
    assert violations(ok) == set()
    assert violations(ok | _edges(("poll.poller", "web.server"))) == {
        (f"{PACKAGE}.poll.poller", f"{PACKAGE}.web.server")}
    # The runtime never imports sim, not even lazily; the CLI only lazily.
    assert violations(_edges(("agent.nvml", "sim.scenario"), lazy=True))
    assert violations(_edges(("cli", "sim.demo"))) == {(f"{PACKAGE}.cli", f"{PACKAGE}.sim.demo")}
    assert violations(_edges(("cli", "sim.demo"), lazy=True)) == set()
    assert violations(_edges(("sim.demo", "app"))) == set()
    assert violations(_edges(("sim.simulator", "app")))


def test_checker_finds_a_circle() -> None:
    line = _edges(("a", "b"), ("b", "c"))
    assert cycles(line) == set()
    assert cycles(line | _edges(("c", "a"), lazy=True)) == {
        frozenset({f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.c"})}
    assert cycles(_edges(("a", "a"))) == {frozenset({f"{PACKAGE}.a"})}


@pytest.mark.parametrize(("source", "expected"), [
    ("from sigma_exporter.collect import exposition",
     {("sigma_exporter.collect.exposition", False)}),
    ("from sigma_exporter import __version__", {("sigma_exporter", False)}),
    ("from . import units", {("sigma_exporter.source.units", False)}),
    ("from .snapshot import Dump", {("sigma_exporter.source.snapshot", False)}),
    ("from ..config import TargetConfig", {("sigma_exporter.config", False)}),
    ("def f():\n    import sigma_exporter.sim.demo", {("sigma_exporter.sim.demo", True)}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sigma_exporter.poll import"
     " view", {("sigma_exporter.poll.view", False)}),
    ("import json", set()),
])
def test_checker_reads_every_import_form(source: str, expected: set[tuple[str, bool]]) -> None:
    modules = package_modules()
    found = imports("sigma_exporter.source.parse", ast.parse(source), modules)
    assert {(e.target, e.lazy) for e in found} == expected


def test_once_and_check_config_start_without_the_server_stack() -> None:
    """`once`, `check-config` and `simulate`'s start do not load the HTTP server, the
    scheduler or the app: they start in a fraction of the exporter's time and memory."""
    code = ("import sys, sigma_exporter.cli, sigma_exporter.oneshot\n"
            "print(sorted(m for m in ('aiohttp', 'apscheduler', 'prometheus_client',\n"
            "      'sigma_exporter.app', 'sigma_exporter.web.server',\n"
            "      'sigma_exporter.web.exporter') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout
