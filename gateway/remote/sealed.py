"""Secrets sealed to one gateway's key: ``enc:v1:<base64 libsodium sealed box>``.

The operator seals with the gateway's X25519 public key (``schwebe config pubkey``), so
the repository, a web server and the broker carry only ciphertext; the gateway opens the
value with its private key (``<data_dir>/remote/gateway.key``, 0600) before loading.
Sealed boxes come from libsodium via PyNaCl: no construction of our own.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

PREFIX = "enc:v1:"
KEY_FILE = Path("remote") / "gateway.key"


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _public_key(pubkey_b64: str) -> PublicKey:
    try:
        raw = base64.b64decode(pubkey_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the public key is not base64 (copy it from `schwebe config pubkey`)") from None
    if len(raw) != 32:
        raise ValueError(f"the public key is {len(raw)} bytes, an X25519 key is 32 "
                         "(copy it from `schwebe config pubkey`)")
    return PublicKey(raw)


def seal(pubkey_b64: str, plaintext: str) -> str:
    """Encrypt ``plaintext`` so that only the holder of the gateway's private key can read it."""
    box = SealedBox(_public_key(pubkey_b64)).encrypt(plaintext.encode())
    return PREFIX + base64.b64encode(box).decode()


def _read_private(path: Path) -> PrivateKey:
    raw = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    if len(raw) != 32:
        raise ValueError(f"{path}: not an X25519 private key ({len(raw)} bytes, expected 32)")
    return PrivateKey(raw)


def open_sealed(private_key_path: Path | str, value: str) -> str:
    """The clear text of an ``enc:v1:`` value; ValueError when it is not for this key."""
    if not is_sealed(value):
        raise ValueError("not a sealed value (expected enc:v1:...)")
    try:
        box = base64.b64decode(value[len(PREFIX):], validate=True)
        return SealedBox(_read_private(Path(private_key_path))).decrypt(box).decode()
    except (binascii.Error, CryptoError, UnicodeDecodeError):
        raise ValueError("sealed value is not for this gateway (or damaged)") from None


def gateway_keypair(data_dir: Path | str) -> str:
    """This gateway's public key (base64); creates the key pair (0600) on first call."""
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = PrivateKey.generate()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(base64.b64encode(bytes(key)).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return base64.b64encode(bytes(_read_private(path).public_key)).decode()
