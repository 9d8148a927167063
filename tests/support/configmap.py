"""A ConfigMap volume as kubelet maintains it, for tests of the directory watchers."""

from __future__ import annotations

import os
from pathlib import Path


class ConfigMapDir:
    """A directory updated the way kubelet updates a ConfigMap volume (..data symlink swap)."""

    def __init__(self, path: Path, data: dict[str, str]) -> None:
        self.path = path
        self.generation = 0
        path.mkdir(parents=True)
        self.write(data)

    def write(self, data: dict[str, str]) -> None:
        self.generation += 1
        payload = self.path / f"..2025_01_01_00_00_00.{self.generation}"
        payload.mkdir()
        for key, value in data.items():
            (payload / key).write_text(value)
        os.symlink(payload.name, self.path / "..data_tmp")
        os.replace(self.path / "..data_tmp", self.path / "..data")
        for key in data:
            if not (self.path / key).is_symlink():
                os.symlink(f"..data/{key}", self.path / key)
