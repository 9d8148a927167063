"""The agent's Corefile inputs: template + kube-dns ConfigMap in, a checked Corefile out.

node-cache renders and writes whatever comes out and lets CoreDNS discover later that it does not
load. Here a candidate Corefile is rendered *and* put through the server's own parser and plugin
setup (``parse_corefile`` + ``plan``, no sockets) before anything is written or applied, so a bad
ConfigMap never replaces the last good configuration. Only binding can still fail, and that is the
live reload's job to report.

Everything here is synchronous and free of sockets; the one side effect is ``write_atomic``.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import ConfigError, TemplateError
from nodelocaldns.node.flags import NodeCacheParams
from nodelocaldns.node.kubednscm import KubeDNSConfig
from nodelocaldns.node.render import RenderResult, render_corefile
from nodelocaldns.node.watch import DirectoryState
from nodelocaldns.server.config import plan


@dataclass(frozen=True)
class Inputs:
    """The two mounted inputs as last read successfully."""

    template: str
    """The ``-basecorefile`` text."""
    kubedns: KubeDNSConfig = KubeDNSConfig()
    """The kube-dns ConfigMap; the default value when there is none (or it never parsed)."""


def template_from_state(state: DirectoryState, base_corefile: str) -> str:
    """The template's text from a snapshot of its directory; TemplateError when it is not there."""
    name = os.path.basename(base_corefile)
    if not state.exists:
        raise TemplateError(base_corefile, f"the directory {state.path} does not exist")
    if name in state.dirs:
        raise TemplateError(
            base_corefile,
            f"it is a directory; -basecorefile names the template file itself, e.g. {base_corefile}/"
            "Corefile.base",
        )
    try:
        text = state.text(name)
    except UnicodeDecodeError as exc:
        raise TemplateError(base_corefile, f"not UTF-8 text ({exc})") from exc
    if text is None:
        there = ", ".join(n for n, _ in state.files) or "no files"
        raise TemplateError(base_corefile, f"no such file (the directory {state.path} holds: {there})")
    return text


def read_error(path: str, exc: OSError) -> str:
    """What an operator needs to know about a file that cannot be read (the Corefile, its template)."""
    what = exc.strerror or str(exc)
    where = exc.filename or path
    if exc.errno == errno.EACCES:
        return (
            f"{what}: {where} (the agent runs as uid {os.geteuid()}; check the file's mode, the"
            " ConfigMap volume's defaultMode and the container's runAsUser)"
        )
    return f"{what}: {where}"


def check_corefile(text: str, filename: str) -> None:
    """Raise ConfigError (CorefileError) unless the server would accept ``text``.

    This is the parse and every plugin's setup, exactly what ``Server.prepare`` runs
    without touching a socket; a ``forward`` to a resolv.conf path reads that file here, as it will then.
    """
    plan(parse_corefile(text, filename))


def build_corefile(inputs: Inputs, params: NodeCacheParams, env: Mapping[str, str]) -> RenderResult:
    """Render ``inputs`` and check the result; ConfigError names what is wrong.

    Errors name ``-basecorefile`` and its line: placeholders are filled within their line, so the
    rendered text's line numbers are the template's (stub-domain blocks follow its last line).
    """
    result = render_corefile(inputs.template, params, inputs.kubedns, env)
    try:
        check_corefile(result.text, params.base_corefile)
    except ConfigError as exc:
        raise ConfigError(f"the Corefile rendered from the template is not valid: {exc}") from exc
    return result


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` in one rename, so a reader (the ``reload`` plugin, an operator's
    ``cat``) never sees half a file. The temporary file lives next to ``path`` (same filesystem)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
