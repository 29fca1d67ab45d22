"""TLS client contexts for the forwarders, and what a TLS failure means for an operator.

Shared by the MQTT and HTTP forwarders: every unusable file is named with its config key.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def client_tls_context(section: str, *, ca_file: Path | None, cert_file: Path | None,
                       key_file: Path | None) -> ssl.SSLContext:
    """A verifying client context; an unusable file raises ValueError naming the key and path.

    ``section`` (e.g. ``forward.mqtt city``) goes into the message so the technician knows
    which part of the configuration to fix.
    """
    def check(key: str, path: Path) -> None:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise ValueError(f"{section}: {key} {path}: {exc.strerror or exc}") from exc

    if key_file is not None and cert_file is None:
        raise ValueError(f"{section}: key_file {key_file} given without cert_file; set both or neither")
    ctx = ssl.create_default_context()
    if ca_file is not None:
        check("ca_file", ca_file)
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except ssl.SSLError as exc:
            raise ValueError(f"{section}: ca_file {ca_file}: not a PEM CA certificate "
                             f"({exc.reason or exc})") from exc
    if cert_file is not None:
        check("cert_file", cert_file)
        if key_file is not None:
            check("key_file", key_file)
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except ssl.SSLError as exc:
            raise ValueError(f"{section}: cert_file {cert_file} / key_file {key_file}: unusable "
                             f"({exc.reason or exc}); is the key the certificate's, both PEM?") from exc
    return ctx


def describe_tls_error(exc: ssl.SSLError) -> str:
    """What a TLS failure means for the operator, with the library's own words after it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or exc.reason
        return f"TLS certificate verify failed ({why}): check ca_file and the server's name; {exc}"
    reason = (exc.reason or "").upper()
    if "CERTIFICATE_REQUIRED" in reason:
        return f"TLS: the server requires a client certificate: set cert_file and key_file; {exc}"
    if "BAD_CERTIFICATE" in reason or "UNKNOWN_CA" in reason or "CERTIFICATE_UNKNOWN" in reason:
        return f"TLS: the server rejected our client certificate: check cert_file/key_file and its CA; {exc}"
    return f"TLS failure: {exc}"
