"""``schwebe simulate``: point a simulated packet forwarder and its sensors at a GWMP server.

A technician's tool to exercise a real server (ours or an LNS) without radios. Parses
arguments, runs drivers.sim.packet_forwarder, prints a summary; nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:1700)")
    return host.strip("[]"), int(port)


def _eui(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 16-digit hex EUI") from None
    if len(text) != 16:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 16-digit hex EUI")
    return value


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return parse


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="send simulated packet-forwarder traffic (parking sensors) to a GWMP server",
        description="Stand in for lora_pkt_fwd: N parking sensors (ABP and OTAA) sending real "
        "payload formats over Semtech UDP, with stat reports, keepalives and TX_ACKs.",
    )
    p.add_argument("--to", required=True, type=_target, metavar="HOST:PORT", help="GWMP server")
    p.add_argument("--sensors", type=_positive(int), default=50, help="number of sensors (50)")
    p.add_argument(
        "--rate", type=_positive(float), default=1.0, help="uplinks per second in total (1)"
    )
    p.add_argument(
        "--duration", type=_positive(float), default=None, help="seconds to run (until Ctrl-C)"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed: same seed, same devices")
    p.add_argument(
        "--gateway-eui", type=_eui, default=0xB827EBFFFE000001, help="EUI of the simulated gateway"
    )
    p.add_argument(
        "--model", action="append", dest="models", help="sensor model (repeatable; default: all)"
    )
    p.add_argument("--stat-interval", type=_positive(float), default=30.0, help="seconds (30)")
    p.add_argument(
        "--keepalive", type=_positive(float), default=10.0, help="PULL_DATA every (10) s"
    )
    p.add_argument(
        "--no-duty-cycle",
        action="store_true",
        help="let each sensor send more often than its 1 %% duty cycle allows (load tests)",
    )
    p.add_argument(
        "--devices-json",
        metavar="FILE",
        help="write the devices (DevEUI, DevAddr, model, keys) as JSON to FILE, mode 0600",
    )
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from drivers.sim.packet_forwarder import Simulator

    try:
        sim = Simulator(
            args.to,
            sensors=args.sensors,
            rate=args.rate,
            gateway_eui=args.gateway_eui,
            seed=args.seed,
            models=args.models,
            stat_interval=args.stat_interval,
            keepalive_interval=args.keepalive,
            device_duty_cycle=not args.no_duty_cycle,
        )
    except ValueError as exc:
        print(f"schwebe simulate: {exc}", file=sys.stderr)
        return 2
    if args.devices_json:
        import os

        # The file holds keys: owner-only from the first byte.
        fd = os.open(args.devices_json, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(sim.devices(), fh, indent=1)
    try:
        asyncio.run(sim.run(args.duration))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"schwebe simulate: cannot send to {args.to[0]}:{args.to[1]}: {exc}", file=sys.stderr)
        return 1
    c = sim.counters
    print(
        f"sent {c.rxpk} uplinks ({c.uplinks} data, {c.joins} join requests) in "
        f"{c.push_data} PUSH_DATA, acked {c.push_acked}; "
        f"PULL_DATA {c.pull_data}, acked {c.pull_acked}; downlinks {c.downlinks}"
        + (f"; {c.held_by_duty_cycle} held back by duty cycle" if c.held_by_duty_cycle else "")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schwebe")
    sub = parser.add_subparsers(dest="command", required=True)
    add_simulate_parser(sub)
    args = parser.parse_args(["simulate", *(sys.argv[1:] if argv is None else argv)])
    rc: int = args.func(args)
    return rc
