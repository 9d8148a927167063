"""Run ``nodelocaldns serve`` as a real subprocess for tests, on loopback ports the test picks."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dns.message
import dns.query

from .ports import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    corefile: str
    host: str = "127.0.0.1"
    log_path: str = ""

    def query(
        self, name: str, rdtype: str = "A", tcp: bool = False, timeout: float = 3.0, **kw: object
    ) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
        if tcp:
            return dns.query.tcp(q, self.host, port=self.port, timeout=timeout)
        return dns.query.udp(q, self.host, port=self.port, timeout=timeout)

    def stderr(self) -> str:
        """Everything the server logged (stops it first if still running)."""
        if self.proc.poll() is None:
            self.stop()
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_udp(host: str, port: int, timeout: float = 10.0, proc: subprocess.Popen[str] | None = None) -> None:
    """Wait until something answers DNS on host:port (any rcode)."""
    deadline = time.monotonic() + timeout
    q = dns.message.make_query("probe.invalid.", "A")
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            dns.query.udp(q, host, port=port, timeout=0.2)
            return
        except (OSError, dns.exception.Timeout):
            time.sleep(0.05)
    raise TimeoutError(f"nothing answers on {host}:{port}")


@contextlib.contextmanager
def serve(
    corefile: str,
    port: int | None = None,
    wait: bool = True,
    extra_args: tuple[str, ...] = (),
    nofile: int | None = None,
) -> Iterator[Served]:
    """Start ``nodelocaldns serve --corefile`` with ``{PORT}`` in ``corefile`` replaced by a free port.

    ``nofile`` caps the server's file descriptors (RLIMIT_NOFILE), to run it out of them for real.
    """
    port = port or free_port()
    text = corefile.replace("{PORT}", str(port))
    with tempfile.NamedTemporaryFile("w", suffix=".Corefile", delete=False) as f:
        f.write(text)
        path = f.name
    # The log goes to a file: a pipe nobody reads while the server runs could fill and block it.
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as log:
        log_path = log.name
        proc = subprocess.Popen(
            [sys.executable, "-m", "nodelocaldns", "serve", "--corefile", path, *extra_args],
            stderr=log,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            preexec_fn=None
            if nofile is None
            else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),
        )
    served = Served(proc, port, path, log_path=log_path)
    try:
        if wait:
            wait_udp("127.0.0.1", port, proc=proc)
        yield served
    finally:
        served.stop()
        for leftover in (path, log_path):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
