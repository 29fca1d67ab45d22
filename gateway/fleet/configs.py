"""What `fleet set-config` checks before a config becomes a target.

The gateway's own strict loader decides (``load_config(..., sealed_ok=True)``), so a
config that a gateway would refuse is never published. Secrets must be sealed to the
gateway's key (``schwebe fleet seal``): the repository, its web server and the broker
then carry only ciphertext.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gateway.config import ConfigError
from gateway.fleet import FleetError
from gateway.fleet.repo import Repository, config_target
from gateway.remote.sealed import is_sealed
from gateway.remote.target import MAX_TARGET, operator_check


def plain_secrets(cfg: Any, path: str = "") -> list[str]:
    """Key paths of secret fields that hold a value in clear (not ``enc:v1:``)."""
    found: list[str] = []
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            v = getattr(cfg, f.name)
            p = f"{path}.{f.name}" if path else f.name
            if f.metadata.get("secret"):
                if v is not None and not is_sealed(v):
                    found.append(p)
            else:
                found += plain_secrets(v, p)
    elif isinstance(cfg, tuple | list):
        for i, v in enumerate(cfg):
            found += plain_secrets(v, f"{path}[{i}]")
    return found


def checked_config(file: Path, eui: str | None, *, allow_plain_secrets: bool = False) -> bytes:
    """The file's bytes once the gateway's loader accepts it; FleetError naming each problem.

    The rules are the gateway's own (gateway/remote/target.py): eui left out or this
    gateway's, no data_dir or [remote_config], secrets sealed.
    """
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise FleetError(f"{file}: cannot read: {exc.strerror}") from None
    if size > MAX_TARGET:
        raise FleetError(f"{file}: oversized target ({size} bytes; gateways accept at most {MAX_TARGET})")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FleetError(f"{file}: not UTF-8 text") from None
    try:
        cfg = operator_check(text, source=str(file), eui=None if eui is None else int(eui, 16))
    except ConfigError as exc:
        raise FleetError("\n".join([f"{file}: not published, the gateway would refuse it:",
                                    *(f"  {p}" for p in exc.problems)])) from None
    plain = plain_secrets(cfg)
    if plain and not allow_plain_secrets:
        raise FleetError("\n".join([
            f"{file}: not published, secrets in clear would be readable on every server and broker:",
            *(f"  {p}: seal it with: schwebe fleet seal PUBKEY (PUBKEY from `schwebe config pubkey` "
              "on that gateway)" for p in plain),
            "  (or pass --allow-plain-secrets)"]))
    return text.encode("utf-8")


def set_config(repo: Repository, file: Path, eui: str | None, *, allow_plain_secrets: bool = False) -> int:
    """Store ``file`` as the gateway's (or the fleet-wide) config target; returns its version."""
    data = checked_config(file, eui, allow_plain_secrets=allow_plain_secrets)
    version = repo.bump_version()
    repo.add_target(config_target(eui), data, version)
    repo.save()
    return version
