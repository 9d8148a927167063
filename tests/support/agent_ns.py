"""A small Kubernetes node in two network namespaces, and a DaemonSet container started on it.

``node_and_pod(tmp)`` builds what the node-cache agent expects to find on a node:

* a "node" namespace with a pre-created ``nodelocaldns`` bridge (this kernel has no dummy driver),
  a kube-dns stand-in (real unbound on 198.18.2.53, answering from local data only), kube-proxy-style
  DNAT from the kube-dns ClusterIP 198.18.0.10 and the kube-dns-upstream ClusterIP 198.18.0.20 to it,
  and conntrack switched on, as kube-proxy's rules would;
* a "pod" namespace on a veth pair with a default route via the node.

``run_container(node, container, volumes, configmaps, env)`` plays kubelet for one container of a
rendered (hostNetwork) DaemonSet: the container's ``args`` go to the image's entrypoint unchanged,
in the node namespace and a private mount namespace where ``/etc`` is an overlay (so the agent may
write ``/etc/Corefile`` without touching the machine's ``/etc``), each ConfigMap volume is a
directory bind-mounted at its ``mountPath`` with the ConfigMap's keys (or ``items``) as files,
``/etc/resolv.conf`` names the kube-dns stand-in (``dnsPolicy: Default`` on this node), ``/tmp``
is the container's own tmpfs and ``/proc/sys`` is read-only unless the container is privileged.
A ``command`` replaces the entrypoint; ``run_init_containers`` runs a pod's init containers first. The process keeps only the capabilities the container's
``securityContext`` leaves it (the runtime's default set, minus ``drop``, plus ``add``), as a container
runtime does, and so does every ``exec_argv`` command. Every address involved lives inside these
namespaces.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .netns import add_bridge, addresses, enable_conntrack, netns, ns_exec, run_in_netns
from .upstreams import CLUSTER_ZONES, Query, parse_unbound_log, probe, unbound_config

NODE_IP, POD_IP = "198.18.1.1", "198.18.1.2"
LINK_LOCAL = "169.254.20.10"
KUBE_DNS = "198.18.0.10"  # the kube-dns ClusterIP
KUBE_DNS_UPSTREAM = "198.18.0.20"  # the kube-dns-upstream ClusterIP
KUBE_DNS_POD = "198.18.2.53"  # where both ClusterIPs are DNAT'd: the kube-dns stand-in
IFACE = "nodelocaldns"
EXTERNAL_NAME = "www.example.org."
RULE_COMMENT = "NodeLocal DNS Cache"

# What containerd and Docker grant a container whose securityContext names no capabilities (their
# default OCI spec); `drop` removes from it (ALL empties it) and `add` adds to it.
RUNTIME_DEFAULT_CAPS = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    }
)  # fmt: skip

# Linux capability numbers (linux/capability.h) of the ones above and NET_ADMIN, to read CapEff.
CAP_BITS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
    "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_ADMIN": 12, "NET_RAW": 13, "SYS_CHROOT": 18,
    "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31,
}  # fmt: skip


def effective_capabilities(pid: int) -> frozenset[str]:
    """CapEff of a process as names (unknown bits as ``bit N``)."""
    status = Path(f"/proc/{pid}/status").read_text()
    (mask,) = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")]
    names = {bit: name for name, bit in CAP_BITS.items()}
    return frozenset(names.get(b, f"bit {b}") for b in range(64) if mask >> b & 1)


KUBE_DNS_ZONES: dict[str, list[str]] = {
    **CLUSTER_ZONES,
    # Also the node's "upstream resolver" for names outside the cluster (via resolv.conf).
    "example.org.": [f"{EXTERNAL_NAME} 300 IN A 198.18.9.9"],
}


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - start


# ---------------------------------------------------------------- unbound inside a namespace


@dataclass
class NsUnbound:
    """unbound running inside a namespace, answering from local data only."""

    ns: str
    ip: str
    workdir: Path
    proc: subprocess.Popen[bytes]

    def queries(self) -> list[Query]:
        try:
            text = (self.workdir / "unbound.log").read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [q for q in parse_unbound_log(text) if not q.name.startswith("probe.")]

    def count(self, name: str, client: str | None = None) -> int:
        return sum(
            1
            for q in self.queries()
            if q.name.lower() == name.lower() and (client is None or q.client == client)
        )

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@contextlib.contextmanager
def ns_unbound(ns: str, ip: str, zones: dict[str, list[str]], tmp: Path) -> Iterator[NsUnbound]:
    workdir = tmp / f"unbound-{ip}"
    workdir.mkdir()
    # The loopback listener on a port of its own only keeps two servers from colliding there;
    # clients use ip:53, all of them inside the namespace. kube-dns (CoreDNS) puts no cap on TCP
    # connections; unbound's default of 10 serves the rest ~100 ms apart from its accept backlog, so a
    # newly started agent's first force_tcp misses under load (one connection each) queued for up to 2.6 s.
    conf = unbound_config(
        port=5300 + int(ip.rsplit(".", 2)[1]),
        workdir=workdir,
        zones=zones,
        extra_conf=f"interface: {ip}@53\naccess-control: 0.0.0.0/0 allow\naccess-control: ::/0 allow\n"
        "incoming-num-tcp: 1000",
    )
    (workdir / "unbound.conf").write_text(conf)
    with open(workdir / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "/usr/sbin/unbound", "-d", "-c", str(workdir / "unbound.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    server = NsUnbound(ns, ip, workdir, proc)
    try:
        deadline = time.monotonic() + 10
        while not run_in_netns(ns, lambda: probe(ip, 53, timeout=0.2)):
            assert proc.poll() is None, (workdir / "stderr.log").read_text()
            assert time.monotonic() < deadline, f"unbound on {ip} did not come up"
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- the node and the pod


@dataclass
class NodeAndPod:
    node: str
    pod: str
    kube_dns: NsUnbound
    tmp: Path


def kube_proxy_dnat(node: str) -> None:
    for chain in ("PREROUTING", "OUTPUT"):
        for vip in (KUBE_DNS, KUBE_DNS_UPSTREAM):
            for proto in ("udp", "tcp"):
                ns_exec(node, "iptables", "-t", "nat", "-A", chain, "-d", vip, "-p", proto, "--dport", "53",
                        "-j", "DNAT", "--to-destination", f"{KUBE_DNS_POD}:53")  # fmt: skip


@contextlib.contextmanager
def node_and_pod(tmp: Path, prefix: str = "nldn") -> Iterator[NodeAndPod]:
    """The node and pod namespaces, the kube-dns stand-in and kube-proxy's DNAT; all removed on exit."""
    with netns(f"{prefix}node") as node, netns(f"{prefix}pod") as pod, contextlib.ExitStack() as stack:
        ns_exec(node, "ip", "link", "add", "vnode", "type", "veth", "peer", "name", "vpod", "netns", pod)
        ns_exec(node, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "vnode")
        ns_exec(node, "ip", "link", "set", "vnode", "up")
        ns_exec(pod, "ip", "addr", "add", f"{POD_IP}/24", "dev", "vpod")
        ns_exec(pod, "ip", "link", "set", "vpod", "up")
        ns_exec(pod, "ip", "route", "add", "default", "via", NODE_IP)
        add_bridge(node, IFACE)  # what node-cache's dummy would be
        add_bridge(node, "kdns0")  # stands in for the kube-dns pods' network
        ns_exec(node, "ip", "addr", "add", f"{KUBE_DNS_POD}/32", "dev", "kdns0")
        # The Service CIDR needs a route for the agent's own packets to be DNAT'd (a real node has
        # a default route); it points at the pod link, inside our namespaces.
        ns_exec(node, "ip", "route", "add", "198.18.0.0/24", "dev", "vnode")
        kube_proxy_dnat(node)
        enable_conntrack(node)
        kube_dns = stack.enter_context(ns_unbound(node, KUBE_DNS_POD, KUBE_DNS_ZONES, tmp))
        yield NodeAndPod(node, pod, kube_dns, tmp)


def rule_lines(node: str) -> list[str]:
    """node-cache's rules as iptables-save / nft print them (read without the agent's own parser)."""
    lines: list[str] = []
    for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        out = ns_exec(node, tool, check=False).stdout
        lines += [line for line in out.splitlines() if RULE_COMMENT in line]
    nft = ns_exec(node, "nft", "list", "table", "inet", "nodelocaldns", check=False).stdout
    lines += [line.strip() for line in nft.splitlines() if RULE_COMMENT in line]
    return lines + owned_rule_lines(node)


def owned_rule_lines(node: str) -> list[str]:
    """The rules in the agents' own tables (``inet nodelocaldns-agent-*``, one per live agent), each
    once: two peers during a handover hold the same rules, and either copy does the job. Counters
    are cut off so the two copies compare equal."""
    found: set[str] = set()
    tables = ns_exec(node, "nft", "list", "tables", check=False).stdout
    for line in tables.splitlines():
        if line.startswith("table inet nodelocaldns-agent-"):
            text = ns_exec(node, "nft", "list", "table", "inet", line.split()[2], check=False).stdout
            found |= {
                re.sub(r" counter packets \d+ bytes \d+", " counter", ln.strip())
                for ln in text.splitlines()
                if RULE_COMMENT in ln
            }
    return sorted(found)


def local_addresses(node: str) -> set[str]:
    return addresses(node, IFACE)


def scrub(node: str) -> None:
    """Remove whatever rules and addresses a test left behind, the way an operator would."""
    for variant in ("nft", "legacy"):
        for family in ("iptables", "ip6tables"):
            tool = f"{family}-{variant}"
            for line in ns_exec(node, f"{tool}-save", check=False).stdout.splitlines():
                if RULE_COMMENT in line:
                    table = "raw" if "NOTRACK" in line else "filter"
                    spec = line.replace("-A ", "-D ", 1)
                    ns_exec(node, "sh", "-c", f"{tool} -t {table} {spec}", check=False)
    ns_exec(node, "nft", "delete", "table", "inet", "nodelocaldns", check=False)
    ns_exec(node, "ip", "addr", "flush", "dev", IFACE, check=False)


def listening_ports(node: str) -> set[tuple[str, int]]:
    """(``UDP``/``TCP``, port) of every listening socket in the namespace."""
    found: set[tuple[str, int]] = set()
    for proto, flag in (("UDP", "-Hlnu"), ("TCP", "-Hlnt")):
        for line in ns_exec(node, "ss", flag).stdout.splitlines():
            local = line.split()[3]
            found.add((proto, int(local.rsplit(":", 1)[1])))
    return found


@dataclass(frozen=True)
class Dig:
    status: str
    answers: tuple[str, ...]


def dig(ns: str, server: str, name: str, *, tcp: bool = False, qtype: str = "A") -> Dig:
    """A real client in namespace ``ns``."""
    argv = ["dig", f"@{server}", name, qtype, "+time=2", "+tries=1", "+noall", "+comments", "+answer"]
    if tcp:
        argv.append("+tcp")
    out = ns_exec(ns, *argv, check=False).stdout
    status = re.search(r"status: (\w+)", out)
    answers = tuple(
        line.split()[-1] for line in out.splitlines() if line.strip() and not line.startswith(";")
    )
    return Dig(status.group(1) if status else "NO-REPLY", answers)


def http_get(ns: str, url: str, timeout: float = 3.0) -> tuple[int, str]:
    """GET from inside ``ns``; (0, error) when nothing answered."""

    def get() -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    return run_in_netns(ns, get)


# ---------------------------------------------------------------- a DaemonSet container on the node


@dataclass
class Container:
    """One container of a rendered DaemonSet, running on the node (hostNetwork)."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    node: str
    restrict: list[str]  # setpriv argv: the container's capabilities

    def path(self, inside: str) -> Path:
        """A path as the container sees it (through its mount namespace)."""
        return Path(f"/proc/{self.proc.pid}/root{inside}")

    def log(self) -> str:
        return (self.workdir / "container.log").read_text(errors="replace")

    def exec_argv(self, *argv: str) -> list[str]:
        """``kubectl exec``: the container's network and mount namespaces."""
        return ["nsenter", "--target", str(self.proc.pid), "--mount", "--net", "--", *self.restrict, *argv]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"container did not exit after {signal.Signals(sig).name}:\n{self.log()}"
                ) from None
        return self.proc.returncode


def _write_volume(
    target: Path, volume: Mapping[str, Any], configmaps: Mapping[str, Mapping[str, str]]
) -> None:
    """A ConfigMap volume's files, as kubelet would project them."""
    cm = volume["configMap"]
    data = configmaps.get(cm["name"])
    if data is None:
        assert cm.get("optional"), f"ConfigMap {cm['name']} is missing and not optional"
        data = {}
    items = cm.get("items") or [{"key": k, "path": k} for k in data]
    target.mkdir(parents=True)
    for item in items:
        if item["key"] in data:
            dest = target / item["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(data[item["key"]])


REPO = str(Path(__file__).resolve().parents[2])  # the checkout: its .venv holds the entrypoint


def entrypoint() -> str:
    """The image's entrypoint, the ``node-cache`` console script, from this interpreter's venv."""
    script = shutil.which("node-cache", path=os.path.dirname(sys.executable))
    assert script is not None, "the node-cache console script is not installed"
    return script


def _command(container: Mapping[str, Any]) -> list[str]:
    """The container's ``command`` (its program from the image's venv, as the image's PATH finds
    it), else the image's entrypoint."""
    command = container.get("command")
    if not command:
        return [entrypoint()]
    program = shutil.which(command[0], path=os.path.dirname(sys.executable))
    assert program is not None, f"{command[0]} is not in the image"
    return [program, *command[1:]]


def container_capabilities(security: Mapping[str, Any]) -> frozenset[str]:
    """The capability set a runtime gives a container with this ``securityContext``."""
    caps = security.get("capabilities", {})
    drop = {c.upper() for c in caps.get("drop", [])}
    kept = frozenset() if "ALL" in drop else RUNTIME_DEFAULT_CAPS - drop
    return kept | {c.upper() for c in caps.get("add", [])}


def _restricted(security: Mapping[str, Any]) -> list[str]:
    """setpriv argv that leaves a root process only the container's capabilities (a privileged
    container keeps them all)."""
    if security.get("privileged"):
        return []
    caps = ",".join(f"+{c.lower()}" for c in sorted(container_capabilities(security)))
    argv = ["setpriv", f"--bounding-set=-all{',' + caps if caps else ''}", "--inh-caps=-all"]
    if security.get("allowPrivilegeEscalation") is False:
        argv.append("--no-new-privs")
    return argv


@contextlib.contextmanager
def run_container(
    topo: NodeAndPod,
    container: Mapping[str, Any],
    volumes: list[Mapping[str, Any]],
    configmaps: Mapping[str, Mapping[str, str]],
    env: Mapping[str, str],
    name: str = "container",
    scrub_after: bool = True,
) -> Iterator[Container]:
    """Start ``container`` (a DaemonSet pod template's container) on the node; kill and scrub on exit
    (``scrub_after=False``: another container still runs on the node and owns what is there)."""
    workdir = topo.tmp / name
    upper, work = workdir / "etc-upper", workdir / "etc-work"
    upper.mkdir(parents=True)
    work.mkdir()
    (upper / "resolv.conf").write_text(f"nameserver {KUBE_DNS_POD}\n")
    by_name = {v["name"]: v for v in volumes}
    mounts: list[str] = []
    for mount in container.get("volumeMounts", []):
        volume = by_name[mount["name"]]
        path = mount["mountPath"]
        if "hostPath" in volume:
            # Shared with the node as it is (e.g. /run/xtables.lock): nothing to project.
            assert volume["hostPath"]["path"] == path, f"hostPath {volume} mounted elsewhere: {path}"
            continue
        assert "configMap" in volume, f"unsupported volume {volume}"
        # Mount points are made inside the overlay; anywhere else mkdir would touch the machine.
        assert path.startswith("/etc/"), f"ConfigMap volume outside /etc: {path}"
        source = workdir / "volumes" / mount["name"]
        _write_volume(source, volume, configmaps)
        mounts.append(
            f"mkdir -p {shlex.quote(path)} && mount --bind {shlex.quote(str(source))} {shlex.quote(path)}"
        )
    # A private /tmp keeps -pidfile /tmp/node-cache.pid off the machine. A checkout under /tmp (CI clones
    # can live there) would vanish under it, so the old /tmp stays reachable through a mount point in the
    # overlaid /etc and the checkout is bound back to its own path.
    keep = []
    if REPO.startswith("/tmp/"):
        q = shlex.quote(REPO)
        keep = [
            "mkdir -p /etc/.old-tmp && mount --bind /tmp /etc/.old-tmp",
            "mount -t tmpfs -o mode=1777 container-tmp /tmp",
            f"mkdir -p {q} && mount --bind /etc/.old-tmp/{shlex.quote(REPO[len('/tmp/') :])} {q}",
        ]
    else:
        keep = ["mount -t tmpfs -o mode=1777 container-tmp /tmp"]
    security = container.get("securityContext", {})
    restrict = _restricted(security)
    # The runtime mounts /proc/sys read-only in every container that is not privileged (the OCI
    # default spec's readonlyPaths): the sysctls of the node's namespace are not the pod's to change.
    readonly = [] if security.get("privileged") else [
        "mount --bind /proc/sys /proc/sys", "mount -o remount,bind,ro /proc/sys",
    ]  # fmt: skip
    script = " && ".join(
        [
            "set -e",
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc",
            *mounts,
            *keep,
            *readonly,
            # Mounting above needed CAP_SYS_ADMIN; the container's own process gets its set only.
            f'exec {shlex.join(restrict)} "$@"',
        ]
    )
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NODELOCALDNS_", "KUBE_"))}
    full_env.update(env)
    full_env["PYTHONUNBUFFERED"] = "1"  # the log file is read while the agent runs
    # Every exec keeps the pid: ip netns exec, unshare (no --fork), sh's exec, the script's interpreter.
    argv = [
        "ip", "netns", "exec", topo.node, "unshare", "--mount", "--propagation", "private",
        "sh", "-c", script, "sh", *_command(container), *container.get("args", []),
    ]  # fmt: skip
    with open(workdir / "container.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=full_env)
    try:
        yield Container(proc, workdir, topo.node, restrict)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if scrub_after:
            scrub(topo.node)


def run_init_containers(
    topo: NodeAndPod,
    pod_spec: Mapping[str, Any],
    configmaps: Mapping[str, Mapping[str, str]],
    env: Mapping[str, str],
    timeout: float = 30.0,
    pod: str = "pod",
) -> list[str]:
    """Kubelet's first step: each init container to completion, in order; their logs. An init
    container that fails would keep the pod from starting: that fails the test."""
    logs = []
    for init in pod_spec.get("initContainers", []):
        with run_container(
            topo,
            init,
            pod_spec.get("volumes", []),
            configmaps,
            env,
            name=f"{pod}-init-{init['name']}",
            scrub_after=False,
        ) as c:
            try:
                rc = c.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"init container {init['name']} still runs after {timeout} s") from None
            assert rc == 0, f"init container {init['name']} exited {rc}:\n{c.log()}"
            logs.append(c.log())
    return logs
