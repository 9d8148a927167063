"""The cache container's memory limit, from the cache size ``render`` was asked for.

Measured on the addon Corefile (four server blocks, a success and a denial cache each):

* ``IDLE_RSS``: VmRSS of ``nodelocaldns serve`` with the addon Corefile bound to a loopback address,
  after start-up and one query, before any cache fill: 33,824 KiB (three runs: 33,776-33,872 KiB).
* ``BYTES_PER_ENTRY``: ``make bench`` fills all eight caches (79,872 entries in coredns_cache_entries)
  and reports VmRSS 58.5 MiB (bench/results/latest.md); (58.5 MiB - IDLE_RSS) / 79,872 = 334 bytes.
  That VmRSS also carries what the bench's hit and miss runs before the fill left behind (the
  native workers' rings, the forward socket pool), so the per-entry figure errs on the safe side.
* ``HEADROOM``: what the addon's 128Mi limit leaves above a full default cache (about 70 MiB), kept
  for bursts of in-flight queries and TCP connections whatever the cache size.

So the default cache size gives the addon's 128Mi, and a larger cache a proportionally larger limit.
"""

from __future__ import annotations

from nodelocaldns.plugins.cache.setup import DEFAULT_CAPACITY, effective_capacity

MiB = 1024 * 1024
IDLE_RSS = 33_824 * 1024
BYTES_PER_ENTRY = 334
CACHE_KINDS = 2  # success and denial
CACHE_BLOCKS = 4  # cluster domain, in-addr.arpa, ip6.arpa, "."
DEFAULT_LIMIT = 128 * MiB
DEFAULT_ENTRIES = CACHE_BLOCKS * CACHE_KINDS * effective_capacity(DEFAULT_CAPACITY)
HEADROOM = DEFAULT_LIMIT - (IDLE_RSS + DEFAULT_ENTRIES * BYTES_PER_ENTRY)
STEP = 16 * MiB  # limits are rounded up to this, so they read as round numbers


def cache_entries(size: int | None) -> int:
    """Entries the caches hold when full; ``size`` is per kind per block (None: the default)."""
    return CACHE_BLOCKS * CACHE_KINDS * effective_capacity(size or DEFAULT_CAPACITY)


def memory_limit(size: int | None) -> str:
    """The container's ``limits.memory`` for caches of ``size`` entries per kind per block."""
    need = IDLE_RSS + cache_entries(size) * BYTES_PER_ENTRY + HEADROOM
    return f"{-(-need // STEP) * STEP // MiB}Mi"
