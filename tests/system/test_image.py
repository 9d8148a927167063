"""The container image (``make image`` -> build/nodelocaldns-image.oci.tar): format and a smoke test.

Skipped unless the archive exists, or ``NODELOCALDNS_BUILD_IMAGE=1`` asks this module to build it
first (``image/build.sh``, about a minute, needs the Debian mirror and PyPI). The smoke test runs
the image's own entrypoint, without a container engine: the layer is unpacked, and the entrypoint
runs chrooted into it, inside a network namespace this test creates, with the image config's
environment. There it must print its version, serve a query on 169.254.20.10 as the node agent
(upstream: unbound inside the same namespace), pass the image's own ``nodelocaldns doctor``, and
clean up on SIGTERM.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest

from support.addon import AGENT_TEMPLATE
from support.netns import add_bridge, enable_conntrack, netns, netns_available, ns_exec, run_in_netns
from support.server import REPO
from support.upstreams import CLUSTER_ZONES, unbound_server

ARCHIVE = Path(
    os.environ.get("NODELOCALDNS_IMAGE", os.path.join(REPO, "build", "nodelocaldns-image.oci.tar"))
)
BUILD = os.environ.get("NODELOCALDNS_BUILD_IMAGE") == "1"
IP4 = "169.254.20.10"
KUBE_DNS = "198.18.0.10"
UPSTREAM_PORT = 5300
ZONES = {**CLUSTER_ZONES, "example.net.": ["www.example.net. 300 IN A 198.18.2.2"]}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(
        not (ARCHIVE.exists() or BUILD),
        reason=f"no {ARCHIVE} (run `make image` or set NODELOCALDNS_BUILD_IMAGE=1)",
    ),
]


@dataclass
class Image:
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    blobs: dict[str, bytes]  # digest -> content, the layer excluded
    layer_path: Path


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    if BUILD:
        res = subprocess.run(
            [os.path.join(REPO, "image", "build.sh")], capture_output=True, text=True, timeout=1800
        )
        assert res.returncode == 0, res.stdout + res.stderr
    tmp = tmp_path_factory.mktemp("oci")
    with tarfile.open(ARCHIVE) as tar:
        names = tar.getnames()
        assert {"oci-layout", "index.json"} <= set(names)
        assert json.loads(tar.extractfile("oci-layout").read()) == {"imageLayoutVersion": "1.0.0"}  # type: ignore[union-attr]
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        (desc,) = index["manifests"]
        blobs: dict[str, bytes] = {}
        layer_path = tmp / "layer.tar.gz"
        for member in tar.getmembers():
            if not member.name.startswith("blobs/sha256/") or not member.isfile():
                continue
            digest = "sha256:" + member.name.rsplit("/", 1)[1]
            f = tar.extractfile(member)
            assert f is not None
            if member.size > 1 << 20:
                with open(layer_path, "wb") as out:
                    shutil.copyfileobj(f, out)
                assert _sha(layer_path.read_bytes()) == digest
            else:
                data = f.read()
                assert _sha(data) == digest, member.name
                blobs[digest] = data
    manifest = json.loads(blobs[desc["digest"]])
    assert desc["size"] == len(blobs[desc["digest"]])
    config = json.loads(blobs[manifest["config"]["digest"]])
    return Image(index, manifest, config, blobs, layer_path)


def test_archive_is_an_oci_image_with_the_node_cache_entrypoint(image: Image) -> None:
    (desc,) = image.index["manifests"]
    assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert desc["annotations"]["org.opencontainers.image.ref.name"]
    assert image.manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert image.manifest["config"]["size"] == len(image.blobs[image.manifest["config"]["digest"]])
    (layer,) = image.manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert layer["size"] == image.layer_path.stat().st_size
    # diff_id is the digest of the uncompressed layer
    h = hashlib.sha256()
    with gzip.open(image.layer_path) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert image.config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]}
    assert image.config["os"] == "linux"
    assert image.config["config"]["Entrypoint"] == ["/opt/nodelocaldns/bin/node-cache"]
    if shutil.which("umoci"):  # an independent reader of the layout agrees
        layout = image.layer_path.parent / "layout"
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(layout, filter="tar")
        res = subprocess.run(
            ["umoci", "ls", "--layout", str(layout)], capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0 and desc["annotations"]["org.opencontainers.image.ref.name"] in res.stdout


@pytest.fixture(scope="module")
def rootfs(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("rootfs")
    subprocess.run(
        ["tar", "-xzf", str(image.layer_path), "-C", str(root), "--numeric-owner"], check=True, timeout=300
    )
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def in_image(ns: str, root: Path, image: Image, *argv: str) -> list[str]:
    """argv run as the container runtime would: chrooted into the rootfs with the config's Env,
    /proc and /dev mounted in a private mount namespace (gone when the process exits)."""
    env = image.config["config"]["Env"]
    script = 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"'
    return [
        "ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
        "sh", "-c", script, str(root), "/usr/bin/env", "-i", *env, *argv,
    ]  # fmt: skip


def test_entrypoint_prints_its_version(image: Image, rootfs: Path) -> None:
    entry = image.config["config"]["Entrypoint"]
    with netns("nldimg") as ns:
        res = subprocess.run(
            in_image(ns, rootfs, image, *entry, "-version"), capture_output=True, text=True, timeout=60
        )
    assert res.returncode == 0, res.stderr
    version = image.config["config"]["Labels"]["org.opencontainers.image.version"]
    assert f"nodelocaldns-{version}" in res.stdout
    for tool in ("iptables-nft-save", "iptables-legacy-save", "nft", "ip", "python3"):
        assert any((rootfs / d / tool).exists() for d in ("usr/sbin", "usr/bin", "sbin", "bin")), tool


def test_image_ships_the_native_hot_path(image: Image, rootfs: Path) -> None:
    """The wheel carries the compiled extension and the image's own Python loads it."""
    code = "from nodelocaldns import native; print(native.native_available(), native.native_status())"
    with netns("nldimg") as ns:
        res = subprocess.run(
            in_image(ns, rootfs, image, "/opt/nodelocaldns/bin/python", "-c", code),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True native"


def test_node_cache_path_of_the_upstream_image_runs_the_agent(image: Image, rootfs: Path) -> None:
    """Manifests written for the upstream image say `command: ["/node-cache"]`."""
    assert (rootfs / "node-cache").is_symlink()
    with netns("nldimg") as ns:
        res = subprocess.run(
            in_image(ns, rootfs, image, "/node-cache", "-version"), capture_output=True, text=True, timeout=60
        )
        usage = subprocess.run(
            in_image(ns, rootfs, image, "/node-cache", "-h"), capture_output=True, text=True, timeout=60
        )
    assert res.returncode == 0, res.stderr
    version = image.config["config"]["Labels"]["org.opencontainers.image.version"]
    assert res.stdout.startswith(f"nodelocaldns-{version}\n") and "node-cache drop-in" in res.stdout
    assert usage.returncode == 0 and "-localip" in usage.stderr and "-basecorefile" in usage.stderr


def _answer(ip: str, name: str) -> list[str]:
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), ip, port=53, timeout=0.5)
    except (OSError, dns.exception.Timeout):
        return []
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


@contextlib.contextmanager
def _stopping(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`")
def test_image_serves_as_the_node_agent_and_passes_doctor(image: Image, rootfs: Path) -> None:
    (rootfs / "etc" / "coredns").mkdir(exist_ok=True)
    (rootfs / "etc" / "coredns" / "Corefile.base").write_text(AGENT_TEMPLATE.format(up=UPSTREAM_PORT))
    entry = image.config["config"]["Entrypoint"]
    args = [
        "-localip", f"{IP4},{KUBE_DNS}", "-conf", "/etc/Corefile", "-upstreamsvc", "kube-dns-upstream",
        "-pidfile", "/tmp/node-cache.pid", "-syncinterval", "1s",
    ]  # fmt: skip
    env = ["KUBE_DNS_UPSTREAM_SERVICE_HOST=127.0.0.1"]
    with netns("nldimg") as ns:
        add_bridge(ns, "nodelocaldns")  # this kernel has no dummy driver; the agent reuses the link
        enable_conntrack(ns)
        cm = unbound_server(ZONES, port=UPSTREAM_PORT)
        upstream = run_in_netns(ns, cm.__enter__)
        log = rootfs / "tmp" / "agent.log"
        try:
            with open(log, "wb") as out:
                argv = in_image(ns, rootfs, image, *env, *entry, *args)
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            with _stopping(proc):
                deadline = time.monotonic() + 30
                while not (
                    (rootfs / "tmp" / "node-cache.pid").exists()
                    and run_in_netns(ns, lambda: _answer(IP4, "kubernetes.default.svc.cluster.local."))
                ):
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
                answers = run_in_netns(ns, lambda: _answer(KUBE_DNS, "www.example.net."))
                assert any("198.18.2.2" in a for a in answers), answers
                assert upstream.query_count("www.example.net.") == 1

                doctor = [
                    "nodelocaldns", "doctor", "--json", "--local-ip", f"{IP4},{KUBE_DNS}",
                    "--external-name", "www.example.net", "--timeout", "1",
                ]  # fmt: skip
                for _ in range(20):  # the first rule sync follows the pidfile by a moment
                    res = subprocess.run(
                        in_image(ns, rootfs, image, *doctor), capture_output=True, text=True, timeout=60
                    )
                    if res.returncode == 0:
                        break
                    time.sleep(0.3)
                report = json.loads(res.stdout)
                assert res.returncode == 0, json.dumps(report, indent=1) + log.read_text()
                assert {c["status"] for c in report["checks"]} == {"ok"}

                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 0, log.read_text()
            # the agent's teardown removed its addresses and every rule, from inside the image
            assert ns_exec(ns, "ip", "-o", "addr", "show", "dev", "nodelocaldns").stdout.strip() == ""
            assert "NodeLocal DNS Cache" not in ns_exec(ns, "iptables-nft-save").stdout
        finally:
            run_in_netns(ns, lambda: cm.__exit__(None, None, None))
