"""`schwebe config status` and `schwebe config pubkey`: the gateway side of remote configuration."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_remote_parsers(csub: Any) -> None:
    s = csub.add_parser(
        "status", help="print the state of pushed configs (JSON)",
        description="Print the remote configuration state of the gateway whose config is FILE, "
                    "as /api/status shows it: version, state (none, staged, confirming, "
                    "confirmed, rolled-back, refused), reason, source, last_confirmed, history.")
    s.add_argument("--config", "-c", required=True, metavar="FILE", help="the gateway's configuration file")
    s.set_defaults(func=_status)
    k = csub.add_parser(
        "pubkey", help="print this gateway's public key for sealing secrets",
        description="Print the gateway's X25519 public key (base64). Operators seal secrets "
                    "to it with `schwebe fleet seal PUBKEY`; only this gateway can open them. "
                    "The key pair is made on first use: <data_dir>/remote/gateway.key, 0600.")
    k.add_argument("--config", "-c", required=True, metavar="FILE", help="the gateway's configuration file")
    k.set_defaults(func=_pubkey)


def _load(path: str) -> Any:
    from gateway.cli.main import _print_config_errors
    from gateway.config import ConfigError, load_config

    try:
        return load_config(Path(path))
    except ConfigError as exc:
        _print_config_errors(path, exc)
        return None


def _status(args: argparse.Namespace) -> int:
    from gateway.remote.state import StateStore

    cfg = _load(args.config)
    if cfg is None:
        return 2
    store = StateStore(Path(cfg.gateway.data_dir) / "remote")
    out = store.public(store.load(), cfg.gateway.eui)
    if cfg.remote_config.root is None:
        out["reason"] = out["reason"] or "remote configuration is off (no [remote_config] root)"
    print(json.dumps(out, indent=2))
    return 1 if out["state"] in ("rolled-back", "refused") else 0


def _pubkey(args: argparse.Namespace) -> int:
    from gateway.remote.sealed import SealedError, gateway_keypair

    cfg = _load(args.config)
    if cfg is None:
        return 2
    try:
        print(gateway_keypair(Path(cfg.gateway.data_dir)))
    except (OSError, SealedError) as exc:
        print(f"schwebe: cannot read or make the gateway key in {cfg.gateway.data_dir}/remote: {exc}",
              file=sys.stderr)
        return 1
    return 0
