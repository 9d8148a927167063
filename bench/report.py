"""Turn bench results into latest.md, latest.json and latest.png, and judge the targets."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from bench import saturation

if TYPE_CHECKING:
    from bench.model import ServerResult, Settings


@dataclass(frozen=True)
class Target:
    """One of issue 9's "Done when" targets: ``subject``'s ``metric`` against ``base``'s (a ratio)
    or against ``limit`` itself when ``base`` is None (an absolute value)."""

    label: str
    metric: str  # a HitRound field (median over rounds) or a ServerResult field
    limit: float
    higher_better: bool
    subject: str = "nodelocaldns"
    base: str | None = "unbound"
    unit: str = ""
    full_run_only: bool = False  # a --quick run does not measure it as defined (partial cache fill)
    #: A saturation QPS: ``metric`` is ignored, the figure comes from the load generator that drove
    #: both servers closest to 100% busy (bench/saturation.py).
    saturation: bool = False


# The targets nodelocaldns is held to (issue 9, "Done when"), relative to unbound (1 thread), which
# does the same job in C, or to the 1-worker figure.
TARGETS: tuple[Target, ...] = (
    Target("hit CPU µs/query at 50k QPS <= 1.0x unbound", "fixed_cpu_us", 1.0, higher_better=False),
    Target("hit saturation QPS, 1 worker >= 1.2x unbound", "sat_qps", 1.2, higher_better=True,
           unit=" QPS", saturation=True),
    Target("hit saturation QPS, 2 workers >= 1.8x 1 worker", "sat_qps", 1.8, higher_better=True,
           subject="nodelocaldns-2w", base="nodelocaldns", unit=" QPS", saturation=True),
    Target("miss QPS >= 0.6x unbound", "miss_qps", 0.6, higher_better=True, unit=" QPS"),
    Target("p99 latency at 50k QPS <= 1.0x unbound", "p99_latency_us", 1.0, higher_better=False, unit=" µs"),
    Target("RSS with caches full <= 64 MiB", "rss_mib", 64.0, higher_better=False, base=None, unit=" MiB",
           full_run_only=True),
)  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    name: str
    result: str  # PASS, FAIL or SKIP
    detail: str


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(started: float, server_cpu: int | None, load_cpu: int | None) -> dict[str, str]:
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dnsperf_version = next(
        (line for line in _run_text(["dnsperf", "-h"]).splitlines() if line.startswith("Version")), "unknown"
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "cpu": f"{cpu_model} ({len(_online_cpus())} CPUs online)",
        "pinning": (
            f"server CPU {server_cpu}; dnsperf, upstream and harness CPU {load_cpu}"
            if server_cpu is not None
            else "none (fewer than 2 CPUs)"
        ),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "uvloop": _version("uvloop"),
        "nodelocaldns": _version("nodelocaldns"),
        "git": _run_text(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"]).strip()
        or "unknown",
        "unbound": _first_line(["/usr/sbin/unbound", "-V"]),
        "dnsmasq": _first_line(["/usr/sbin/dnsmasq", "--version"]),
        "dnsperf": dnsperf_version.replace("Version ", ""),
    }


def _run_text(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout + out.stderr


def _online_cpus() -> list[str]:
    try:
        with open("/sys/devices/system/cpu/online") as f:
            spec = f.read().strip()
    except OSError:
        return []
    cpus: list[str] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus += [str(c) for c in range(int(lo), int(hi or lo) + 1)]
    return cpus


def _by_name(results: list[ServerResult]) -> dict[str, ServerResult]:
    return {r.name: r for r in results if r.skipped is None}


def _capacity(cpu_us: float | None) -> float | None:
    # Queries one fully busy CPU would answer: robust when dnsperf or other work set the pace.
    return 1e6 / cpu_us if cpu_us else None


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100


def _med(result: ServerResult | None, attr: str) -> float | None:
    return result.median(attr) if result is not None else None


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0 or math.isnan(value) or math.isnan(base):
        return None
    return value / base


def _value(result: ServerResult | None, metric: str) -> float | None:
    """A target's figure: the median over rounds for per-round metrics, else the run's one value."""
    if result is None:
        return None
    if result.rounds and hasattr(result.rounds[0], metric):
        return result.median(metric)
    value = getattr(result, metric, None)
    return None if value is None else float(value)


def _judge_saturation(t: Target, got: dict[str, ServerResult]) -> Verdict:
    subject, base = got.get(t.subject), got.get(t.base or "")
    choice = saturation.choose([subject, base]) if subject is not None and base is not None else None
    if choice is None or subject is None or base is None:
        return Verdict(t.label, "SKIP", f"needs {t.subject} and {t.base} saturation results")
    gen = choice.generator
    value, base_value = subject.median(gen.qps), base.median(gen.qps)
    ratio = _ratio(value, base_value)
    if ratio is None or value is None or base_value is None:
        return Verdict(t.label, "SKIP", f"needs {t.subject} and {t.base} saturation results")
    ok = ratio >= t.limit if t.higher_better else ratio <= t.limit
    busy = "/".join(f"{choice.busy[r.name]:.0%}" for r in (subject, base))
    others = []
    for other in saturation.GENERATORS:
        other_ratio = _ratio(subject.median(other.qps), base.median(other.qps))
        if other is not gen and other_ratio is not None:
            shares = [saturation.busy_share(r, other) for r in (subject, base)]
            other_busy = "/".join(_fmt(_pct(b), ".0f", "%") for b in shares)
            others.append(f"{other.name}: {other_ratio:.2f}x at {other_busy}")
    detail = (
        f"{ratio:.2f}x ({value:,.1f} vs {base_value:,.1f}{t.unit}) with {gen.name}, servers {busy} busy"
        + (f"; {'; '.join(others)}" if others else "")
    )
    return Verdict(t.label, "PASS" if ok else "FAIL", detail)


def _judge(t: Target, got: dict[str, ServerResult], quick: bool) -> Verdict:
    if t.saturation:
        return _judge_saturation(t, got)
    subject = got.get(t.subject)
    value = _value(subject, t.metric)
    if t.base is None:
        if value is None or math.isnan(value):
            return Verdict(t.label, "SKIP", f"needs a {t.subject} {t.metric} result")
        if quick and t.full_run_only:
            return Verdict(
                t.label, "SKIP", f"{value:,.1f}{t.unit} in a --quick run (not measured as defined)"
            )
        ok = value >= t.limit if t.higher_better else value <= t.limit
        return Verdict(t.label, "PASS" if ok else "FAIL", f"{value:,.1f}{t.unit}")
    base = _value(got.get(t.base), t.metric)
    ratio = _ratio(value, base)
    if ratio is None or value is None or base is None:
        return Verdict(t.label, "SKIP", f"needs {t.subject} and {t.base} {t.metric} results")
    ok = ratio >= t.limit if t.higher_better else ratio <= t.limit
    return Verdict(t.label, "PASS" if ok else "FAIL", f"{ratio:.2f}x ({value:,.1f} vs {base:,.1f}{t.unit})")


def targets(results: list[ServerResult], quick: bool, table: tuple[Target, ...] = TARGETS) -> list[Verdict]:
    got = _by_name(results)
    return [_judge(t, got, quick) for t in table]


def _fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:{spec}}{suffix}"


def markdown(results: list[ServerResult], verdicts: list[Verdict], env: dict[str, str], s: Settings) -> str:
    got = _by_name(results)
    ub, dm = got.get("unbound"), got.get("dnsmasq")
    lines = [
        "# nodelocaldns bench",
        "",
        f"{env['date']} · {'quick run' if s.quick else 'full run'} · "
        f"median of {s.rounds} round(s) for (a)-(c) · {s.duration_s:g} s per dnsperf run",
        "",
        "## Cache hits (a)-(c)",
        "",
        "| server | hit QPS at saturation (dnsperf) | ×unbound | ×dnsmasq | CPU µs/query at "
        f"{s.fixed_qps // 1000}k QPS | ×unbound | ×dnsmasq | achieved QPS (sustained?) | mean latency µs | "
        "p99 latency µs | CPU µs/query at saturation | server CPU busy at saturation (of its CPUs) | "
        "capacity QPS per CPU-second |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.skipped is not None:
            lines.append(f"| {r.name} | skipped: {r.skipped} |" + " |" * 11)
            continue
        sat, cpu = r.median("sat_qps"), r.median("fixed_cpu_us")
        sustained = {True: "yes", False: "**no**", None: "–"}[r.sustained]
        lines.append(
            f"| {r.name} | {_fmt(sat)} | {_fmt(_ratio(sat, _med(ub, 'sat_qps')), '.2f')} | "
            f"{_fmt(_ratio(sat, _med(dm, 'sat_qps')), '.2f')} | {_fmt(cpu, '.2f')} | "
            f"{_fmt(_ratio(cpu, _med(ub, 'fixed_cpu_us')), '.2f')} | "
            f"{_fmt(_ratio(cpu, _med(dm, 'fixed_cpu_us')), '.2f')} | "
            f"{_fmt(r.median('fixed_qps'))} ({sustained}) | {_fmt(r.median('mean_latency_us'))} | "
            f"{_fmt(r.median('p99_latency_us'))} | {_fmt(r.median('sat_cpu_us'), '.2f')} | "
            f"{_fmt(_pct(_share(r, 'sat_busy')), '.0f', '%')} | {_fmt(_capacity(r.median('sat_cpu_us')))} |"
        )
    lines += _saturation_table(results)
    lines += [
        "",
        "## Cache misses (d) and memory (e)",
        "",
        "| server | miss QPS | ×unbound | miss mean latency µs | miss lost | RSS idle MiB | "
        "RSS after fill MiB | fill answered | cache entries (/metrics) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.skipped is not None or r.name == "py-echo":
            continue
        entries = _fmt(sum(r.cache_entries.values())) if r.cache_entries else "–"
        miss_ratio = _ratio(r.miss_qps, ub.miss_qps if ub else None)
        lines.append(
            f"| {r.name} | {_fmt(r.miss_qps)} | {_fmt(miss_ratio, '.2f')} | "
            f"{_fmt(r.miss_mean_latency_us)} | "
            f"{_fmt(None if r.miss_lost is None else r.miss_lost * 100, '.2f', '%')} | "
            f"{_fmt(r.rss_idle_mib, '.1f')} | {_fmt(r.rss_mib, '.1f')} | "
            f"{_fmt(float(r.fill_completed) if r.fill_completed is not None else None)} | {entries} |"
        )
    lines += ["", "## Targets (nodelocaldns)", "", "| target | result | value |", "|---|---|---|"]
    lines += [f"| {v.name} | {v.result} | {v.detail} |" for v in verdicts]
    detail = [
        (r.name, key, value)
        for r in results
        if r.cache_entries
        for key, value in sorted(r.cache_entries.items())
    ]
    if detail:
        lines += [
            "",
            "### coredns_cache_entries after the fill",
            "",
            "| server | block and type | entries |",
            "|---|---|---:|",
        ]
        lines += [f"| {name} | {key} | {value:,.0f} |" for name, key, value in detail]
    sanity = [(r.name, p) for r in results for p in r.sanity]
    if sanity:
        lines += ["", "### Answer differences vs the upstream (sanity check)", ""]
        lines += [f"- {name}: {p}" for name, p in sanity]
    lines += [
        "",
        "## Per round",
        "",
        "| server | round | sat QPS dnsperf | sat lost | server busy | sat QPS loadgen | lost | server busy | "
        "fixed QPS | fixed lost | CPU µs/q | mean µs | p99 µs | foreign load on server CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for i, rnd in enumerate(r.rounds, 1):
            lines.append(
                f"| {r.name} | {i} | {_fmt(rnd.sat_qps)} | {rnd.sat_lost * 100:.2f}% | "
                f"{rnd.sat_busy / r.cpus * 100:.0f}% | {_fmt(rnd.lg_qps)} | {_fmt(_pct(rnd.lg_lost), '.2f', '%')} | "
                f"{_fmt(_pct(rnd.lg_busy / r.cpus), '.0f', '%')} | "
                f"{_fmt(rnd.fixed_qps)} | {rnd.fixed_lost * 100:.2f}% | "
                f"{rnd.fixed_cpu_us:.2f} | {_fmt(rnd.mean_latency_us)} | {_fmt(rnd.p99_latency_us)} | "
                f"{_fmt(_pct(rnd.foreign), '.0f', '%')} |"
            )
    lines += ["", "## Environment", ""]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines += [
        "",
        "## Method",
        "",
        f"- (a) {s.hit_names} names under `{_zone('HIT_ZONE')}`, warmed by one pass, then dnsperf with "
        f"{s.sat_clients} sockets × {s.sat_outstanding} queries outstanding and no rate limit. When the "
        "server CPU is well below 100% busy, dnsperf (one CPU) set the pace, not the server. "
        f"The same names again with the bench's load generator (`bench/loadgen.c`: closed loop, "
        f"{s.lg_clients} sockets × {s.lg_outstanding} outstanding, sendmmsg/recvmmsg batches and UDP GSO runs "
        "on send, a reply counts only if its ID is outstanding and its question matches; "
        'its own CPU µs/query is the "client" column). The saturation targets use the generator '
        "that drove both servers of the comparison closest to 100% busy (the worse of the two decides); "
        "both figures are in the table above.",
        "- nodelocaldns-2w: two workers on CPUs 0 and 1, but CPU 1 also runs the load generator (and the "
        "upstream and this harness), so its second worker gets what the generator leaves. Its saturation QPS "
        "is therefore a lower bound that shows both workers serve; it cannot show 2-CPU scaling, which needs "
        "the generator on a third CPU. The busy share is of both CPUs.",
        f"- (b)+(c) the same names warmed again, then dnsperf "
        f"`-Q {s.fixed_qps} -q {s.fixed_outstanding} -v`; CPU is the server's utime+stime from "
        "/proc/PID/stat over the run divided by completed queries; "
        "latency percentiles come from dnsperf's per-query `-v` lines (timeouts excluded, counted as lost). "
        "dnsperf's send and receive threads share one CPU, so absolute latencies include its own scheduling; "
        "compare servers with each other and with py-echo, not with a network RTT.",
        "- foreign load: non-idle time of the server's CPU not spent by the server (other processes, steal). "
        "Before each round the harness waits (up to 20 s) for that CPU to be quiet; a round with more than "
        "15% foreign load is measured again, at most twice, and the cleanest attempt is kept. "
        "Capacity QPS = 10⁶ / (CPU µs/query at saturation) is the figure least affected by a busy machine.",
        f"- (d) unique names under the upstream's redirect zone `{_zone('MISS_ZONE')}`, "
        f"{s.miss_outstanding} outstanding; each round sends names nobody asked yet, the server order "
        "rotated; the median round is shown.",
        f"- (e) {s.fill_per_kind} unique positive and {s.fill_per_kind} unique negative (NXDOMAIN) names "
        f"for each of the four blocks at {s.fill_qps} QPS, then VmRSS from /proc/PID/status.",
        "- nodelocaldns runs the NodeLocal-addon-shaped Corefile (cluster.local, in-addr.arpa, ip6.arpa, .) "
        "with force_tcp in the cluster and reverse blocks; unbound forwards those zones with "
        "forward-tcp-upstream; dnsmasq forwards everything over UDP (it cannot force TCP).",
        "- py-echo is a bare uvloop UDP loop answering every query with one fixed A record: the floor for "
        "any Python server on this machine.",
        "",
    ]
    return "\n".join(lines)


def _share(r: ServerResult, attr: str) -> float | None:
    value = r.median(attr)
    return None if value is None else value / max(r.cpus, 1)


def _saturation_table(results: list[ServerResult]) -> list[str]:
    """(a) by load generator: each one's QPS, how busy it kept the server, and its own cost."""
    got = _by_name(results)
    lines = [
        "",
        "### Saturation (a) by load generator",
        "",
        "| server | CPUs | dnsperf QPS | server busy | dnsperf CPU µs/q (client) | loadgen QPS | ×unbound | "
        "server busy | server CPU µs/q | loadgen CPU µs/q (client) | loadgen lost | bad replies |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ub_lg = _med(got.get("unbound"), "lg_qps")
    for r in results:
        if r.skipped is not None:
            continue
        lg = r.median("lg_qps")
        lines.append(
            f"| {r.name} | {r.cpus} | {_fmt(r.median('sat_qps'))} | {_fmt(_pct(_share(r, 'sat_busy')), '.0f', '%')} | "
            f"{_fmt(r.median('sat_client_us'), '.2f')} | {_fmt(lg)} | {_fmt(_ratio(lg, ub_lg), '.2f')} | "
            f"{_fmt(_pct(_share(r, 'lg_busy')), '.0f', '%')} | {_fmt(r.median('lg_cpu_us'), '.2f')} | "
            f"{_fmt(r.median('lg_client_us'), '.2f')} | {_fmt(_pct(r.median('lg_lost')), '.2f', '%')} | "
            f"{_fmt(r.median('lg_bad'))} |"
        )
    return lines


def _zone(attr: str) -> str:
    from bench import servers

    return str(getattr(servers, attr))


def write_json(path: Path, results: list[ServerResult], verdicts: list[Verdict], env: dict[str, str]) -> None:
    data = {
        "environment": env,
        "results": [asdict(r) for r in results],
        "targets": [asdict(v) for v in verdicts],
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def chart(results: list[ServerResult], path: Path) -> None:
    """Bar chart: hit QPS at saturation and CPU µs/query at the fixed load, per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in results if r.skipped is None and r.rounds]
    names = [r.name for r in ran]
    colours = [
        "#1f77b4" if n.startswith("nodelocaldns") else "#999999" if n == "py-echo" else "#ff7f0e"
        for n in names
    ]
    fig, (ax_qps, ax_cpu) = plt.subplots(1, 2, figsize=(11, 4.5))
    # Saturation: dnsperf (hatched) and loadgen side by side per server.
    xs = list(range(len(ran)))
    for offset, attr, hatch in ((-0.2, "sat_qps", "//"), (0.2, "lg_qps", "")):
        values = [r.median(attr) or 0.0 for r in ran]
        bars = ax_qps.bar([x + offset for x in xs], values, width=0.4, color=colours, hatch=hatch)
        ax_qps.bar_label(bars, labels=[f"{v / 1000:.0f}k" for v in values], padding=2, fontsize=7)
    ax_qps.set_xticks(xs, names)
    ax_qps.set_title("cache-hit QPS at saturation (hatched: dnsperf, plain: loadgen)")
    values = [r.median("fixed_cpu_us") or 0.0 for r in ran]
    bars = ax_cpu.bar(names, values, color=colours)
    ax_cpu.set_title("server CPU µs/query at fixed load")
    ax_cpu.bar_label(bars, labels=[f"{v:.1f}" for v in values], padding=2)
    for ax in (ax_qps, ax_cpu):
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    skipped = [f"{r.name}: {r.skipped}" for r in results if r.skipped is not None]
    if skipped:
        fig.text(0.01, 0.01, "skipped — " + "; ".join(skipped), fontsize=7, wrap=True)
    fig.suptitle("nodelocaldns bench (median of rounds; lower CPU is better)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
