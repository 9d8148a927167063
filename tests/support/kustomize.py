"""deploy/ through kustomize: the kubectls found here, the overlays, `render` in-process, YAML loading."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodelocaldns.tools import render

REPO = Path(__file__).resolve().parents[2]


DEPLOY = REPO / "deploy"


MODES = ("iptables", "ipvs", "cilium")


def _kubectls() -> list[str]:
    candidates = [shutil.which("kubectl") or ""]
    candidates += os.environ.get("NODELOCALDNS_TEST_KUBECTL", "").split(os.pathsep)
    found: list[str] = []
    for c in candidates:
        if c and os.access(c, os.X_OK) and os.path.realpath(c) not in map(os.path.realpath, found):
            found.append(c)
    return found


@cache
def _kustomize_version(kubectl: str) -> str:
    out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True)
    info = json.loads(out.stdout)
    # kubectl < 1.24 does not report its kustomize; 1.14-1.20 embed v2.0.3.
    return str(info.get("kustomizeVersion") or f"v2.0.3 (kubectl {info['clientVersion']['gitVersion']})")


KUBECTLS = _kubectls()


needs_kubectl = pytest.mark.skipif(
    not KUBECTLS, reason="kubectl not installed (Debian package kubernetes-client provides it)"
)


@cache
def kustomize(kubectl: str, directory: str) -> str:
    proc = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (
        f"{kubectl} kustomize {directory} ({_kustomize_version(kubectl)}):\n{proc.stderr}"
    )
    return proc.stdout


def load(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def run_render(*argv: str) -> list[dict[str, Any]]:
    out, err = io.StringIO(), io.StringIO()
    status = render.main(list(argv), out=out, err=err)
    assert status == 0, err.getvalue()
    return load(out.getvalue())


def overlay(mode: str) -> str:
    return str(DEPLOY / "overlays" / mode)
