"""server/settings.py: the server's tunables live in ServerConfig, the bounds the UDP readers share once.

A literal copied into a second module drifts: the receive buffer (4097) was written three times and
the new-names bound (256) twice, each copy saying "the same as" the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from nodelocaldns.server import native_udp, settings, shared_udp, udp
from nodelocaldns.server.settings import DEFAULT, ServerConfig

SERVER = Path(settings.__file__).parent


def _constants(path: Path) -> dict[str, object]:
    """Module-level ``NAME = <number>`` bindings."""
    out: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            v = node.value.value
            if isinstance(v, int | float) and not isinstance(v, bool):
                out.update({t.id: v for t in node.targets if isinstance(t, ast.Name)})
    return out


def test_no_server_module_repeats_another_ones_constant() -> None:
    seen: dict[tuple[str, object], str] = {}
    repeated = []
    for path in sorted(SERVER.glob("*.py")):
        for name, value in _constants(path).items():
            key = (name.lstrip("_"), value)
            if key in seen:
                repeated.append(f"{path.name}: {name} = {value!r} (also in {seen[key]})")
            seen.setdefault(key, path.name)
    assert repeated == []


def test_the_udp_readers_take_the_shared_bounds_and_the_config() -> None:
    for mod in (udp, native_udp, shared_udp):
        assert mod._UDP_BUF is settings.UDP_READ
    assert udp._DRAIN_MAX is native_udp._DRAIN_MAX is settings.DRAIN_READS
    assert not hasattr(udp, "WAITING") and not hasattr(native_udp, "WAITING")
    assert ServerConfig(udp_waiting=3).udp_waiting == 3 and DEFAULT.udp_waiting == 256
