"""``nodelocaldns top``: a live view of a cache's metrics endpoint (the Corefile's ``prometheus``).

Every number is computed from two scrapes ``--interval`` apart, as Prometheus's ``rate()`` would:
queries per second, cache hit ratio per server block (``coredns_cache_hits_total`` /
``coredns_cache_requests_total`` by ``zones``), request latency quantiles (``histogram_quantile`` over
``coredns_dns_request_duration_seconds``), response codes, and per upstream the request rate,
error share, latency and health-check failures (``coredns_proxy_*``). Cumulative values (since the
server started) are shown next to the window ones, so a quiet window still says something.

``--once`` prints one snapshot (two scrapes) and exits; ``--json`` makes that snapshot JSON.
Without ``--once`` the view refreshes every interval until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nodelocaldns.tools.promtext import (
    Buckets,
    FetchError,
    PromTextError,
    Scrape,
    bucket_delta,
    delta,
    fetch,
    histogram_quantile,
)

DEFAULT_METRICS = "http://169.254.20.10:9253/metrics"
QUANTILES = (0.5, 0.9, 0.99)
_OK_RCODES = ("NOERROR", "NXDOMAIN")


@dataclass(frozen=True)
class Latency:
    """Quantiles in milliseconds; ``window`` False when they are since-start values."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    window: bool = True


@dataclass(frozen=True)
class BlockRow:
    server: str
    zone: str
    qps: float
    requests: float  # in the window
    total_requests: float
    cache_requests: float = 0.0
    cache_hits: float = 0.0
    total_cache_requests: float = 0.0
    total_cache_hits: float = 0.0
    hit_ratio: float | None = None  # window
    total_hit_ratio: float | None = None
    entries: float | None = None
    latency: Latency = field(default_factory=Latency)


@dataclass(frozen=True)
class UpstreamRow:
    to: str
    qps: float
    requests: float
    error_ratio: float | None
    healthcheck_failures: float
    total_healthcheck_failures: float
    latency: Latency = field(default_factory=Latency)


@dataclass(frozen=True)
class View:
    interval: float
    qps: float
    requests: float
    total_requests: float
    by_proto: dict[str, float]
    blocks: list[BlockRow]
    latency: Latency
    rcodes: dict[str, float]  # window counts
    total_rcodes: dict[str, float]
    upstreams: list[UpstreamRow]
    healthcheck_broken: float
    max_concurrent_rejects: float
    rss_bytes: float | None
    cpu: float | None  # CPU seconds per second in the window


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _ms(v: float | None) -> float | None:
    return v * 1000 if v is not None else None


def _latency(now: Buckets | None, before: Buckets | None) -> Latency:
    """Window quantiles when the window saw requests, else since-start ones."""
    if not now:
        return Latency(window=False)
    window = bucket_delta(now, before)
    use, is_window = (window, True) if window and window[-1][1] > 0 else (now, False)
    q = [_ms(histogram_quantile(x, use)) for x in QUANTILES]
    return Latency(q[0], q[1], q[2], is_window)


def summarize(prev: Scrape, cur: Scrape) -> View:
    """Everything ``top`` shows, from two scrapes of the same endpoint (pure)."""
    dt = max(cur.at - prev.at, 1e-9)
    keys = ("server", "zone")
    req_now, req_before = (
        cur.by("coredns_dns_requests_total", keys),
        prev.by("coredns_dns_requests_total", keys),
    )
    req_win = delta(req_now, req_before)
    ckeys = ("server", "zones")
    creq_now = cur.by("coredns_cache_requests_total", ckeys)
    creq_win = delta(creq_now, prev.by("coredns_cache_requests_total", ckeys))
    hits_now = cur.by("coredns_cache_hits_total", ckeys)
    hits_win = delta(hits_now, prev.by("coredns_cache_hits_total", ckeys))
    entries = cur.by("coredns_cache_entries", ckeys)
    lat_now = cur.buckets("coredns_dns_request_duration_seconds", keys)
    lat_before = prev.buckets("coredns_dns_request_duration_seconds", keys)

    blocks: list[BlockRow] = []
    for group in sorted(set(req_now) | set(creq_now)):
        blocks.append(
            BlockRow(
                server=group[0],
                zone=group[1],
                qps=req_win.get(group, 0.0) / dt,
                requests=req_win.get(group, 0.0),
                total_requests=req_now.get(group, 0.0),
                cache_requests=creq_win.get(group, 0.0),
                cache_hits=hits_win.get(group, 0.0),
                total_cache_requests=creq_now.get(group, 0.0),
                total_cache_hits=hits_now.get(group, 0.0),
                hit_ratio=_ratio(hits_win.get(group, 0.0), creq_win.get(group, 0.0)),
                total_hit_ratio=_ratio(hits_now.get(group, 0.0), creq_now.get(group, 0.0)),
                entries=entries.get(group),
                latency=_latency(lat_now.get(group), lat_before.get(group)),
            )
        )

    all_now = cur.buckets("coredns_dns_request_duration_seconds").get(())
    all_before = prev.buckets("coredns_dns_request_duration_seconds").get(())
    rc_now = cur.by("coredns_dns_responses_total", ("rcode",))
    rc_win = delta(rc_now, prev.by("coredns_dns_responses_total", ("rcode",)))
    proto_win = delta(
        cur.by("coredns_dns_requests_total", ("proto",)), prev.by("coredns_dns_requests_total", ("proto",))
    )
    return View(
        interval=dt,
        qps=sum(req_win.values()) / dt,
        requests=sum(req_win.values()),
        total_requests=sum(req_now.values()),
        by_proto={k[0]: v / dt for k, v in sorted(proto_win.items())},
        blocks=blocks,
        latency=_latency(all_now, all_before),
        rcodes={k[0]: v for k, v in sorted(rc_win.items(), key=lambda kv: -kv[1]) if v},
        total_rcodes={k[0]: v for k, v in sorted(rc_now.items(), key=lambda kv: -kv[1])},
        upstreams=_upstreams(prev, cur, dt),
        healthcheck_broken=_counter_delta(prev, cur, "coredns_forward_healthcheck_broken_total"),
        max_concurrent_rejects=_counter_delta(prev, cur, "coredns_forward_max_concurrent_rejects_total"),
        rss_bytes=cur.total("process_resident_memory_bytes")
        if cur.has("process_resident_memory_bytes")
        else None,
        cpu=(
            _counter_delta(prev, cur, "process_cpu_seconds_total") / dt
            if cur.has("process_cpu_seconds_total")
            else None
        ),
    )


def _counter_delta(prev: Scrape, cur: Scrape, name: str) -> float:
    return sum(delta(cur.by(name, ()), prev.by(name, ())).values())


def _upstreams(prev: Scrape, cur: Scrape, dt: float) -> list[UpstreamRow]:
    name = "coredns_proxy_request_duration_seconds"
    count_now = cur.by(name + "_count", ("to", "rcode"))
    count_win = delta(count_now, prev.by(name + "_count", ("to", "rcode")))
    hc_now = cur.by("coredns_proxy_healthcheck_failures_total", ("to",))
    hc_win = delta(hc_now, prev.by("coredns_proxy_healthcheck_failures_total", ("to",)))
    lat_now, lat_before = cur.buckets(name, ("to",)), prev.buckets(name, ("to",))
    rows = []
    for to in sorted({k[0] for k in count_now} | {k[0] for k in hc_now}):
        window = {rc: v for (t, rc), v in count_win.items() if t == to}
        total = sum(window.values())
        errors = sum(v for rc, v in window.items() if rc not in _OK_RCODES)
        rows.append(
            UpstreamRow(
                to=to,
                qps=total / dt,
                requests=total,
                error_ratio=_ratio(errors, total),
                healthcheck_failures=hc_win.get((to,), 0.0),
                total_healthcheck_failures=hc_now.get((to,), 0.0),
                latency=_latency(lat_now.get((to,)), lat_before.get((to,))),
            )
        )
    return rows


# ---------------------------------------------------------------- rendering


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _msf(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.0f}")


def _lat(lat: Latency) -> str:
    text = f"{_msf(lat.p50)} / {_msf(lat.p90)} / {_msf(lat.p99)}"
    return text if lat.window or lat.p50 is None else text + " *"


def server_label(server: str) -> str:
    """A ``server`` label without what every block shares: the dns:// scheme and port 53."""
    text = server.removeprefix("dns://")
    host, sep, port = text.rpartition(":")
    # A bare ":53" (no bind) keeps its port, and "fd00::10" without brackets has no port to drop.
    if sep and port == "53" and host and (host.endswith("]") or ":" not in host):
        return host
    return text


def zone_label(zone: str) -> str:
    return zone if zone == "." else zone.rstrip(".")


def _lat_short(lat: Latency) -> str:
    # The per-block column: the same numbers as _lat without spaces, so the table fits 80 columns.
    return _lat(lat).replace(" / ", "/").replace(" *", "*")


def render(view: View, source: str) -> Any:
    """The view as rich renderables (one Group)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    protos = ", ".join(f"{p} {q:.1f}" for p, q in view.by_proto.items() if q) or "idle"
    head = Text.assemble(
        ("nodelocaldns top ", "bold"),
        f"{source}  every {view.interval:.1f}s\n",
        ("QPS ", "bold"),
        f"{view.qps:.1f} ({protos})   ",
        ("requests ", "bold"),
        f"{view.requests:.0f} in window, {view.total_requests:.0f} total\n",
        ("latency p50/p90/p99 ", "bold"),
        f"{_lat(view.latency)} ms",
    )
    if view.rss_bytes is not None:
        head.append(f"   rss {view.rss_bytes / 2**20:.0f} MiB")
    if view.cpu is not None:
        head.append(f"   cpu {view.cpu * 100:.0f}%")

    # Light borders, short headers and two spaces between columns: an 80-column terminal shows
    # every address, zone and latency whole, even four-digit ones during an upstream outage.
    blocks = Table(
        title="server blocks",
        title_justify="left",
        expand=False,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for col, justify in (
        ("server", "left"), ("zone", "left"), ("QPS", "right"), ("hit %", "right"),
        ("all %", "right"), ("entries", "right"), ("p50/p90/p99 ms", "right"),
    ):  # fmt: skip
        blocks.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for b in view.blocks:
        blocks.add_row(
            # Text, not markup: "[fd00::10]" would read as a style tag and vanish.
            Text(server_label(b.server)),
            Text(zone_label(b.zone)),
            f"{b.qps:.1f}",
            _pct(b.hit_ratio).rstrip("%"),
            _pct(b.total_hit_ratio).rstrip("%"),
            "-" if b.entries is None else f"{b.entries:.0f}",
            _lat_short(b.latency),
        )

    rcodes = Table(
        title="responses", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    rcodes.add_column("rcode")
    rcodes.add_column("window", justify="right")
    rcodes.add_column("share", justify="right")
    rcodes.add_column("total", justify="right")
    window_total = sum(view.rcodes.values())
    for rc, total in view.total_rcodes.items():
        n = view.rcodes.get(rc, 0.0)
        rcodes.add_row(rc, f"{n:.0f}", _pct(_ratio(n, window_total)), f"{total:.0f}")

    ups = Table(title="upstreams", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("to", "QPS", "errors", "p50/p90/p99 ms", "health checks failed"):
        ups.add_column(col, justify="left" if col == "to" else "right")
    for u in view.upstreams:
        health = "ok" if u.healthcheck_failures == 0 else f"[red]{u.healthcheck_failures:.0f} failed[/]"
        ups.add_row(
            Text(u.to),
            f"{u.qps:.1f}",
            _pct(u.error_ratio),
            _lat(u.latency),
            f"{health} ({u.total_healthcheck_failures:.0f})",
        )
    parts: list[Any] = [head, blocks, rcodes, ups]
    alerts = []
    if view.healthcheck_broken:
        alerts.append(
            f"every upstream of a forward failed its health check {view.healthcheck_broken:.0f} time(s)"
        )
    if view.max_concurrent_rejects:
        alerts.append(f"{view.max_concurrent_rejects:.0f} queries refused by forward max_concurrent")
    if alerts:
        parts.append(Text("\n".join(alerts), style="bold red"))
    parts.append(Text("* since start (no requests in the window)", style="dim"))
    return Group(*parts)


def to_json(view: View, source: str) -> dict[str, Any]:
    doc = asdict(view)
    doc["source"] = source
    return doc


# ---------------------------------------------------------------- CLI


def scrape(url: str, timeout: float, clock: Callable[[], float] = time.monotonic) -> Scrape:
    text = fetch(url, timeout)
    return Scrape.from_text(text, clock())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nodelocaldns top", description="Live view of a NodeLocal DNSCache metrics endpoint."
    )
    p.add_argument("--metrics", default=DEFAULT_METRICS, help="metrics URL (default %(default)s)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes (default 2)")
    p.add_argument("--once", action="store_true", help="print one snapshot (two scrapes) and exit")
    p.add_argument("--json", action="store_true", help="with --once: print the snapshot as JSON")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per scrape (default 3)")
    return p


def _once(args: argparse.Namespace) -> int:
    first = scrape(args.metrics, args.timeout)
    time.sleep(args.interval)
    view = summarize(first, scrape(args.metrics, args.timeout))
    if args.json:
        print(json.dumps(to_json(view, args.metrics), indent=2))
    else:
        from rich.console import Console

        Console().print(render(view, args.metrics))
    return 0


def _live(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    prev = scrape(args.metrics, args.timeout)
    with Live(
        Text(f"waiting {args.interval:g}s for a second scrape of {args.metrics} ..."), console=console
    ) as live:
        try:
            while True:
                time.sleep(args.interval)
                try:
                    cur = scrape(args.metrics, args.timeout)
                except (FetchError, PromTextError) as e:
                    live.update(Text(f"{e} (retrying every {args.interval:g}s)", style="bold red"))
                    continue
                live.update(render(summarize(prev, cur), args.metrics))
                prev = cur
        except KeyboardInterrupt:
            return 0


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if args.interval <= 0:
        print("nodelocaldns top: --interval must be positive", file=sys.stderr)
        return 2
    try:
        return _once(args) if args.once or args.json else _live(args)
    except (FetchError, PromTextError) as e:
        print(f"nodelocaldns top: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
