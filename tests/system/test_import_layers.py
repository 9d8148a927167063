"""The import graph of src/: no cycle, and no edge from a lower layer to a higher one.

Every ``import``/``from`` statement counts, deferred (function-level), TYPE_CHECKING and relative
ones included, and so does ``importlib.import_module`` with a literal target: a circle hidden in a
function is still a circle. The layers are one total order (``LAYERS``), the one the architecture
doc's tree is drawn in.
"""

from __future__ import annotations

import ast
import os
import re
import textwrap
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "src")
PKG = "nodelocaldns"
# The layers, lowest first (docs/ARCHITECTURE.md draws its tree in this order). A module imports only
# from its own layer and the ones before it, so every edge of the Done-when sentence ("plugins never
# import server/; metrics/ and node/ never import cli") is one case of the order.
LAYERS = ("errors", "dns", "corefile", "core", "metrics", "plugins", "native", "server", "node", "tools",
          "cli", "__main__")  # fmt: skip
# ``plugins.load(*extra)`` imports the modules a caller names (a plugin kept outside the package):
# the one dynamic import whose target is not in the source.
DYNAMIC_BY_NAME = {("nodelocaldns.plugins", "module")}
MAX_LINES = 450
TOO_LONG_WITH_REASON: set[str] = set()  # none: the inlined UDP loop fits in server/udp.py
KNOWN_CYCLES: list[list[str]] = []
KNOWN_LONG: set[str] = set()


def layer(name: str) -> int:
    """The rank of a module: the package root (``__version__``, the compiled ``_native``) is below all."""
    parts = name.split(".")
    return -1 if len(parts) == 1 else LAYERS.index(parts[1])


def modules() -> dict[str, str]:
    out = {}
    for root, _dirs, files in os.walk(os.path.join(SRC, PKG)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: str, known: set[str]) -> set[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif (dyn := dynamic_target(node, name)) is not None:
            targets = [dyn]
        else:
            continue
        for t in targets:
            if t.startswith("<unresolved"):
                found.add(t)
                continue
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def dynamic_target(node: ast.AST, name: str) -> str | None:
    """``importlib.import_module("nodelocaldns.x...")`` (or an f-string starting so, or with
    ``{__name__}``): the literal part of its target. None if ``node`` is no such call."""
    if not (
        isinstance(node, ast.Call) and node.args and _callee(node.func) in ("import_module", "__import__")
    ):
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr):
        out = ""
        for v in arg.values:
            if isinstance(v, ast.Constant):
                out += str(v.value)
            elif (
                isinstance(v, ast.FormattedValue)
                and isinstance(v.value, ast.Name)
                and v.value.id == "__name__"
            ):
                out += name
            else:
                break
        return out.rstrip(".")
    if isinstance(arg, ast.Name) and (name, arg.id) in DYNAMIC_BY_NAME:
        return None
    return f"<unresolved {ast.unparse(arg)}>"


def _callee(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def _is_parent_package(a: str, b: str) -> bool:
    """``a/__init__`` importing its own ``a.b`` is how packages load, not a cycle. (``a.b`` importing
    a name from ``a/__init__`` stays an edge: with the first, that is a real circle.)"""
    return b.startswith(a + ".")


def test_no_import_cycles() -> None:
    g = {n: {m for m in deps if not _is_parent_package(n, m)} for n, deps in graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert sorted(cycles) == sorted(KNOWN_CYCLES)


def test_every_module_has_a_layer() -> None:
    assert sorted({n.split(".")[1] for n in modules() if "." in n} - set(LAYERS)) == []


@pytest.mark.parametrize("name", LAYERS)
def test_no_import_from_a_higher_layer(name: str) -> None:
    bad = sorted(
        f"{src} -> {dst}"
        for src, deps in graph().items()
        if src.split(".")[1:2] == [name]
        for dst in deps
        if dst.startswith("<unresolved") or layer(dst) > layer(src)
    )
    assert bad == []


@pytest.mark.parametrize(
    ("low", "high"), [("core", "server"), ("core", "plugins"), ("plugins", "server"), ("metrics", "cli"),
                      ("node", "cli"), ("metrics", "server"), ("native", "server")],
)  # fmt: skip
def test_the_order_forbids_what_the_issue_names(low: str, high: str) -> None:
    assert LAYERS.index(low) < LAYERS.index(high)


def test_the_architecture_tree_lists_the_layers_in_this_order() -> None:
    """The tree in docs/ARCHITECTURE.md says "lower layers first": it must agree with LAYERS."""
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md"), encoding="utf-8") as f:
        doc = f.read()
    tree = doc[doc.index("src/nodelocaldns/ ") :].split("```")[0]
    drawn = [m.group(1) for m in re.finditer(r"^  ([A-Za-z_]+)(?:/|\.py)", tree, re.M)]
    assert drawn == [n for n in LAYERS if n != "__main__"]


def test_plugins_never_import_another_plugins_private_names() -> None:
    """Any form counts: ``from``, plain ``import``, relative, deferred, ``import_module``."""
    bad = sorted(
        f"{src} imports {dst}"
        for src, deps in graph().items()
        if src.startswith(f"{PKG}.plugins.")
        for dst in deps
        if dst.startswith(f"{PKG}.plugins.") and dst.split(".")[:3] != src.split(".")[:3]
    )
    assert bad == []


# The server runs the cache's fast path (plugins/cache/fastpath.py and the stores it reads), so it may
# import the cache; every other plugin reaches it only through the registry (core/plugin.py).
FAST_PATH_OWNER = f"{PKG}.plugins.cache"
REGISTRY_USERS = ("server", "metrics", "core")


@pytest.mark.parametrize("name", REGISTRY_USERS)
def test_blocks_are_built_from_the_registry_alone(name: str) -> None:
    """No per-directive code: no import of a plugin's module but the cache's, no directive's name."""
    folders = {f for f in os.listdir(os.path.join(SRC, PKG, "plugins")) if not f.startswith(("_", "."))}
    bad = sorted(
        f"{src} imports {dst}"
        for src, deps in graph().items()
        if src.split(".")[1:2] == [name]
        for dst in deps
        if dst.startswith(f"{PKG}.plugins.") and not dst.startswith(FAST_PATH_OWNER)
    )
    for mod, path in modules().items():
        if mod.split(".")[1:2] != [name] or mod == f"{PKG}.core.order":  # order.py: plugin.cfg as data
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        slots = {id(c) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in n.targets)
                 for c in ast.walk(n.value)}  # fmt: skip
        bad += [
            f"{mod}:{n.lineno} names {n.value!r}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and n.value in folders - {"cache"} and id(n) not in slots
        ]
    assert bad == []


# The shared value types, one low module each: a second definition of one of these is a copy that
# will drift (pprof's own SplitHostPort already had Go's wording wrong).
HOMES = {
    "core.hostport": ("split_hostport", "split_host_port", "parse_port", "listen_address", "check_addr"),
    "core.zones": ("in_zones", "zone_match", "is_subdomain"),
    "core.duration": ("parse_duration", "format_duration", "parse_duration_ns", "duration_parts"),
    "core.qtypes": ("qtype_text", "qtype_label", "rcode_label"),
    "core.ratelimit": ("RateLimiter",),
    "core.timeouts": ("for_listener", "TimeoutsConfig", "ServerTimeouts"),
}


def test_each_shared_value_type_is_defined_once() -> None:
    home = {n: f"{PKG}.{mod}" for mod, names in HOMES.items() for n in names}
    bad = []
    for mod, path in modules().items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for n in ast.walk(tree):
            if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name in home and home[n.name] != mod:
                bad.append(f"{mod}:{n.lineno} defines {n.name} (the one is in {home[n.name]})")
    assert bad == []


NODE_MAX_LINES = 400  # issue 7: the node agent split so that no node/ file is over ~400 lines


def test_no_node_file_over_its_budget() -> None:
    long = []
    for mod, path in modules().items():
        if mod.startswith(f"{PKG}.node."):
            with open(path, encoding="utf-8") as f:
                n = sum(1 for _ in f)
            if n > NODE_MAX_LINES:
                long.append(f"{mod}: {n} lines")
    assert long == []


def test_no_file_over_the_size_budget() -> None:
    long = []
    for path in modules().values():
        rel = os.path.relpath(path, SRC)
        with open(path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES and rel not in TOO_LONG_WITH_REASON | KNOWN_LONG:
            long.append(f"{rel}: {n} lines")
    assert long == []


def test_the_checker_sees_a_cycle() -> None:
    """The graph builder resolves both edges of a real circle (so the tests above can fail)."""
    g = graph()
    assert "nodelocaldns.core.plugin" in g["nodelocaldns.server.config"]
    assert "nodelocaldns.plugins.cache.fastpath" in g["nodelocaldns.server.listener"]
    # cli runs its tools through importlib.import_module(f"nodelocaldns.tools.{name}")
    assert "nodelocaldns.tools" in g["nodelocaldns.cli"]


def test_the_checker_sees_every_form_of_import(tmp_path: Path) -> None:
    """Deferred (function-level), TYPE_CHECKING, relative, plain and dynamic imports are all edges."""
    known = {"nodelocaldns.plugins", "nodelocaldns.plugins.a", "nodelocaldns.plugins.a.x",
             "nodelocaldns.plugins.b.y", "nodelocaldns.server.z", "nodelocaldns.cli", "nodelocaldns.node.w",
             "nodelocaldns.tools"}  # fmt: skip
    path = tmp_path / "x.py"
    path.write_text(
        textwrap.dedent("""
        import importlib
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from nodelocaldns.cli import main
        def f(mod):
            import nodelocaldns.server.z
            from ..b import y
            importlib.import_module(f"nodelocaldns.tools.{mod}")
            importlib.import_module(mod)
        class C:
            def g(self):
                from nodelocaldns.node import w
    """)
    )
    found = imports("nodelocaldns.plugins.a.x", str(path), known)
    assert found == {"nodelocaldns.cli", "nodelocaldns.server.z", "nodelocaldns.plugins.b.y",
                     "nodelocaldns.tools", "nodelocaldns.node.w", "<unresolved mod>"}  # fmt: skip
