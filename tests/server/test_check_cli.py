"""``nodelocaldns check`` and ``node-cache -check``: the offline verdict matches what serve/the agent do.

Real processes (``python -m nodelocaldns``, the ``node-cache`` entry point), real files; nothing binds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nodelocaldns import plugins
from nodelocaldns.core.plugin import registered
from support.addon import ADDON_COREFILE
from support.lifecycle import BAD, run_corefile
from support.server import REPO

plugins.load()
# The CLI lists what the registry holds; a plugin that only CoreDNS has stands for "not available".
AVAILABLE = ", ".join(sorted(p.name for p in registered()))


def nodelocaldns(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodelocaldns", *argv], capture_output=True, text=True,
                          timeout=30, cwd=REPO, env=env)  # fmt: skip


def node_cache(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return nodelocaldns("node-cache", *argv, env={**os.environ, **env})


GOOD = """\
cluster.local:53 in-addr.arpa {
    bind 127.0.0.1
    errors
    cache 30
    forward . 127.0.0.1:1053
}
.:53 {
    bind 127.0.0.1
    forward . 127.0.0.1:1053
}
"""

# Four independent mistakes: every one must be reported, each with its line.
MANY = """\
.:53 {
    bind 127.0.0.1
    etcd example.org {
        path /skydns
    }
    chache 30
    cache 30
    cache 60
}
.:53 {
    bind 127.0.0.1
}
"""


def test_good_corefile_is_ok_with_blocks_and_zones(tmp_path: Path) -> None:
    f = tmp_path / "Corefile"
    f.write_text(GOOD)
    out = nodelocaldns("check", "--corefile", str(f))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{f}: OK (2 server blocks, zones cluster.local.:53 in-addr.arpa.:53 .:53)\n"


def test_every_error_is_listed_with_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "Corefile"
    f.write_text(MANY)
    out = nodelocaldns("check", "--corefile", str(f))
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert lines == [
        f"[ERROR] {f}:3 (directive 'etcd'): 'etcd' is a CoreDNS plugin not available in nodelocaldns "
        f"(available: {AVAILABLE}; see docs/configuration.md)",
        f"[ERROR] {f}:6 (directive 'chache'): unknown directive 'chache' (did you mean 'cache'?)",
        f"[ERROR] {f}:8 (directive 'cache'): plugin 'cache' can only be used once per Server Block",
        f"[ERROR] {f}:10: cannot serve dns://.:53 - it is already defined (block at line 1)",
        f"{f}: 4 errors",
    ]
    assert out.stdout == ""


def test_a_typo_without_a_near_name_gets_no_suggestion(tmp_path: Path) -> None:
    f = tmp_path / "Corefile"
    f.write_text(".:53 {\n    frobnicate on\n}\n")
    out = nodelocaldns("check", "--corefile", str(f))
    assert out.returncode == 1
    assert f"[ERROR] {f}:2 (directive 'frobnicate'): unknown directive 'frobnicate'\n" in out.stderr


def test_unreadable_and_syntax_errors(tmp_path: Path) -> None:
    out = nodelocaldns("check", "--corefile", str(tmp_path / "missing"))
    assert out.returncode == 1 and "cannot read" in out.stderr and "Traceback" not in out.stderr
    f = tmp_path / "Corefile"
    f.write_text(".:53 {\n    cache 30 {\n        success 10\n}\n")
    out = nodelocaldns("check", "--corefile", str(f))
    assert out.returncode == 1 and str(f) in out.stderr and "Traceback" not in out.stderr


def test_serve_names_an_unavailable_coredns_plugin_as_such(tmp_path: Path) -> None:
    out, path = run_corefile(".:{PORT} {\n    bind 127.0.0.1\n    etcd example.org\n}\n")
    assert out.returncode == 1
    assert f"{path}:3 (directive 'etcd'): 'etcd' is a CoreDNS plugin not available in nodelocaldns" in (
        out.stderr
    )
    assert "docs/configuration.md" in out.stderr


@pytest.mark.parametrize("text", [t for t, _line, _what in BAD.values()], ids=list(BAD))
def test_check_agrees_with_serve(text: str, tmp_path: Path) -> None:
    served, path = run_corefile(text)
    f = tmp_path / "Corefile"
    f.write_text(text.replace("{PORT}", "5353"))
    checked = nodelocaldns("check", "--corefile", str(f))
    assert (checked.returncode == 0) == (served.returncode == 0)
    # The same first error, at the same place (serve stops at the first one; ports differ).
    first = checked.stderr.splitlines()[0].removeprefix(f"[ERROR] {f}")
    said = re.search(rf"\[ERROR\] {re.escape(path)}(.*)", served.stderr)
    assert said is not None, served.stderr
    assert first == re.sub(r"\.:\d+ ", ".:5353 ", said.group(1)), (first, said.group(1))


# -- node-cache -check ---------------------------------------------------------------------------

ENV = {"KUBE_DNS_SERVICE_HOST": "10.96.0.11", "KUBE_DNS_UPSTREAM_SERVICE_HOST": "10.96.0.12"}


def test_node_cache_check_renders_the_addon_template_and_changes_nothing(tmp_path: Path) -> None:
    base = tmp_path / "Corefile.base"
    base.write_text(ADDON_COREFILE)
    conf = tmp_path / "Corefile"
    out = node_cache("-localip", "169.254.20.10,10.96.0.10", "-basecorefile", str(base), "-conf", str(conf),
                     "-kubednscm", str(tmp_path / "no-cm"), "-check", env=ENV)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        f"{base}: OK (4 server blocks, zones cluster.local.:53 in-addr.arpa.:53 ip6.arpa.:53 .:53)\n"
    )
    assert not conf.exists()  # the agent would write -conf; the check does not


def test_node_cache_check_reports_what_the_agent_would_refuse(tmp_path: Path) -> None:
    base = tmp_path / "Corefile.base"
    base.write_text(ADDON_COREFILE.replace("    errors\n", "    errors\n    acl\n", 1))
    out = node_cache("-localip", "169.254.20.10", "-basecorefile", str(base), "-check", env=ENV)
    assert out.returncode == 1
    assert f"{base}:3 (directive 'acl'): 'acl' is a CoreDNS plugin not available" in out.stderr
    # Without the Service environment the agent cannot render at all: the check says so, too.
    bare = {k: v for k, v in os.environ.items() if not k.startswith("KUBE_DNS")}
    base.write_text(ADDON_COREFILE)
    out = nodelocaldns(
        "node-cache", "-localip", "169.254.20.10", "-basecorefile", str(base), "-check", env=bare
    )
    assert out.returncode == 1 and "__PILLAR__CLUSTER__DNS__" in out.stderr


def test_node_cache_check_without_a_template_checks_conf_as_the_agent_serves_it(tmp_path: Path) -> None:
    # kubespray's layout: -conf is the mounted Corefile and there is no Corefile.base.
    conf = tmp_path / "Corefile"
    conf.write_text(GOOD)
    argv = ("-localip", "169.254.20.10", "-basecorefile", str(tmp_path / "Corefile.base"), "-conf", str(conf))
    out = node_cache(*argv, "-check", env=ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{conf}: OK (2 server blocks")
    assert "Failed to read node-cache coreFile" in out.stderr and f"serves {conf} as it is" in out.stderr
    conf.write_text(GOOD.replace("cache 30", "cache 30 bogus.zone. {\n        nope\n    }"))
    out = node_cache(*argv, "-check", env=ENV)
    assert out.returncode == 1 and f"{conf}:" in out.stderr
    conf.unlink()
    out = node_cache(*argv, "-check", env=ENV)
    assert out.returncode == 1 and "no Corefile to serve" in out.stderr
