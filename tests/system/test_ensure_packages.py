"""scripts/ensure-packages, the first step of `make test`: as a user who is not root it must stop at
once with the exact install command, and with every command present it must say nothing. As root on
a machine without the packages (simulated in a private mount namespace) it runs one `apt-get update`,
then installs only what is missing.

Runs the real script as ``nobody`` (setpriv), so it needs root to switch users; the list files are
written to a directory ``nobody`` can read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import REPO

SCRIPT = Path(REPO) / "scripts" / "ensure-packages"
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
MISSING_CMD = "nodelocaldns-test-no-such-command"
MISSING_PKG = "nodelocaldns-test-no-such-package"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"),
]


@pytest.fixture
def listdir() -> Iterator[Path]:
    # pytest's base temp directory is private to root; the list must be readable by nobody.
    shared = Path(tempfile.mkdtemp(prefix="nld-ensure-"))
    shared.chmod(0o755)
    try:
        yield shared
    finally:
        shutil.rmtree(shared)


def run_as_nobody(list_file: Path) -> subprocess.CompletedProcess[str]:
    list_file.chmod(0o644)
    return subprocess.run(
        [*AS_NOBODY, str(SCRIPT), str(list_file)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
    )


def test_missing_command_as_non_root_prints_the_install_command_and_stops(listdir: Path) -> None:
    lst = listdir / "demo-packages.txt"
    # sh and ip exist; the middle one does not. Its package must be the only one named.
    lst.write_text(f"# a comment\nsh dash\n\n{MISSING_CMD}   {MISSING_PKG}\nip iproute2\n")
    res = run_as_nobody(lst)
    assert res.returncode == 1, res.stderr
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        f"error: missing Debian packages for demo-packages: {MISSING_PKG}",
        f"run as root:  apt-get update && apt-get install -y --no-install-recommends {MISSING_PKG}",
    ]
    # It stopped before apt-get: nothing was "installed", and the message is all there is.
    assert "installing" not in res.stderr


def test_a_package_named_by_two_missing_commands_is_listed_once(listdir: Path) -> None:
    lst = listdir / "two.txt"
    lst.write_text(
        f"{MISSING_CMD}-a {MISSING_PKG}\n{MISSING_CMD}-b {MISSING_PKG}\n{MISSING_CMD}-c other-pkg\n"
    )
    res = run_as_nobody(lst)
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == (
        f"run as root:  apt-get update && apt-get install -y --no-install-recommends {MISSING_PKG} other-pkg"
    )


def test_sbin_commands_count_as_present_for_a_user_without_sbin_on_path(listdir: Path) -> None:
    lst = listdir / "sbin.txt"
    lst.write_text("ip iproute2\niptables iptables\nsh dash\n")
    if not all(shutil.which(c, path="/usr/sbin:/sbin:/usr/bin:/bin") for c in ("ip", "iptables")):
        pytest.skip("ip or iptables not installed")
    res = run_as_nobody(lst)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_the_suite_list_is_satisfied_silently_here(listdir: Path) -> None:
    """On this machine `make test` already installed everything: the real list passes, silently."""
    lst = listdir / "test-packages.txt"
    lst.write_text((Path(REPO) / "scripts" / "test-packages.txt").read_text())
    res = run_as_nobody(lst)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_a_path_glob_stands_for_a_library_only_package(listdir: Path) -> None:
    """Sanitizer runtimes ship no command: a line starting with / is a file glob that must match."""
    present = listdir / "libdemo-1.a"
    present.write_text("")
    lst = listdir / "libs.txt"
    lst.write_text(f"{listdir}/libdemo-*.a libdemo-dev\n{listdir}/libnone-*.a {MISSING_PKG}\n")
    res = run_as_nobody(lst)
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == (
        f"run as root:  apt-get update && apt-get install -y --no-install-recommends {MISSING_PKG}"
    )
    lst.write_text(f"{listdir}/libdemo-*.a libdemo-dev\n")
    assert run_as_nobody(lst).returncode == 0


def test_the_fuzz_list_names_exactly_the_missing_packages(listdir: Path) -> None:
    """`make fuzz`'s list, on this machine as it is: silent when dpkg has every package, else exit 1
    naming exactly the ones dpkg lacks (`make test` runs before `make fuzz` on a fresh machine)."""
    text = (Path(REPO) / "scripts" / "fuzz-packages.txt").read_text()
    lst = listdir / "fuzz-packages.txt"
    lst.write_text(text)
    wanted = dict.fromkeys(
        line.split()[1] for line in text.splitlines() if line.strip() and not line.startswith("#")
    )

    def installed(pkg: str) -> bool:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        return res.returncode == 0 and res.stdout.endswith("installed") and "not-installed" not in res.stdout

    missing = [p for p in wanted if not installed(p)]
    res = run_as_nobody(lst)
    if not missing:
        assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    else:
        assert res.returncode == 1 and res.stdout == ""
        assert f"apt-get install -y --no-install-recommends {' '.join(missing)}\n" in res.stderr


# A fresh machine, simulated: a private mount namespace in which /usr/bin and /usr/sbin are farms of
# symlinks to the real files, less the named commands (bash's `command -v` still reports a file
# that is there but not executable, so hiding means absent). Nothing is removed from the machine.
HIDE = r"""
set -euo pipefail
mount --make-rprivate /
real=$(mktemp -d "$WORK/real.XXXX")
mount --bind /usr "$real"
hide=" $HIDE_COMMANDS "
for d in bin sbin; do
  farm=$(mktemp -d "$WORK/$d.XXXX")
  chmod 755 "$farm"
  for f in "$real/$d"/*; do
    n=${f##*/}
    [[ "$hide" == *" $n "* ]] || ln -s "$f" "$farm/$n"
  done
  [[ -z "${APT_LOG:-}" ]] || [[ "$d" != bin ]] || { rm -f "$farm/apt-get"; cp "$WORK/apt-get" "$farm/apt-get"; }
  mount --bind "$farm" "/usr/$d"
done
for d in ${HIDE_DIRS:-}; do mount --bind "$(mktemp -d "$WORK/empty.XXXX")" "$d"; done
exec "$@"
"""

needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")


def run_hidden(
    workdir: Path, hidden: list[str], argv: list[str], apt_log: Path | None = None, dirs: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    (workdir / "hide.sh").write_text(HIDE)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C.UTF-8", "WORK": str(workdir)}
    env["HIDE_COMMANDS"] = " ".join(hidden)
    env["HIDE_DIRS"] = " ".join(dirs)
    if apt_log is not None:
        # apt-get itself is the one stand-in: a real install would change this machine.
        (workdir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> {apt_log}\n')
        (workdir / "apt-get").chmod(0o755)
        env["APT_LOG"] = str(apt_log)
    return subprocess.run(
        ["unshare", "-m", "bash", str(workdir / "hide.sh"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def suite_list(listdir: Path) -> Path:
    lst = listdir / "test-packages.txt"
    lst.write_text((Path(REPO) / "scripts" / "test-packages.txt").read_text())
    lst.chmod(0o644)
    return lst


@needs_unshare
def test_as_root_one_update_then_only_the_missing_packages(listdir: Path) -> None:
    """The issue's fresh machine: no dig, unbound-checkconf, nft, iptables-nft-save or dnsmasq."""
    apt_log = listdir / "apt.log"
    hidden = ["dig", "unbound-checkconf", "nft", "iptables-nft-save", "dnsmasq"]
    res = run_hidden(listdir, hidden, [str(SCRIPT), str(suite_list(listdir))], apt_log)
    assert res.returncode == 0, res.stderr
    missing = "dnsutils unbound dnsmasq-base iptables nftables"
    assert res.stderr == f"installing missing Debian packages: {missing}\n"
    assert apt_log.read_text().splitlines() == [
        "apt-get update -qq",
        f"apt-get install -y -qq --no-install-recommends {missing}",
    ]


@needs_unshare
def test_a_machine_without_a_c_compiler_is_told_to_install_one(listdir: Path) -> None:
    """`make test` builds the C extension with NODELOCALDNS_NATIVE_REQUIRED=1: gcc is one of its packages."""
    if shutil.which("gcc", path="/usr/local/bin") is not None:
        pytest.skip("a gcc outside /usr/bin cannot be hidden here")
    compilers = [
        p.name
        for p in Path("/usr/bin").iterdir()
        if re.fullmatch(r"(x86_64-linux-gnu-)?(gcc|cc)(-\d+)?", p.name)
    ]
    res = run_hidden(listdir, [*compilers, "cc", "gcc"], [*AS_NOBODY, str(SCRIPT), str(suite_list(listdir))])
    assert res.returncode == 1, res.stderr
    assert (
        res.stderr.splitlines()[-1]
        == "run as root:  apt-get update && apt-get install -y --no-install-recommends gcc"
    )


@needs_unshare
def test_debian_python_without_headers_is_told_to_install_them(listdir: Path) -> None:
    headers = tuple(str(p) for p in Path("/usr/include").glob("python3*") if p.is_dir())
    if not headers:
        pytest.skip("no Debian Python headers here to hide")
    res = run_hidden(listdir, [], [*AS_NOBODY, str(SCRIPT), str(suite_list(listdir))], dirs=headers)
    assert res.returncode == 1, res.stderr
    assert res.stderr.splitlines()[-1] == (
        "run as root:  apt-get update && apt-get install -y --no-install-recommends python3-dev"
    )
