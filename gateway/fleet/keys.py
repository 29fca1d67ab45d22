"""Signing keys of the fleet repository: Ed25519, private keys PEM (PKCS#8) files 0600.

A role with threshold N has N keys. Private keys may live outside the repository (root
keys on an offline medium): their paths are recorded in fleet.json, the public halves
(securesystemslib key JSON) in DIR/keys/<role>*.pub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# Defined in private modules; securesystemslib.signer re-exports them implicitly (mypy strict).
from securesystemslib.signer._crypto_signer import CryptoSigner
from securesystemslib.signer._key import SSlibKey

from gateway.fleet import FleetError


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` 0600 from the start (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def generate(private_path: Path, public_path: Path) -> SSlibKey:
    """A new Ed25519 key pair; refuses to overwrite an existing private key."""
    if private_path.exists():
        raise FleetError(f"{private_path} exists already: refusing to overwrite a signing key")
    signer = CryptoSigner.generate_ed25519()
    write_private(private_path, signer.private_bytes)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_text(json.dumps({"keyid": signer.public_key.keyid,
                                       **signer.public_key.to_dict()}, indent=1) + "\n")
    return signer.public_key


def load_signer(private_path: Path) -> CryptoSigner:
    try:
        pem = private_path.read_bytes()
    except OSError as exc:
        raise FleetError(f"{private_path}: cannot read signing key: {exc.strerror}") from None
    try:
        key = load_pem_private_key(pem, None)
    except (ValueError, TypeError):
        raise FleetError(f"{private_path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FleetError(f"{private_path}: not an Ed25519 key")
    return CryptoSigner(key)
