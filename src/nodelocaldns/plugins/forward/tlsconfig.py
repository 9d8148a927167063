"""TLS for ``tls://`` upstreams: the client context of a ``tls`` line, and Go's verification texts.

``tls`` takes 0 to 3 arguments as CoreDNS's ``NewTLSConfigFromArgs``: none (system CAs), CA, CERT KEY
(a client certificate, system CAs) or CERT KEY CA. The minimum version is TLS 1.2.

The chain is verified by OpenSSL; the name check is ours, with Go's ``x509.VerifyHostname`` rules
(IP SANs for an IP, DNS SANs with a left-most ``*`` for a name, no Common Name fallback), so the
error a failed check produces reads as CoreDNS's does in ``errors`` lines.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any

from nodelocaldns.errors import ConfigError


class TLSConfigError(ConfigError):
    pass


# OpenSSL verify codes that Go reports as x509.UnknownAuthorityError.
_UNKNOWN_AUTHORITY = {2, 18, 19, 20, 21}
_EXPIRED = {9, 10}


def client_context(args: tuple[str, ...] | None) -> ssl.SSLContext:
    """The context every TLS upstream of one ``forward`` shares. Raises TLSConfigError."""
    args = args or ()
    cert, key, ca = "", "", ""
    if len(args) == 1:
        ca = args[0]
    elif len(args) >= 2:
        cert, key = args[0], args[1]
        ca = args[2] if len(args) == 3 else ""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # checked by verify_name after the handshake, with Go's rules
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert:
        for path in (cert, key):
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                raise TLSConfigError(f"could not load TLS cert: open {path}: {_why(e)}") from None
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise TLSConfigError(f"could not load TLS cert: {_why(e)}") from None
    if ca:
        try:
            ctx.load_verify_locations(cafile=ca)
        except FileNotFoundError as e:
            raise TLSConfigError(f"error reading {ca}: open {ca}: {_why(e)}") from None
        except (OSError, ssl.SSLError):
            raise TLSConfigError("could not read root certs: <nil>") from None
    else:
        ctx.load_default_certs()
    return ctx


def _why(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text[:1].lower() + text[1:]


def verify_error(e: ssl.SSLCertVerificationError) -> str:
    """Go's ``tls.CertificateVerificationError`` text for a chain OpenSSL rejected."""
    code = e.verify_code
    if code in _UNKNOWN_AUTHORITY:
        why = "x509: certificate signed by unknown authority"
    elif code in _EXPIRED:
        why = "x509: certificate has expired or is not yet valid"
    else:
        why = f"x509: {e.verify_message}"
    return f"tls: failed to verify certificate: {why}"


def handshake_error(e: ssl.SSLError) -> str:
    """An alert from the server as Go prints it (``remote error: tls: handshake failure``)."""
    reason = e.reason or ""
    if "ALERT_" in reason:
        return "remote error: tls: " + reason.split("ALERT_", 1)[1].replace("_", " ").lower()
    return "tls: " + (reason.replace("_", " ").lower() or str(e))


def _match(pattern: str, host: str) -> bool:
    """Go's matchHostnames: same label count, a ``*`` only as the whole left-most label."""
    pattern, host = pattern.lower().removesuffix("."), host.lower().removesuffix(".")
    if not pattern or not host:
        return False
    p, h = pattern.split("."), host.split(".")
    if len(p) != len(h):
        return False
    return all((i == 0 and part == "*") or part == h[i] for i, part in enumerate(p))


def verify_name(cert: dict[str, Any], name: str) -> str | None:
    """None when the peer certificate is valid for ``name`` (an IP or a DNS name), else Go's error."""
    sans = cert.get("subjectAltName", ())
    dns_names = [v for k, v in sans if k == "DNS"]
    ips = []
    for k, v in sans:
        if k == "IP Address":
            try:
                ips.append(ipaddress.ip_address(v.strip()))
            except ValueError:
                continue
    host = name.removeprefix("[").removesuffix("]")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if ip in ips:
            return None
        if not ips:
            why = f"x509: cannot validate certificate for {host} because it doesn't contain any IP SANs"
            return f"tls: failed to verify certificate: {why}"
        valid = ", ".join(str(a) for a in ips)
    else:
        if any(_match(d, host) for d in dns_names):
            return None
        if not sans:
            cn = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
            if cn and _match(cn[0], host):
                why = "x509: certificate relies on legacy Common Name field, use SANs instead"
                return f"tls: failed to verify certificate: {why}"
        valid = ", ".join(dns_names)
    if not valid:
        why = f"x509: certificate is not valid for any names, but wanted to match {host}"
    else:
        why = f"x509: certificate is valid for {valid}, not {host}"
    return f"tls: failed to verify certificate: {why}"
