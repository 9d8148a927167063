"""docs/ARCHITECTURE.md matches the code: every file it names exists, every src module is named.

The tree names modules by file (``listener.py``) or, for the operator tools, by stem (``doctor*``);
the plugin folders are covered by their one line (``plugins/<name>/``: every folder has the same
shape). A path elsewhere in the text (``server/udp.py``, ``tests/plugins/cache/...``) must resolve
from the repository, from ``src/nodelocaldns/``, or from one of its packages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "src" / "nodelocaldns"
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
# A path ends in one of these; a bare "x.py" is a module name.
PATH = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.(?:py|c|h|md|pyi))\b")
WORD = re.compile(r"[A-Za-z_]\w*\*?")
TREES = ("src", "tests", "bench", "fuzz", "docs", "deploy")  # where a bare file name may live


def _resolves(path: str) -> bool:
    bases = [ROOT, ROOT / "docs", PKG, *(p for p in PKG.iterdir() if p.is_dir())]
    if "/" not in path:
        return (ROOT / path).exists() or any(True for d in TREES for _ in (ROOT / d).rglob(path))
    return any((b / path).exists() for b in bases)


def test_every_file_the_doc_names_exists() -> None:
    missing = sorted({p for p in PATH.findall(DOC) if not _resolves(p)})
    assert missing == [], missing


def test_every_src_module_is_named() -> None:
    words = set(WORD.findall(DOC))
    stems = {w for w in words if not w.endswith("*")}
    globs = [w[:-1] for w in words if w.endswith("*")]
    unnamed = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "plugins" and len(rel.parts) > 2 or path.name in ("__init__.py", "__main__.py"):
            continue  # a plugin folder's files: the plugins/<name>/ line and "How to add a plugin"
        named = path.name in DOC or path.stem in stems or any(path.stem.startswith(g) for g in globs)
        if not named:
            unnamed.append(str(rel))
    assert unnamed == [], unnamed


def test_the_checks_can_fail() -> None:
    assert not _resolves("tests/test_fastpath_differential.py")  # the path this doc once gave
    assert _resolves("tests/plugins/cache/test_fastpath_differential.py") and _resolves("udp.py")
    assert _resolves("server/udp.py") and _resolves("cache/fastpath.py") and not _resolves("server/nope.py")
    assert os.path.exists(PKG / "plugins" / "whoami" / "setup.py")


def test_tests_mirror_src() -> None:
    """The "Tests" section: every package of src/ and every plugin folder has its tests/ folder."""
    tests = ROOT / "tests"
    want = [p.relative_to(PKG) for p in PKG.iterdir() if (p / "__init__.py").exists() and p.name != "plugins"]
    want += [p.relative_to(PKG) for p in (PKG / "plugins").iterdir() if (p / "__init__.py").exists()]
    missing = sorted(str(w) for w in want if not any((tests / w).glob("test_*.py")))
    assert missing == [], missing
    assert sorted(p.name for p in tests.glob("test_*.py")) == []  # nothing loose at the top
