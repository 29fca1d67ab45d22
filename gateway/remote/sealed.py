"""Secrets sealed to one gateway: libsodium sealed boxes (X25519) via PyNaCl.

The operator seals a secret to a gateway's public key (`schwebe fleet seal PUBKEY`); the
repository, web server and broker only ever carry ``enc:v1:<base64>``. The gateway opens
it with its private key, ``<data_dir>/remote/gateway.key`` (0600, created on first use).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

PREFIX = "enc:v1:"
KEY_FILE = "gateway.key"


class SealedError(ValueError):
    """A sealed value that cannot be opened or a key that cannot be read."""


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SealedError(f"{what} is not base64") from None


def seal(pubkey_b64: str, plaintext: str) -> str:
    raw = _b64(pubkey_b64, "public key")
    if len(raw) != 32:
        raise SealedError(f"public key is {len(raw)} bytes, an X25519 key is 32: copy the "
                          "whole output of `schwebe config pubkey`")
    box = SealedBox(PublicKey(raw))
    return PREFIX + base64.b64encode(box.encrypt(plaintext.encode("utf-8"))).decode("ascii")


def key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "remote" / KEY_FILE


def _load_private(path: Path) -> PrivateKey:
    try:
        raw = _b64(path.read_text(encoding="ascii"), f"{path}")
    except OSError as exc:
        raise SealedError(f"{path}: cannot read the gateway key: {exc.strerror}") from None
    if len(raw) != 32:
        raise SealedError(f"{path}: not a 32-byte X25519 private key")
    return PrivateKey(raw)


def gateway_keypair(data_dir: Path) -> str:
    """The gateway's public key (base64); the key pair is made on first call (0600)."""
    path = key_path(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = PrivateKey.generate()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, base64.b64encode(bytes(key)) + b"\n")
            os.fsync(fd)
            # `schwebe config pubkey` run as root: the key must stay readable by the daemon's
            # user, who owns the data directory
            owner = os.stat(data_dir)
            if os.geteuid() == 0 and owner.st_uid != 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)
                os.chown(path.parent, owner.st_uid, owner.st_gid)
        finally:
            os.close(fd)
        # rename so a crash never leaves a half-written key that would lock out every secret
        os.replace(tmp, path)
    return base64.b64encode(bytes(_load_private(path).public_key)).decode("ascii")


def open_sealed(private_key_path: Path, value: str) -> str:
    if not is_sealed(value):
        raise SealedError("not a sealed value (expected enc:v1:...)")
    blob = _b64(value[len(PREFIX):], "sealed value")
    try:
        return SealedBox(_load_private(Path(private_key_path))).decrypt(blob).decode("utf-8")
    except CryptoError:
        raise SealedError("sealed for another gateway's key") from None
    except UnicodeDecodeError:
        raise SealedError("sealed value is not UTF-8 text") from None
