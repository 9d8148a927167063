"""How many CPUs this process may use: the default number of UDP sockets and native workers."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def usable_cpus(cgroup_root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int:
    """CPUs this process may use: its affinity mask, lowered by any cgroup v2 ``cpu.max`` quota on
    its cgroup or an ancestor (ceil(quota / period)); at least 1."""
    n = len(os.sched_getaffinity(0))
    try:
        rel = next(
            line.split(":", 2)[2].strip()
            for line in Path(proc_cgroup).read_text().splitlines()
            if line.startswith("0::")
        )
    except (OSError, StopIteration, IndexError):
        return max(n, 1)
    d = Path(cgroup_root) / rel.lstrip("/")
    root = Path(cgroup_root)
    while True:
        with contextlib.suppress(OSError, ValueError):
            quota, period = (d / "cpu.max").read_text().split()[:2]
            if quota != "max" and int(period) > 0:
                n = min(n, -(-int(quota) // int(period)))
        if d == root or root not in d.parents:
            break
        d = d.parent
    return max(n, 1)
