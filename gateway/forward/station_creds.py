"""Basics Station credential files (tc.trust, tc.crt, tc.key) into a TLS context and headers.

The four authentication modes, as the network servers issue them: no TLS (ws://), server
authentication only (trust), mutual TLS (trust + crt + key), and server authentication with
a token (trust + key holding HTTP header lines such as ``Authorization: Bearer ...``). An
empty file counts as absent, as Basics Station treats it. Token values never reach a log.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509

from gateway.config import StationForward
from gateway.forward.tls import describe_tls_error

#: Largest credential file read (a CA bundle of a few dozen certificates fits easily).
MAX_CRED_BYTES: Final = 256 << 10
_HEADER_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Credentials:
    """What a connection needs: a TLS context (None for ws://) and extra HTTP headers."""

    mode: str  # "none", "server", "client_cert", "token"
    ssl: ssl.SSLContext | None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    warnings: tuple[str, ...] = ()


def _exposed(section: str, path: Path) -> tuple[str, ...]:
    """A key or token file other users can read: say so (it still works)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return ()
    if mode & 0o077:
        return (f"{section}.key {path}: readable by other users (mode {mode:04o}); it holds a secret: "
                f"chmod 600 {path}",)
    return ()


def _read(section: str, key: str, path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CRED_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{section}.{key} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_CRED_BYTES:
        raise ValueError(f"{section}.{key} {path}: larger than {MAX_CRED_BYTES} bytes; is it the right file?")
    return data if data.strip() else None  # empty: absent, as Basics Station reads it


def parse_token_headers(text: str, where: str) -> dict[str, str]:
    """``Name: value`` lines (CRLF or LF) -> headers; a malformed line is named by number only.

    The same rule as Basics Station: a field name of letters, digits, ``-`` and ``_``, then
    a colon and a space. A single line without a colon is not accepted: we would have to
    guess the header name, and a wrong guess looks like a wrong token to the server.
    """
    headers: dict[str, str] = {}
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    for n, line in enumerate(lines, 1):
        name, sep, value = line.partition(": ")
        if not sep or not _HEADER_NAME.fullmatch(name) or not value.strip():
            raise ValueError(f"{where}: line {n} is not an HTTP header line \"Name: value\" (e.g. "
                             "\"Authorization: Bearer NNSXS...\"); the token file holds header "
                             "lines, one per line")
        if "\r" in value:
            raise ValueError(f"{where}: line {n} holds a stray carriage return")
        headers[name] = value.strip()
    return headers


def _check_validity(section: str, path: Path | None, pem: bytes, now: dt.datetime) -> None:
    """Our own certificate out of its validity window: say so before a server cuts us off.

    Under TLS 1.3 the server checks the client certificate after the handshake and just
    closes; the client then sees only "server disconnected", which tells a technician nothing.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return  # not PEM (DER, a chain file...): ssl decides below
    if now > cert.not_valid_after_utc:
        raise ValueError(f"{section}.crt {path}: the client certificate expired on "
                         f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; get a new crt (tc.crt) and key "
                         "from the network server (or check this gateway's clock)")
    if now < cert.not_valid_before_utc:
        raise ValueError(f"{section}.crt {path}: the client certificate is valid only from "
                         f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; is this gateway's clock right?")


def load_credentials(cfg: StationForward, section: str,
                     now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> Credentials:
    """Read and check the files; a ValueError names the key, the path and what to do."""
    if cfg.uri.lower().startswith("ws://"):
        return Credentials("none", None)
    if cfg.trust is None:
        raise ValueError(f"{section}.trust: required for wss:// (the server's CA, tc.trust)")
    trust = _read(section, "trust", cfg.trust)
    if trust is None:
        raise ValueError(f"{section}.trust {cfg.trust}: empty; wss:// needs the server's CA certificate")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if trust.lstrip().startswith(b"-----BEGIN"):
            ctx.load_verify_locations(cadata=trust.decode("ascii", "replace"))
        else:  # DER, as some tools export it
            ctx.load_verify_locations(cadata=trust)
    except (ssl.SSLError, ValueError) as exc:
        why = exc.reason if isinstance(exc, ssl.SSLError) else exc
        raise ValueError(f"{section}.trust {cfg.trust}: not a CA certificate in PEM or DER ({why})") from exc
    crt = None if cfg.crt is None else _read(section, "crt", cfg.crt)
    key = None if cfg.key is None else _read(section, "key", cfg.key)
    if crt is not None:
        if key is None:
            raise ValueError(f"{section}.key: crt {cfg.crt} needs its private key (tc.key)")
        _check_validity(section, cfg.crt, crt, now())
        try:
            ctx.load_cert_chain(str(cfg.crt), str(cfg.key))
        except ssl.SSLError as exc:
            raise ValueError(f"{section}.crt {cfg.crt} / key {cfg.key}: unusable ({exc.reason or exc}); "
                             "both PEM, the key the certificate's?") from exc
        assert cfg.key is not None  # key (its content) was read from it
        return Credentials("client_cert", ctx, warnings=_exposed(section, cfg.key))
    if key is not None:
        try:
            text = key.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"{section}.key {cfg.key}: without crt it must hold token header lines "
                             "(ASCII text), not a binary key") from None
        if "PRIVATE KEY-----" in text:
            raise ValueError(f"{section}.key {cfg.key}: a private key without its certificate; set "
                             "crt (tc.crt) too, or give the token file the server issued")
        assert cfg.key is not None
        return Credentials("token", ctx, parse_token_headers(text, f"{section}.key {cfg.key}"),
                           _exposed(section, cfg.key))
    return Credentials("server", ctx)


def describe_connect_error(exc: BaseException) -> str:
    """A TLS or handshake failure in an operator's words (which file to look at)."""
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "EXPIRED" in reason and not isinstance(exc, ssl.SSLCertVerificationError):
            return (f"TLS: the server refused our client certificate as expired: get a new crt "
                    f"(tc.crt) from the network server; {exc}")
        text = describe_tls_error(exc)
        return (text.replace("ca_file", "trust (tc.trust)").replace("cert_file/key_file", "crt/key")
                .replace("set cert_file and key_file", "set crt and key (tc.crt, tc.key)"))
    return str(exc)
