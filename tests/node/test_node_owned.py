"""The agent's own nft table (node/owned.py) against the real kernel, in a namespace of its own.

What the fail-safe rests on: the table exists exactly as long as the libnftables context that
made it, a SIGKILL deletes it as surely as ``close``, and no other program can change or delete
it. With the iptables-legacy tables in the same namespace, the kernel runs both.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from nodelocaldns.errors import SetupError
from nodelocaldns.node.owned import OwnedTable
from nodelocaldns.node.rules import desired_rules
from support.netns import netns, netns_available, ns_exec, run_in_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`"),
]

OWNED = tuple(r for r in desired_rules(["198.18.0.10", "fd00:10::10"], owner_table=True) if r.owner)


def tables(ns: str) -> list[str]:
    return [ln.split()[-1] for ln in ns_exec(ns, "nft", "list", "tables").stdout.splitlines()]


def test_the_table_lives_as_long_as_its_context_and_nobody_else_can_touch_it() -> None:
    with netns("nldown") as ns:

        def scenario() -> tuple[tuple[object, ...] | None, ...]:
            t = OwnedTable.open("nodelocaldns-agent-t1")
            try:
                empty = t.read()  # the probe's table has no chain yet
                t.write(OWNED)
                held = t.read()
                t.write(OWNED[:1])  # replaced in one transaction
                fewer = t.read()
                return (empty, held, fewer)
            finally:
                t.close()

        empty, held, fewer = run_in_netns(ns, scenario)
        assert empty is None
        assert held == OWNED and all(r.owner for r in held)
        assert fewer == OWNED[:1]
        assert "nodelocaldns-agent-t1" not in tables(ns)

        def close_one() -> tuple[list[str], list[str]]:
            t = OwnedTable.open("nodelocaldns-agent-t2")
            t.write(OWNED)
            before = tables(ns)
            other = ns_exec(ns, "nft", "delete", "table", "inet", t.name, check=False)
            assert other.returncode != 0 and "Operation not permitted" in other.stderr
            rule = ns_exec(ns, "nft", "add", "rule", "inet", t.name, "raw_output", "accept", check=False)
            assert rule.returncode != 0
            t.close()
            with pytest.raises(SetupError, match="closed"):
                t.read()
            return before, tables(ns)

        before, after = run_in_netns(ns, close_one)
        assert "nodelocaldns-agent-t2" in before and "nodelocaldns-agent-t2" not in after


HOLDER = """
import sys, time
from nodelocaldns.node.owned import OwnedTable
from nodelocaldns.node.rules import desired_rules
t = OwnedTable.open(sys.argv[1])
t.write([r for r in desired_rules(["198.18.0.10"], owner_table=True) if r.owner])
print("ready", flush=True)
time.sleep(60)
"""


def test_a_sigkill_deletes_the_table_next_to_legacy_iptables_rules() -> None:
    with netns("nldown") as ns:
        # legacy xtables rules in the same hook and priority: both run, neither replaces the other
        ns_exec(ns, "iptables-legacy", "-t", "raw", "-A", "OUTPUT", "-d", "198.18.0.99", "-j", "NOTRACK")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", HOLDER, "nodelocaldns-agent-k1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            assert "nodelocaldns-agent-k1" in tables(ns)
            listing = ns_exec(ns, "nft", "list", "table", "inet", "nodelocaldns-agent-k1").stdout
            assert "ip daddr 198.18.0.10 udp dport 53 counter" in listing and "flags owner" in listing
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            gone = time.monotonic()
            assert "nodelocaldns-agent-k1" not in tables(ns)
            assert time.monotonic() - gone < 1.0
            assert "198.18.0.99" in ns_exec(ns, "iptables-legacy-save", "-t", "raw").stdout
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def test_a_table_that_vanished_reads_as_gone_and_is_written_again() -> None:
    with netns("nldown") as ns:

        def scenario() -> tuple[object, object]:
            t = OwnedTable.open()
            try:
                t.write(OWNED)
                t.delete()  # the teardown's explicit delete; the context stays open
                gone = t.read()
                t.write(OWNED)
                return gone, t.read()
            finally:
                t.close()

        gone, back = run_in_netns(ns, scenario)
        assert gone is None and back == tuple(replace(r, owner=True) for r in OWNED)
