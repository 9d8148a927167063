"""Parse the ``trace`` directive (CoreDNS plugin/trace/setup.go).

``trace [ENDPOINT-TYPE] [ENDPOINT] { every N  service NAME  client_server [BOOL]
datadog_analytics_rate RATE  zipkin_max_backlog_size N  zipkin_max_batch_size N
zipkin_max_batch_interval DURATION }``. ENDPOINT-TYPE is zipkin (default, localhost:9411) or datadog
(localhost:8126); a zipkin ENDPOINT without "http" in it becomes ``http://ENDPOINT/api/v2/spans``.
With a single argument it is the ENDPOINT (of type zipkin), as in CoreDNS.

Tracing needs CoreDNS's OpenTracing integration, which nodelocaldns does not have. The directive is
accepted and validated so a Corefile that has it keeps working; the runtime logs ``UNAVAILABLE`` once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from nodelocaldns.core.duration import parse_duration
from nodelocaldns.corefile.model import Directive

ONCE = False  # CoreDNS loops over repeated directives; the last one wins
UNAVAILABLE = "trace: OpenTracing (zipkin, datadog) is not available in nodelocaldns; the directive is accepted and ignored"
PROVIDERS = {"zipkin": "localhost:9411", "datadog": "localhost:8126"}
DEFAULT_TYPE = "zipkin"
DEFAULT_SERVICE = "coredns"

_UINT = re.compile(r"[0-9]+")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)
_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TraceConfig:
    endpoint_type: str = DEFAULT_TYPE
    endpoint: str = "http://localhost:9411/api/v2/spans"
    every: int = 1
    service: str = DEFAULT_SERVICE
    client_server: bool = False
    datadog_analytics_rate: float = 0.0
    zipkin_max_backlog_size: int = 0  # 0: the reporter's default (1000)
    zipkin_max_batch_size: int = 0  # 0: the reporter's default (100)
    zipkin_max_batch_interval: float = 0.0  # 0: the reporter's default (1s)


def normalize_endpoint(d: Directive, ep_type: str, endpoint: str) -> tuple[str, str]:
    if ep_type not in PROVIDERS:
        raise d.error(f"tracing endpoint type '{ep_type}' is not supported")
    endpoint = endpoint or PROVIDERS[ep_type]
    if ep_type == "zipkin" and "http" not in endpoint:
        endpoint = f"http://{endpoint}/api/v2/spans"
    return ep_type, endpoint


def _one(sub: Directive) -> str:
    if len(sub.args) != 1:
        raise sub.error(f"Wrong argument count or unexpected line ending after '{sub.name}'")
    return sub.args[0]


def parse(d: Directive) -> TraceConfig:  # noqa: C901 - one branch per option, as in CoreDNS
    a = d.args
    if len(a) > 2:
        raise d.error("trace takes [ENDPOINT-TYPE] [ENDPOINT]")
    if len(a) == 2:
        ep_type, endpoint = normalize_endpoint(d, a[0].lower(), a[1])
    else:
        ep_type, endpoint = normalize_endpoint(d, DEFAULT_TYPE, a[0] if a else "")
    kw: dict[str, object] = {}
    for sub in d.block:
        name = sub.name
        if name == "every":
            v = _one(sub)
            if not _UINT.fullmatch(v) or int(v) >= 2**64:
                raise sub.error(f'strconv.ParseUint: parsing "{v}": invalid syntax')
            kw["every"] = int(v)
        elif name == "service":
            kw["service"] = _one(sub)
        elif name == "client_server":
            if len(sub.args) > 1:
                raise sub.error("client_server takes at most one BOOL")
            if sub.args and sub.args[0] not in _BOOLS:
                raise sub.error(f'strconv.ParseBool: parsing "{sub.args[0]}": invalid syntax')
            kw["client_server"] = _BOOLS[sub.args[0]] if sub.args else True
        elif name == "datadog_analytics_rate":
            if len(sub.args) > 1:
                raise sub.error("datadog_analytics_rate takes at most one RATE")
            rate = 0.0
            if sub.args:
                if not _FLOAT.fullmatch(sub.args[0]):
                    raise sub.error(f'strconv.ParseFloat: parsing "{sub.args[0]}": invalid syntax')
                rate = float(sub.args[0])
            # NaN passes CoreDNS's range check as well; it only ever reaches the (absent) tracer.
            if not math.isnan(rate) and not 0 <= rate <= 1:
                raise sub.error(
                    f"datadog analytics rate must be between 0 and 1, '{rate:f}' is not supported"
                )
            kw["datadog_analytics_rate"] = rate
        elif name in ("zipkin_max_backlog_size", "zipkin_max_batch_size"):
            v = _one(sub)
            if not _INT.fullmatch(v):
                raise sub.error(f'strconv.Atoi: parsing "{v}": invalid syntax')
            kw[name] = int(v)
        elif name == "zipkin_max_batch_interval":
            v = _one(sub)
            try:
                neg = v.startswith("-")
                secs = parse_duration(v.lstrip("+-"))
            except ValueError:
                raise sub.error(f'time: invalid duration "{v}"') from None
            kw[name] = -secs if neg else secs
        else:
            raise sub.error(f"unknown property '{name}'")
    return TraceConfig(ep_type, endpoint, **kw)  # type: ignore[arg-type]
