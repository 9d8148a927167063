"""``node-cache ... -check``: the Corefile the agent would start with, rendered and checked offline.

The same inputs and steps as the agent's start-up (the ``-basecorefile`` directory, the kube-dns
ConfigMap directory, the same environment, the same fallback to the template alone when the ConfigMap
does not render), but nothing is written and no interface, rule or socket is touched.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from nodelocaldns.errors import ConfigError
from nodelocaldns.node.configsync import template_from_state
from nodelocaldns.node.flags import NodeCacheParams
from nodelocaldns.node.kubednscm import KubeDNSConfig, config_from_state
from nodelocaldns.node.render import render_corefile
from nodelocaldns.node.watch import scan_directory
from nodelocaldns.server.check import CheckReport, check_text


def check_startup(params: NodeCacheParams, env: Mapping[str, str]) -> CheckReport:
    """Render as start-up would and check the result; notes about the inputs go to stderr."""
    name = params.base_corefile
    try:
        state = scan_directory(os.path.dirname(os.path.abspath(name)))
        template = template_from_state(state, name)
    except (ConfigError, OSError) as exc:
        # Start-up then serves -conf as it is (node-cache's degrade path): check that file instead.
        _note(
            f"Failed to read node-cache coreFile {name} - {exc}; the agent serves {params.corefile} as it is"
        )
        try:
            with open(params.corefile, encoding="utf-8") as f:
                return check_text(f.read(), params.corefile)
        except OSError as exc2:
            return CheckReport(
                name, errors=[f"no Corefile to serve: {exc}; {params.corefile}: {exc2.strerror}"]
            )
    kubedns = KubeDNSConfig()
    if params.kubedns_cm is not None:
        try:
            kubedns = config_from_state(scan_directory(params.kubedns_cm))
        except (ConfigError, OSError) as exc:
            _note(f"kube-dns ConfigMap {params.kubedns_cm} not used: {exc}")
    try:
        result = render_corefile(template, params, kubedns, env)
    except ConfigError as exc:
        if kubedns == KubeDNSConfig():
            return CheckReport(name, errors=[str(exc)])
        # The agent then serves the template without the ConfigMap; check that, and say so.
        _note(f"kube-dns ConfigMap not applied: {exc}")
        try:
            result = render_corefile(template, params, KubeDNSConfig(), env)
        except ConfigError as exc2:
            return CheckReport(name, errors=[str(exc2)])
    for warning in result.warnings:
        _note(warning)
    # Placeholders are filled within their line, so the rendered lines are the template's lines.
    return check_text(result.text, name)


def _note(message: str) -> None:
    print(f"[WARNING] {message}", file=sys.stderr)
