"""A throw-away CA and server certificate made with the ``openssl`` CLI, for DNS-over-TLS tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path  # the server's certificate, signed by ca
    key: Path


def _run(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True)


def make_certs(directory: Path, sans: str = "DNS:dns.test,IP:127.0.0.1", days: int = 2) -> Certs:
    """A CA (``test-ca``) and a server certificate with ``sans`` (openssl subjectAltName syntax)."""
    d = directory
    _run("req", "-x509", *_EC, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", str(days),
         "-subj", "/CN=test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    _run(
        "req", *_EC, "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"), "-subj", "/CN=dns.test"
    )
    (d / "ext.cnf").write_text(f"subjectAltName={sans}\n")
    _run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
         "-CAcreateserial", "-out", str(d / "server.pem"), "-days", str(days), "-extfile", str(d / "ext.cnf"))  # fmt: skip
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key")
