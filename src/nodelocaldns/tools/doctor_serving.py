"""Doctor checks of what the agent serves: listeners, lookups, conntrack bypass, HTTP endpoints."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from nodelocaldns.tools.doctor_checks import Check, worst
from nodelocaldns.tools.doctor_facts import (
    ConntrackProbe,
    HttpResult,
    LookupFacts,
    QueryResult,
    SocketFact,
    covering_listener,
)


def check_listeners(local_ips: Sequence[str], port: int, sockets: Sequence[SocketFact]) -> Check:
    found: list[str] = []
    missing: list[str] = []
    for ip in local_ips:
        for proto in ("udp", "tcp"):
            sock = covering_listener(list(sockets), proto, ip, port)
            if sock is None:
                missing.append(f"{proto} {ip}:{port}")
            else:
                via = "" if sock.ip == ip else f" (via {sock.ip})"
                found.append(f"{proto} {ip}:{port}{via}")
    data = {"listening": found, "missing": missing}
    if missing:
        return Check(
            "listeners",
            f"listeners on :{port}",
            "fail",
            "nothing listens on "
            + ", ".join(missing)
            + (f"; listening: {', '.join(found)}" if found else ""),
            "The DNS server is not running or its Corefile does not `bind` these addresses. Check the "
            "node-local-dns pod (CrashLoopBackOff, OOMKilled) and that each server block binds every -localip.",
            data,
        )
    return Check("listeners", f"listeners on :{port}", "ok", ", ".join(found), "", data)


def _describe(q: QueryResult) -> str:
    if not q.answered:
        return f"{q.proto} no answer ({q.error or 'timeout'})"
    return f"{q.proto} {q.rcode} {q.answers} answer(s) in {q.elapsed_ms:.1f} ms"


def _verdict(q: QueryResult, cluster: bool) -> str:
    """fail, warn or ok for one query's outcome."""
    if not q.answered or q.rcode in ("SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"):
        return "fail"
    return "warn" if q.rcode == "NXDOMAIN" and cluster else "ok"


def check_lookups(check_id: str, title: str, lookups: Sequence[LookupFacts], cluster: bool) -> Check:
    """Each name resolves through each local IP, and the repeat is served from the cache.

    The detail has one line per lookup, saying every outcome once; lines with a problem come first.
    """
    verdicts: list[str] = []
    lines: list[tuple[int, str]] = []
    data: dict[str, Any] = {"lookups": []}
    for lk in lookups:
        first, second = lk.cache.first, lk.cache.second
        parts = [_describe(first)]
        entry: dict[str, Any] = {"ip": lk.ip, "name": lk.name, "first": _qdict(first)}
        mine = [_verdict(first, cluster)]
        if second is not None and first.answered:
            entry["second"] = _qdict(second)
            entry["cache_hits_delta"] = lk.cache.hits_delta
            if not second.answered:
                mine.append("fail")
                parts.append("repeat got no answer")
            elif lk.cache.hits_delta is None:
                parts.append(f"repeat {second.elapsed_ms:.1f} ms (cache not confirmed: no metrics)")
            elif lk.cache.hits_delta >= 1:
                parts.append(f"repeat {second.elapsed_ms:.1f} ms from cache")
            elif first.rcode in ("NOERROR", "NXDOMAIN"):
                mine.append("warn")
                parts.append(f"repeat {second.elapsed_ms:.1f} ms, not a cache hit")
        if lk.tcp is not None:
            mine.append(_verdict(lk.tcp, cluster))
            parts.append(_describe(lk.tcp))
            entry["tcp"] = _qdict(lk.tcp)
        status = worst(mine)
        verdicts.append(status)
        lines.append(
            (
                {"fail": 0, "warn": 1, "ok": 2}[status],
                f"{lk.name.rstrip('.')} via {lk.ip}: " + ", ".join(parts),
            )
        )
        data["lookups"].append(entry)
    detail = "\n".join(line for _, line in sorted(lines, key=lambda x: x[0]))
    overall = worst(verdicts)
    if overall == "fail":
        hint = (
            "No answer: see listeners, rules and conntrack. SERVFAIL: the cache cannot reach its upstream "
            + ("(kube-dns-upstream Service / CoreDNS pods; forward has a 5 s budget, kubernetes/dns #443). "
               if cluster else "(the node's /etc/resolv.conf servers, or the kube-dns ConfigMap's "
               "upstreamNameservers). ")
            + "REFUSED: no server block for the zone on that address (the Corefile's bind list)."
        )  # fmt: skip
        return Check(check_id, title, "fail", detail, hint, data)
    if overall == "warn":
        hint = (
            "NXDOMAIN for kubernetes.default means the cluster domain is not what --domain says. "
            if cluster
            else ""
        ) + "A repeat that is not a cache hit means the block has no `cache` (or a zero TTL answer)."
        return Check(check_id, title, "warn", detail, hint, data)
    return Check(check_id, title, "ok", detail, "", data)


def _qdict(q: QueryResult) -> dict[str, Any]:
    return {
        "proto": q.proto,
        "rcode": q.rcode,
        "answers": q.answers,
        "ms": round(q.elapsed_ms, 3),
        "error": q.error,
    }


def check_conntrack(probes: Sequence[ConntrackProbe]) -> Check:
    """A query to each local IP leaves no conntrack entry (the NOTRACK rules work)."""
    data = {
        "probes": [
            {"ip": p.ip, "sent": p.sent, "available": p.available, "dns_tracked": p.dns_tracked,
             "control_tracked": p.control_tracked, "entries": list(p.entries), "error": p.error}
            for p in probes
        ]
    }  # fmt: skip
    unsent = [p for p in probes if not p.sent]
    probes = [p for p in probes if p.sent]
    tracked = [p for p in probes if p.available and p.dns_tracked]
    unavailable = [p for p in probes if not p.available]
    inactive = [p for p in probes if p.available and not p.dns_tracked and not p.control_tracked]
    if tracked:
        return Check(
            "conntrack",
            "conntrack bypass",
            "fail",
            "DNS to "
            + ", ".join(p.ip for p in tracked)
            + " created conntrack entries: "
            + "\n".join(e for p in tracked for e in p.entries[:2]),
            "The raw-table NOTRACK rules are missing or ineffective (see rules). Tracked DNS fills the "
            "conntrack table and races on UDP (the insert_failed drops NodeLocal DNSCache exists to avoid).",
            data,
        )
    if unsent:
        return Check(
            "conntrack",
            "conntrack bypass",
            "warn",
            "not verified: " + "\n".join(p.error for p in unsent),
            "The address is not reachable from here; see interface and local routes.",
            data,
        )
    if unavailable and len(unavailable) == len(probes):
        return Check(
            "conntrack",
            "conntrack bypass",
            "warn",
            "cannot read the conntrack table: " + unavailable[0].error,
            "Needs CAP_NET_ADMIN in the node's network namespace (the node-local-dns pod has it) and the "
            "nf_conntrack module.",
            data,
        )
    if inactive and len(inactive) == len(probes):
        return Check(
            "conntrack",
            "conntrack bypass",
            "ok",
            "conntrack is not tracking traffic in this network namespace (a control datagram was not "
            "tracked either), so DNS cannot be tracked",
            "",
            data,
        )
    return Check(
        "conntrack",
        "conntrack bypass",
        "ok",
        "queries to " + ", ".join(p.ip for p in probes if p.available) + " were not tracked "
        "(a control datagram to the same address was)",
        "",
        data,
    )


# The Corefile directive serving each HTTP endpoint doctor checks.
_PLUGIN_OF_ENDPOINT = {"health": "health", "ready": "ready", "metrics": "prometheus"}

# What an operator checks next when the socket says why nothing answered ({addr} is host:port).
_UNREACHABLE = "is {host} on the node's interface, with a route to it? (see interface and local-routes)"
_NEXT_STEP = {
    errno.ECONNREFUSED: "is the agent running and listening on {addr}?",
    errno.ENETUNREACH: _UNREACHABLE,
    errno.EHOSTUNREACH: _UNREACHABLE,
    errno.EADDRNOTAVAIL: _UNREACHABLE,
    errno.ETIMEDOUT: "no answer from {addr} in time: is the agent stuck, or a firewall dropping packets?",
}


def _no_answer(result: HttpResult) -> str:
    """One line: the URL, the socket's reason in words, and what to check next when that is known."""
    line = f"{result.url}: {result.error}"
    step = _NEXT_STEP.get(result.errno) if result.errno is not None else None
    if step is None:
        return line
    parts = urlsplit(result.url)
    return f"{line}: " + step.format(addr=parts.netloc, host=parts.hostname or parts.netloc)


def check_http(check_id: str, title: str, result: HttpResult, explicit: bool, expect_body: str = "") -> Check:
    """``/health`` or ``/ready`` answers 200 (with ``expect_body`` in it); ``/metrics`` is exposition text."""
    data = {"url": result.url, "status": result.status, "ms": round(result.elapsed_ms, 3)}
    if result.status == 200 and (not expect_body or expect_body in result.body):
        if check_id == "metrics":
            series = sum(1 for line in result.body.splitlines() if line.startswith("coredns_"))
            summary = f"{series} coredns_* series"
        else:
            summary = result.body.strip()[:40]
        return Check(check_id, title, "ok", f"{result.url}: 200 {summary}", "", data)
    if result.status is None:
        what = _no_answer(result)
        if not explicit:
            plugin = _PLUGIN_OF_ENDPOINT.get(check_id, check_id)
            return Check(
                check_id,
                title,
                "warn",
                what,
                f"Nothing answers at the default address; if the Corefile has no `{plugin}` plugin there, "
                f"pass --{check_id} URL (or --{check_id} '' to skip).",
                data,
            )
        hints = {
            "health": "kubelet's liveness probe uses this endpoint: while it fails, the pod is restarted.",
            "ready": "The readiness probe uses this endpoint: a pod that is not ready holds the rollout.",
            "metrics": "Prometheus scrapes this endpoint (the Corefile's `prometheus` address).",
        }
        return Check(check_id, title, "fail", what, hints.get(check_id, ""), data)
    body = result.body.strip().replace("\n", " ")[:120]
    hint = (
        "/ready lists the plugins that are not ready yet (or the server is shutting down / lame duck)."
        if check_id == "ready"
        else "The endpoint answered but not with 200 OK."
    )
    return Check(check_id, title, "fail", f"{result.url}: HTTP {result.status} {body}", hint, data)
