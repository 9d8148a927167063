"""`nodelocaldns render` in-process: exit status and output, the objects it prints, the Corefile inside them."""

from __future__ import annotations

import io
from typing import Any

import yaml

from nodelocaldns.tools import render


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = render.main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def objects(*argv: str) -> list[dict[str, Any]]:
    status, out, err = run(*argv)
    assert status == 0, err
    return [d for d in yaml.safe_load_all(out) if d is not None]


def corefile_of(objs: list[dict[str, Any]]) -> str:
    return next(o for o in objs if o["kind"] == "ConfigMap")["data"]["Corefile"]  # type: ignore[no-any-return]
