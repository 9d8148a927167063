"""``nodelocaldns sysctl``: set the node sysctls the agent wants but cannot set from its container.

A container that is not privileged sees ``/proc/sys`` read-only (the runtime mounts it so), and
Kubernetes refuses ``net.*`` pod sysctls for a ``hostNetwork`` pod. The DaemonSet therefore runs
this once per pod start in a small privileged init container (tools/manifests.py): the pod is
``hostNetwork``, so the network namespace it writes in is the node's, and the value outlives the
pod. It never fails the pod: a kernel without the setting, or a write that is refused, is said in
one line and the agent starts anyway (and warns again itself). Exit status 0 in every case.

Today the one setting is ``net.ipv4.tcp_migrate_req`` (server/tcp_migrate.py): at a handover the
old agent's TCP accept queue moves to the new agent's listener instead of being reset.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from nodelocaldns.server.tcp_migrate import TCPMigrate

WHY = "set for the node agent's TCP handover"


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="nodelocaldns sysctl",
        description="Set net.ipv4.tcp_migrate_req=1 in this network namespace (the node's, from a "
        "hostNetwork pod). Needs a writable /proc/sys: a privileged container. Always exits 0.",
    ).parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    migrate = TCPMigrate()
    if migrate.ensure(WHY) and not migrate.changed:
        logging.getLogger("nodelocaldns.server").info("[INFO] net.ipv4.tcp_migrate_req is 1 already")
    return 0
