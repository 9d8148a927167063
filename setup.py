"""Build the optional C extension ``nodelocaldns._native`` (everything else is in pyproject.toml).

The extension is the compiled hot path (src/nodelocaldns/native/). Without a C compiler the
package still installs and runs on the pure-Python path; NODELOCALDNS_NATIVE_REQUIRED=1 (set by
the Makefile's native/install/test/bench targets and the image build) turns a failed build into an
error so CI never silently loses it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SRC = Path("src/nodelocaldns/native")
SOURCES = [
    "siphash.c",
    "index.c",
    "answer.c",
    "lb.c",
    "stale.c",
    "nx.c",
    "udp.c",
    "exchange.c",
    "module.c",
    "worker_py.c",
    "nx_py.c",
]


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any compiler failure means "pure Python"
            self._skip(e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            self._skip(e)

    def _skip(self, e: Exception) -> None:
        if os.environ.get("NODELOCALDNS_NATIVE_REQUIRED") == "1":
            raise e
        print(f"warning: nodelocaldns._native not built ({e}); using the pure-Python path", file=sys.stderr)


setup(
    ext_modules=[
        Extension(
            "nodelocaldns._native",
            sources=[str(SRC / s) for s in SOURCES],
            depends=[str(SRC / h) for h in ("nld.h", "nx.h", "udp.h", "pymod.h")],
            extra_compile_args=[
                "-std=gnu11",
                "-O2",
                "-Wall",
                "-Wextra",
                "-Werror=implicit-function-declaration",
                "-fno-strict-aliasing",
                "-D_GNU_SOURCE",
            ],  # fmt: skip
            extra_link_args=["-pthread"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
