"""Upstream ordering policies: random (default), round_robin, sequential."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Policy:
    def __init__(self, name: str) -> None:
        self.name = name
        self._rr = 0

    def skip(self, n: int) -> None:
        """What ``order`` of ``n`` items leaves behind, without the list (round_robin moves on)."""
        if self.name == "round_robin" and n >= 2:
            self._rr += 1

    def order(self, items: Sequence[T]) -> list[T]:
        if self.name == "sequential" or len(items) < 2:
            return list(items)
        if self.name == "round_robin":
            i = self._rr % len(items)
            self._rr += 1
            return list(items[i:]) + list(items[:i])
        out = list(items)
        random.shuffle(out)
        return out
