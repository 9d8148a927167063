"""core/cpus.py: the CPUs this process may use (multisocket's and the native workers' default)."""

from __future__ import annotations

import os
from pathlib import Path

from nodelocaldns.core.cpus import usable_cpus


def test_usable_cpus_follows_affinity_and_the_cgroup_quota(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    (cg / "kubepods" / "pod1").mkdir(parents=True)
    proc = tmp_path / "cgroup"
    proc.write_text("0::/kubepods/pod1\n")
    aff = len(os.sched_getaffinity(0))
    assert usable_cpus(str(cg), str(proc)) == aff  # no cpu.max anywhere: the affinity mask
    (cg / "kubepods" / "pod1" / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(str(cg), str(proc)) == aff
    (cg / "kubepods" / "cpu.max").write_text("150000 100000\n")  # an ancestor's 1.5 CPUs: 2
    assert usable_cpus(str(cg), str(proc)) == min(aff, 2)
    (cg / "kubepods" / "pod1" / "cpu.max").write_text("50000 100000\n")  # half a CPU: still 1
    assert usable_cpus(str(cg), str(proc)) == 1
    assert usable_cpus(str(cg), str(tmp_path / "absent")) == aff


def test_usable_cpus_on_this_machine_is_sane() -> None:
    n = usable_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))
