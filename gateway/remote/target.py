"""A config target as a gateway loads it: the repository's TOML plus what only the site decides.

A target's top-level tables replace the on-site file's; a table it leaves out stays as the
site has it (serial ports and packet-forwarder binds are usually the lamp post's own).
One rule for both sides, so `schwebe fleet set-config` refuses exactly what a gateway would:

- ``gateway.eui`` may be left out (``configs/all.toml`` must leave it out): the gateway puts
  its own in. A target naming another EUI is "for another gateway" and refused.
- ``gateway.data_dir`` and ``[remote_config]`` are set on site only: moving the data directory
  would abandon the buffer, and a pushed config that changed where configs come from could
  cut the gateway off from every later fix.
- Secrets may be ``enc:v1:`` values sealed to the gateway's key; the gateway opens them
  before loading, the operator validates around them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, load_config_data, parse_toml
from gateway.config_values import parse_eui
from gateway.remote.sealed import SealedError, is_sealed, open_sealed

#: Largest config target a gateway accepts (bytes): the TUF client refuses larger ones too.
MAX_TARGET = 1 << 20

#: EUI put into a fleet-wide config while the operator validates it (never published).
_PLACEHOLDER_EUI = "0000000000000000"


def target_data(text: str, *, source: str, eui: int | None, shared: bool = False) -> dict[str, Any]:
    """Parse a target and apply the on-site rules; ``eui`` None checks a fleet-wide config."""
    data = parse_toml(text, source)
    gw = data.setdefault("gateway", {})
    if not isinstance(gw, dict):
        raise ConfigError(["gateway must be a table"])
    problems = []
    if "eui" in gw:
        try:
            named = parse_eui(gw["eui"])
        except (TypeError, ValueError):
            named = None
        if shared:
            problems.append("gateway.eui must be left out of a config for every gateway "
                            "(each gateway puts its own in)")
        elif named is not None and eui is not None and named != eui:
            problems.append(f"gateway.eui is {named:016x}: this config is for another "
                            f"gateway (this one is {eui:016x})")
    if "data_dir" in gw:
        problems.append("gateway.data_dir is set on site only (it holds the buffer)")
    if "remote_config" in data:
        problems.append("[remote_config] is set on site only (a pushed config must not "
                        "change where configs come from)")
    if problems:
        raise ConfigError(problems)
    if "eui" not in gw:
        gw["eui"] = f"{eui:016x}" if eui is not None else _PLACEHOLDER_EUI
    return data


def open_secrets(data: Any, key_file: Path, path: str = "") -> Any:
    """A copy of ``data`` with every ``enc:v1:`` string opened with the gateway's key."""
    if isinstance(data, dict):
        return {k: open_secrets(v, key_file, f"{path}.{k}" if path else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [open_secrets(v, key_file, f"{path}[{i}]") for i, v in enumerate(data)]
    if is_sealed(data):
        try:
            return open_sealed(key_file, data)
        except SealedError as exc:
            raise ConfigError([f"{path}: sealed value is not for this gateway ({exc})"]) from None
    return data


def gateway_config(text: str, local: Config, local_data: dict[str, Any], key_file: Path, *,
                   source: str) -> Config:
    """The config this gateway runs from a target: its identity and [remote_config] kept.

    ``local_data`` is the on-site config file as parsed TOML: its tables fill in what the
    target leaves out; its ``gateway`` and ``[remote_config]`` are kept whatever the target
    says. Raises ConfigError with every problem.
    """
    try:
        data = open_secrets(target_data(text, source=source, eui=local.gateway.eui), key_file)
        # The target's tables replace the site's; what it leaves out stays as on site
        # (serial ports, packet-forwarder binds: the hardware of this lamp post).
        merged = {k: v for k, v in local_data.items() if k != "gateway"}
        merged.update({k: v for k, v in data.items() if k != "gateway"})
        merged["gateway"] = {**local_data.get("gateway", {}), "eui": f"{local.gateway.eui:016x}",
                             "data_dir": str(local.gateway.data_dir)}
        if "remote_config" in local_data:
            merged["remote_config"] = local_data["remote_config"]
        return load_config_data(merged)
    except ConfigError as exc:
        raise ConfigError([f"{source}: {p}" for p in exc.problems]) from None


def operator_check(text: str, *, source: str, eui: int | None) -> Config:
    """Validate a target as a gateway would, sealed secrets left sealed (``fleet set-config``).

    Problems name key paths only: the caller says which file.
    """
    data = target_data(text, source=source, eui=eui, shared=eui is None)
    return load_config_data(data, sealed_ok=True)
