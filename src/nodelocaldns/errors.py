"""The project's error hierarchy: one root, one branch per layer.

The branch name tells an operator where to look: a Corefile or flag (config), a packet (wire),
an upstream server (upstream) or the node's network setup (setup). ``SetupError.kind`` values are
the ``errortype`` label values of ``coredns_nodecache_setup_errors_total``.
"""

from __future__ import annotations


class NodeLocalDNSError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(NodeLocalDNSError):
    """A configuration input (Corefile, flag, template, ConfigMap) is invalid."""


class CorefileError(ConfigError):
    """A Corefile could not be parsed or set up; the message names file, line and directive."""

    def __init__(self, message: str, filename: str = "", line: int = 0, directive: str = "") -> None:
        self.filename = filename
        self.line = line
        self.directive = directive
        self.reason = message
        where = f"{filename}:{line}" if filename else f"line {line}"
        what = f" (directive '{directive}')" if directive else ""
        super().__init__(f"{where}{what}: {message}")


class TemplateError(ConfigError):
    """The ``-basecorefile`` template cannot be read; ``reason`` says why and what to do."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read the Corefile template {path}: {reason}")


class WireError(NodeLocalDNSError):
    """A DNS message is malformed. ``rcode`` is the reply to send, if one can be sent."""

    rcode: int = 1  # FORMERR


class ShortHeader(WireError):
    """The message is shorter than a DNS header; nothing can be answered."""


class UpstreamError(NodeLocalDNSError):
    """An upstream server failed to give a usable answer (timeout, network error, mismatch)."""

    def __init__(self, message: str, upstream: str = "") -> None:
        self.upstream = upstream
        super().__init__(message)


class ResourceExhausted(UpstreamError):
    """This process ran out of something local (file descriptors, socket buffers, memory) on the way to
    an upstream: the query fails like any upstream error, but the upstream is not to blame."""


class BadReply(UpstreamError):
    """The upstream's reply does not unpack (cut short, bad compression pointer, wrong counts)."""


class NoHealthyUpstream(UpstreamError):
    """Every upstream is marked down and the budget is spent."""


class SetupError(NodeLocalDNSError):
    """Node network setup failed. ``kind`` is the setup-errors metric label."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)
