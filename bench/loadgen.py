"""Build and run ``bench/loadgen.c``, the bench's own saturation load generator, and read its output.

dnsperf costs ~8 µs of CPU per query here, so on its one CPU it stops near 110-130k QPS and a
fast server is left partly idle. The load generator is a closed loop in C (a fixed number of
queries outstanding per socket, sendmmsg/recvmmsg batches, queries encoded once) that costs a
fraction of that, so the server under test, not the client, sets the pace of the saturation rows.

It is compiled from source with gcc on first use into ``bench/build/`` (ignored by git; no
network needed) and rebuilt when the source is newer than the binary. Parsing is pure.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "loadgen.c"
BUILD_DIR = Path(__file__).resolve().parent / "build"
CFLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror")


class LoadgenError(RuntimeError):
    """The load generator could not be built or did not run to the end."""


@dataclass
class LoadgenResult:
    """What one loadgen run reported (field names follow ``DnsperfResult`` where they mean the same)."""

    sent: int = 0
    #: Valid replies, including those that arrived while draining after the time limit.
    completed: int = 0
    #: Valid replies that arrived within the time limit: what ``qps`` counts.
    completed_in_window: int = 0
    #: Queries with no valid reply within the timeout.
    lost: int = 0
    #: Replies that matched nothing outstanding (wrong ID, question, too short, QR clear).
    bad: int = 0
    send_errors: int = 0
    #: 1 if queries went out as UDP GSO runs to the end (0: -G, or the kernel refused it).
    gso: int = 0
    window_s: float = 0.0
    runtime_s: float = 0.0
    qps: float = 0.0
    avg_latency_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    command: str = ""

    @property
    def lost_fraction(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    @property
    def client_cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    @property
    def client_cpu_us_per_query(self) -> float:
        """The generator's own cost per answered query (the figure to compare with dnsperf's)."""
        return self.client_cpu_s / self.completed * 1e6 if self.completed else float("nan")


_INT_FIELDS = ("sent", "completed", "completed_in_window", "lost", "bad", "send_errors", "gso")
_FLOAT_FIELDS = ("window_s", "runtime_s", "qps", "avg_latency_s", "cpu_user_s", "cpu_sys_s")


def parse_output(text: str) -> LoadgenResult:
    """Parse loadgen's ``key value`` lines; a missing summary line is an error (a cut-off run)."""
    result = LoadgenResult()
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "rcode" and len(parts) == 3:
                result.rcodes[parts[1]] = int(parts[2])
            elif parts[0] in _INT_FIELDS and len(parts) == 2:
                setattr(result, parts[0], int(parts[1]))
            elif parts[0] in _FLOAT_FIELDS and len(parts) == 2:
                setattr(result, parts[0], float(parts[1]))
            else:
                raise ValueError(parts[0])
        except ValueError as exc:
            raise LoadgenError(f"loadgen output line {lineno}: cannot read {line!r}") from exc
        seen.add(parts[0])
    missing = [f for f in (*_INT_FIELDS, *_FLOAT_FIELDS) if f not in seen]
    if missing:
        raise LoadgenError(f"loadgen output lacks {', '.join(missing)}")
    return result


def build(build_dir: Path = BUILD_DIR) -> Path:
    """Compile loadgen.c unless an up-to-date binary exists; return its path."""
    binary = build_dir / "loadgen"
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    gcc = shutil.which("gcc")
    if gcc is None:
        raise LoadgenError("gcc not found: cannot build bench/loadgen.c")
    build_dir.mkdir(parents=True, exist_ok=True)
    # Build to a private name and rename, so two concurrent builds never run a half-written file.
    fd, tmp = tempfile.mkstemp(prefix=".loadgen-", dir=build_dir)
    os.close(fd)
    try:
        out = subprocess.run(
            [gcc, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise LoadgenError(f"gcc failed on {SOURCE.name}:\n{out.stderr.strip()}")
        os.replace(tmp, binary)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return binary


def run(
    port: int,
    query_file: Path,
    *,
    duration_s: float,
    outstanding: int = 100,
    clients: int = 4,
    timeout_s: float = 2.0,
    max_queries: int | None = None,
    gso: bool = True,
    cpu: int | None = None,
    binary: Path | None = None,
) -> LoadgenResult:
    """Run the load generator against ``127.0.0.1:port`` (the only address it sends to).

    ``clients`` sockets with ``outstanding`` queries each; stops after ``duration_s`` seconds or
    ``max_queries`` sent, whichever comes first, then waits at most ``timeout_s`` for stragglers.
    ``gso=False``: one datagram per send entry instead of UDP GSO runs (to measure what GSO saves).
    """
    exe = binary if binary is not None else build()
    argv = [str(exe), "-p", str(port), "-d", str(query_file), "-l", f"{duration_s:g}"]
    argv += ["-c", str(clients), "-q", str(outstanding), "-t", f"{timeout_s:g}"]
    if max_queries is not None:
        argv += ["-n", str(max_queries)]
    if not gso:
        argv.append("-G")
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    except subprocess.TimeoutExpired as exc:
        raise LoadgenError(f"loadgen did not stop within {exc.timeout:.0f} s") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise LoadgenError(f"loadgen failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")
    result = parse_output(proc.stdout)
    result.command = " ".join(argv)
    # Its own getrusage is the figure it reports; the parent's view must agree within a tick.
    parent_view = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if parent_view + 0.05 < result.client_cpu_s:
        raise LoadgenError(
            f"loadgen reported {result.client_cpu_s:.3f} CPU s, its parent saw {parent_view:.3f}"
        )
    return result
