"""Parse the ``cache`` directive (CoreDNS plugin/cache/setup.go)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nodelocaldns.core.duration import parse_duration
from nodelocaldns.corefile.model import Directive

DEFAULT_CAPACITY = 10000
MAX_TTL = 3600  # MaximumDefaultTTL
MAX_NTTL = 1800  # MaximumDefaultTTL / 2
MIN_TTL = 5  # MinimalDefaultTTL
SERVFAIL_TTL = 5
MAX_SERVFAIL_TTL = 300
DEFAULT_STALE = 3600.0
SHARDS = 256


def effective_capacity(cap: int) -> int:
    """CoreDNS splits capacity over 256 shards of max(cap/256, 4) entries."""
    return max(cap // SHARDS, 4) * SHARDS


@dataclass(frozen=True, slots=True)
class CacheConfig:
    zones: tuple[str, ...] = ()  # empty: the server block's zones
    success_cap: int = DEFAULT_CAPACITY
    success_max_ttl: int = MAX_TTL
    success_min_ttl: int = MIN_TTL
    denial_cap: int = DEFAULT_CAPACITY
    denial_max_ttl: int = MAX_NTTL
    denial_min_ttl: int = MIN_TTL
    prefetch_amount: int = 0  # 0: off
    prefetch_window: float = 60.0
    prefetch_percentage: int = 10
    serve_stale: float = 0.0  # seconds a stale entry may be served; 0: off
    stale_verify: bool = False
    stale_response_ttl: int = 0
    stale_verify_timeout: float = 0.0  # verify: serve stale after this long (0: wait for the upstream)
    stale_recheck: float = 0.0  # FAILURE_RECHECK: after a failed stale refresh, no other one this long
    prefer_positive: bool = False  # serve_stale_policy prefer_positive
    servfail_ttl: float = SERVFAIL_TTL
    keepttl: bool = False
    disable_success: tuple[str, ...] = ()
    disable_denial: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def _int(d: Directive, text: str, what: str, minimum: int = 0) -> int:
    try:
        v = int(text)
    except ValueError:
        raise d.error(f"{what} must be an integer, got {text!r}") from None
    if v < minimum:
        raise d.error(f"{what} must be >= {minimum}, got {v}")
    return v


def _dur(d: Directive, text: str, what: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise d.error(f"{what}: invalid duration {text!r}") from None


def parse(d: Directive) -> CacheConfig:
    """``cache [TTL] [ZONES...] { success|denial|prefetch|serve_stale|serve_stale_policy|servfail|disable|keepttl }``."""
    from nodelocaldns.corefile.keys import normalize_zones as norm

    args = list(d.args)
    kw: dict[str, object] = {}
    if args and args[0].lstrip("-").isdigit():
        ttl = _int(d, args.pop(0), "TTL", 1)
        kw["success_max_ttl"] = kw["denial_max_ttl"] = ttl
    zones = tuple(norm(args)) if args else ()
    policy: Directive | None = None
    for sub in d.block:
        a = sub.args
        if sub.name in ("success", "denial"):
            if not 1 <= len(a) <= 3:
                raise sub.error(f"{sub.name} takes CAPACITY [TTL] [MINTTL]")
            kw[f"{sub.name}_cap"] = _int(sub, a[0], "capacity", 0)
            if len(a) > 1:
                kw[f"{sub.name}_max_ttl"] = _int(sub, a[1], "TTL", 1)
            if len(a) > 2:
                kw[f"{sub.name}_min_ttl"] = _int(sub, a[2], "MINTTL", 0)
        elif sub.name == "prefetch":
            if not 1 <= len(a) <= 3:
                raise sub.error("prefetch takes AMOUNT [[DURATION] [PERCENTAGE%]]")
            kw["prefetch_amount"] = _int(sub, a[0], "prefetch amount", 0)
            rest = list(a[1:])
            if rest and not rest[0].endswith("%"):
                kw["prefetch_window"] = _dur(sub, rest.pop(0), "prefetch duration")
            if rest:
                p = rest.pop(0)
                if not p.endswith("%"):
                    raise sub.error(f"percentage must end in %, got {p!r}")
                pct = _int(sub, p[:-1], "prefetch percentage", 0)
                if not 10 <= pct <= 90:
                    raise sub.error(f"prefetch percentage must be in [10, 90], got {pct}")
                kw["prefetch_percentage"] = pct
            if rest:
                raise sub.error(f"unexpected argument {rest[0]!r}")
        elif sub.name == "serve_stale":
            rest = list(a)
            stale = DEFAULT_STALE
            if rest and rest[0] not in ("immediate", "verify"):
                stale = _dur(sub, rest.pop(0), "serve_stale duration")
                if stale < 0:
                    raise sub.error("serve_stale duration must be >= 0")
            kw["serve_stale"] = stale
            if rest:
                mode = rest.pop(0)
                if mode not in ("immediate", "verify"):
                    raise sub.error(f"serve_stale mode must be immediate or verify, got {mode!r}")
                kw["stale_verify"] = mode == "verify"
                # immediate [RESPONSE_TTL [FAILURE_RECHECK]] | verify [VERIFY_TIMEOUT [RESPONSE_TTL [...]]]
                if mode == "verify" and rest:
                    kw["stale_verify_timeout"] = _dur(sub, rest.pop(0), "serve_stale verify timeout")
                if rest:
                    resp_ttl = _dur(sub, rest.pop(0), "serve_stale response TTL")
                    if resp_ttl != int(resp_ttl) or resp_ttl < 0:
                        raise sub.error("serve_stale response TTL must be a whole number of seconds")
                    kw["stale_response_ttl"] = int(resp_ttl)
                if rest:
                    text = rest.pop(0)
                    try:
                        recheck = parse_duration(text.lstrip("+-")) * (-1 if text.startswith("-") else 1)
                    except ValueError:
                        raise sub.error(
                            f"invalid serve_stale failure recheck: invalid duration {text!r}"
                        ) from None
                    if recheck < 0:
                        raise sub.error("invalid negative failure recheck for serve_stale")
                    if recheck > MAX_SERVFAIL_TTL:
                        raise sub.error("serve_stale failure recheck cannot exceed 5 minutes")
                    kw["stale_recheck"] = recheck
            if rest:
                raise sub.error(f"unexpected argument {rest[0]!r}")
        elif sub.name == "serve_stale_policy":
            if policy is not None:
                raise sub.error("serve_stale_policy can only be specified once")
            policy = sub
            if len(a) != 1:
                raise sub.error("serve_stale_policy takes one policy: prefer_positive")
            if a[0].lower() != "prefer_positive":
                raise sub.error(f"invalid serve_stale_policy: {a[0]}")
            kw["prefer_positive"] = True
        elif sub.name == "servfail":
            if len(a) != 1:
                raise sub.error("servfail takes DURATION")
            v = _dur(sub, a[0], "servfail")
            if not 0 <= v <= MAX_SERVFAIL_TTL:
                raise sub.error("servfail duration must be between 0 and 5m")
            kw["servfail_ttl"] = v
        elif sub.name == "disable":
            if not a or a[0] not in ("success", "denial"):
                raise sub.error("disable takes success|denial [ZONES...]")
            dz = tuple(norm(list(a[1:]))) if len(a) > 1 else (".",)
            kw[f"disable_{a[0]}"] = dz
        elif sub.name == "keepttl":
            if a:
                raise sub.error("keepttl takes no arguments")
            kw["keepttl"] = True
        else:
            raise sub.error(f"unknown property {sub.name!r} in cache")
    if policy is not None and "serve_stale" not in kw:
        raise policy.error("serve_stale_policy requires serve_stale")
    return CacheConfig(zones=zones, **kw)  # type: ignore[arg-type]
