"""Bad Corefiles with the file:line each must name, and a serve run that is expected to fail on one."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from support.ports import free_port
from support.server import REPO


def run_corefile(text: str) -> tuple[subprocess.CompletedProcess[str], str]:
    with tempfile.NamedTemporaryFile("w", suffix=".Corefile", delete=False) as f:
        f.write(text.replace("{PORT}", str(free_port())))
    try:
        out = subprocess.run([sys.executable, "-m", "nodelocaldns", "serve", "--corefile", f.name],
                             capture_output=True, text=True, timeout=20, cwd=REPO)  # fmt: skip
    finally:
        os.unlink(f.name)
    return out, f.name


BAD = {
    "unknown directive": (".:{PORT} {\n    bind 127.0.0.1\n    frobnicate on\n}\n", 3, "frobnicate"),
    "bad cache TTL": (".:{PORT} {\n    bind 127.0.0.1\n    errors\n    cache -5\n}\n", 4, "cache"),
    "bad cache property": (".:{PORT} {\n    cache 30 {\n        success many\n    }\n}\n", 3, "success"),
    "forward without upstream": (".:{PORT} {\n    bind 127.0.0.1\n    forward .\n}\n", 3, "forward"),
    "forward bad upstream": (".:{PORT} {\n    forward . not-an-ip\n}\n", 2, "forward"),
    "forward bad policy": (
        ".:{PORT} {\n    forward . 127.0.0.1 {\n        policy fastest\n    }\n}\n",
        3,
        "policy",
    ),
    "cache twice": (".:{PORT} {\n    cache\n    cache 30\n}\n", 3, "cache"),
    "reload too often": (".:{PORT} {\n    reload 1s\n}\n", 2, "reload"),
    "bind unknown interface": (".:{PORT} {\n    bind no-such-if0\n}\n", 2, "bind"),
    "unbalanced brace": (".:{PORT} {\n    cache 30 {\n        success 10\n}\n", 0, ""),
    "zone twice": (
        ".:{PORT} {\n    bind 127.0.0.1\n}\n\n.:{PORT} {\n    bind 127.0.0.1\n}\n",
        0,
        "already defined",
    ),
}
