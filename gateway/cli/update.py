"""`schwebe update apply` (the root step systemd runs before each start) and `update status`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any


def add_update_parser(sub: Any) -> None:
    p = sub.add_parser("update", help="self-update: switch release slots, show the state")
    usub = p.add_subparsers(dest="update_command", required=True, metavar="ACTION")
    a = usub.add_parser(
        "apply", help="as root before each start: install a staged release or roll one back",
        description="Run by schwebe.service before every start (ExecStartPre=+, as root): finish "
                    "or undo an interrupted switch, count the starts of a release on trial and "
                    "roll it back when it did not confirm in time or asked to be, confirm it, "
                    "and install a release the daemon staged after checking it against the "
                    "signed TUF metadata itself. Always exits 0 unless it cannot run at all.")
    a.add_argument("--config", "-c", required=True, metavar="FILE", help="the on-site configuration")
    a.add_argument("--max-starts", type=int, default=None, metavar="N",
                   help="starts a release on trial gets before it is rolled back (default 3)")
    a.set_defaults(func=_apply)
    s = usub.add_parser(
        "status", help="print the self-update state (JSON)",
        description="Print the self-update state as /api/status shows it under `update`: the "
                    "running version, the release on trial, the one staged, and the last "
                    "outcome (confirmed, rolled-back, refused) with its reason.")
    s.add_argument("--config", "-c", required=True, metavar="FILE", help="the gateway's configuration file")
    s.set_defaults(func=_status)


def _load(path: str) -> Any:
    from gateway.cli.remote import _load as load

    return load(path)


def _apply(args: argparse.Namespace) -> int:
    from gateway.update.slots import MAX_STARTS, Site, Slots
    from gateway.update.stage import debian_arch

    logging.basicConfig(level=logging.INFO, format="schwebe %(message)s", stream=sys.stderr)
    cfg = _load(args.config)
    if cfg is None:
        return 2
    rc = cfg.remote_config
    if rc.root is None or not rc.self_update:
        print("schwebe update: self-update is off ([remote_config] root unset or self_update = false)",
              file=sys.stderr)
        return 0
    slots = Slots(Site(install_dir=Path(rc.install_dir), data_dir=Path(cfg.gateway.data_dir),
                       trusted_root=Path(str(rc.root)), eui=cfg.gateway.eui, arch=debian_arch()),
                  max_starts=args.max_starts or MAX_STARTS)
    st = slots.apply()
    what = f"trying {st.trying} (start {st.starts})" if st.trying else f"running {st.running}"
    last = f"; last: {st.outcome} {st.version}" + (f" ({st.reason})" if st.reason else "") if st.outcome else ""
    print(f"schwebe update: {what}{last}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    from gateway.update.stage import Releases

    cfg = _load(args.config)
    if cfg is None:
        return 2
    out = Releases(cfg).public()
    print(json.dumps(out, indent=2))
    return 1 if out["outcome"] in ("rolled-back", "refused") else 0
