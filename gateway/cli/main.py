"""Command line: argument parsing only; each subcommand calls into its module.

Exit codes: 0 ok, 1 runtime failure, 2 bad input (bad config, bad arguments).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__


def _run(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config

    try:
        cfg = load_config(Path(args.config))
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return 2
    _warn_if_readable(Path(args.config), cfg)
    return _serve(cfg, config_path=Path(args.config))


def _warn_if_readable(path: Path, cfg: object) -> None:
    """A config holding secrets must not be readable by other users (0600 or 0640)."""
    from gateway.config import redacted

    if "***" not in repr(redacted(cfg)):
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o007:
        print(f"schwebe: warning: {path} holds secrets and is readable by every user; "
              f"run: chmod 600 {path}", file=sys.stderr)


def _serve(cfg: object, banner: Callable[[Any], str] | None = None, *,
           config_path: Path | None = None) -> int:
    from gateway.config import Config
    from gateway.datadir import DataDirBusy, DataDirLock
    from gateway.logs import setup_logging
    from gateway.sdnotify import Notifier

    assert isinstance(cfg, Config)
    setup_logging(cfg.log.level, cfg.log.format)
    notifier = Notifier(os.environ.get("NOTIFY_SOCKET"), os.environ.get("WATCHDOG_USEC"))
    data_dir = cfg.gateway.data_dir
    try:
        _make_data_dir(data_dir)
        lock = DataDirLock(data_dir).acquire()
    except (OSError, DataDirBusy) as exc:
        cause = str(exc) if not isinstance(exc, OSError) or not exc.strerror else exc.strerror
        print(f'schwebe: cannot start gateway (gateway.data_dir = "{data_dir}"): {cause}',
              file=sys.stderr)
        return 1
    try:
        return _serve_locked(cfg, notifier, banner, config_path)
    finally:
        lock.release()


def _make_data_dir(data_dir: Path) -> None:
    """Create the data directory, or say in words why it cannot be one."""
    if data_dir.is_symlink() and not data_dir.exists():
        try:
            target = os.readlink(data_dir)
        except OSError:
            target = "?"
        raise OSError(f"a symlink to {target}, which does not exist (or loops)")
    if data_dir.exists() and not data_dir.is_dir():
        raise OSError("exists but is not a directory")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)


def _serve_locked(cfg: object, notifier: Any, banner: Callable[[Any], str] | None,
                  config_path: Path | None) -> int:
    import asyncio
    import signal

    from gateway.app import ComponentStartError, describe_error
    from gateway.config import Config
    from gateway.pipeline import Gateway

    assert isinstance(cfg, Config)

    exit_code: list[int] = []

    async def main() -> None:
        stopping = False
        current: list[Gateway] = []

        def on_signal() -> None:
            nonlocal stopping
            stopping = True
            if current:
                current[-1].supervisor.request_stop()

        async def run_gateway(run_cfg: Config, remote: Any) -> bool:
            """One Gateway until it stops; True when the daemon itself is to stop."""
            gw = Gateway(run_cfg, notifier=notifier)
            current[:] = [gw]
            if remote is not None:
                remote.attach(gw)

            async def show_banner() -> None:
                if banner:
                    print(banner(gw), flush=True)

            gw.supervisor.on_ready = show_banner
            if stopping:
                return True
            await gw.serve(install_signals=False)
            return stopping

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            if cfg.remote_config.root is not None and config_path is not None:
                from gateway.remote.manager import serve_with_remote

                code = await serve_with_remote(config_path, cfg, run_gateway)
                if code is not None and not stopping:
                    exit_code.append(code)
            else:
                await run_gateway(cfg, None)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    rc = 0
    try:
        asyncio.run(main())
    except* ComponentStartError as group:
        for failed in group.exceptions:
            assert isinstance(failed, ComponentStartError)
            where = _config_key_of(cfg, failed.component)
            print(f"schwebe: cannot start {failed.component}{where}: "
                  f"{describe_error(failed.cause)}", file=sys.stderr)
        rc = 1
    except* OSError as group:
        print(f"schwebe: cannot start: {describe_error(group.exceptions[0])}", file=sys.stderr)
        rc = 1
    if exit_code and rc == 0:
        # self-update: systemd (Restart=always) starts the daemon again through the root
        # step, `schwebe update apply`, which switches to the staged release or back
        print(f"schwebe: stopping for a release switch (exit {exit_code[0]})", file=sys.stderr)
        rc = exit_code[0]
    return rc


def _config_key_of(cfg: object, component: str) -> str:
    """' (web.bind = "0.0.0.0:8080")' for the components whose start() takes one key."""
    from gateway.config import Config

    assert isinstance(cfg, Config)

    def hostport(hp: tuple[str, int]) -> str:
        host = f"[{hp[0]}]" if ":" in hp[0] else hp[0]
        return f"{host}:{hp[1]}"

    kind, _, index = component.partition(":")
    if component == "web":
        return f' (web.bind = "{hostport(cfg.web.bind)}")'
    if component == "buffer":
        return f' (gateway.data_dir = "{cfg.gateway.data_dir}")'
    if kind == "gwmp" and index.isdigit() and int(index) < len(cfg.sources.gwmp):
        return f' (sources.gwmp[{index}].bind = "{hostport(cfg.sources.gwmp[int(index)].bind)}")'
    return ""


DEMO_BANNER = """
Schwebe demo is running: the whole gateway on this machine, no hardware needed.

  simulated packet forwarder -> UDP on loopback -> parser ({parser}) -> durable buffer
      -> a local sink (JSON Lines) and a stand-in network server (Semtech UDP)
  {sensors} simulated LoRaWAN sensors, about {rate:g} frames/s: {abp} ABP, {otaa} OTAA
      (they join through the stand-in network server; edge decoding starts once the gateway
      has seen their join accept); {counters} of them are car counters, shown as counts
  {wired} wired RS-485 bay detectors and a GNSS receiver, simulated on pseudo-terminals

  status page   {web}/
  JSON status   curl {web}/api/status
  metrics       curl {web}/metrics
  buffer        {schwebe} buffer inspect --data-dir {data_dir}
  forwarded     {data_dir}/forwarded.jsonl  (what a backend would receive)

{keep}
Press Ctrl-C to stop.
"""


def _schwebe_command() -> str:
    """How to run this same schwebe from the user's shell, as short as it still works."""
    import shutil

    script = Path(sys.executable).parent / "schwebe"
    if not script.exists():
        return f"{sys.executable} -m gateway.cli"
    found = shutil.which("schwebe")
    if found and Path(found).resolve() == script.resolve():
        return "schwebe"
    rel = os.path.relpath(script)
    return rel if not rel.startswith("..") else str(script)


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo(args: argparse.Namespace) -> int:
    import contextlib
    import tempfile

    from gateway import frames
    from gateway.config import ConfigError, demo_config_text, load_config_text
    from gateway.parking.registry import is_counter

    busy = _port_busy(args.port)
    if busy:
        other = 8090 if args.port != 8090 else 8091
        print(f'schwebe: cannot start web (web.bind = "127.0.0.1:{args.port}"): {busy}; '
              f"try another port: {_schwebe_command()} demo --port {other} "
              f"(or: make demo PORT={other})", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        if args.data_dir:
            data_dir = str(Path(args.data_dir).resolve())
            keep = f"Data is kept in {data_dir} after Ctrl-C."
        else:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="schwebe-demo-"))
            keep = ("Its data directory is temporary: Ctrl-C deletes it (buffer, forwarded.jsonl).\n"
                    f"To keep it: {_schwebe_command()} demo --data-dir DIR")
        text = demo_config_text(data_dir, args.port, _free_udp_port())
        try:
            cfg = load_config_text(text, source="<demo>")
        except ConfigError as exc:  # e.g. --port 99999
            _print_config_errors(f"demo --port {args.port}", exc)
            return 2

        def banner(gw: Any) -> str:
            devices = gw.simulator.devices()
            otaa = sum(d["activation"] == "OTAA" for d in devices)
            return DEMO_BANNER.format(
                parser=frames.IMPLEMENTATION, sensors=len(devices), rate=cfg.sources.simulator.rate if cfg.sources.simulator else 0,
                abp=len(devices) - otaa, otaa=otaa,
                counters=sum(is_counter(d["model"]) for d in devices),
                wired=cfg.sources.simulator.wired_spots if cfg.sources.simulator else 0,
                web=gw.web.url.rstrip("/"), schwebe=_schwebe_command(), data_dir=data_dir,
                keep=keep)

        rc = _serve(cfg, banner=banner)
        if not args.data_dir:
            print(f"schwebe demo: stopped; deleted its temporary data directory {data_dir}",
                  file=sys.stderr)
        return rc


def _port_busy(port: int) -> str | None:
    """Why the demo's web port cannot be bound, checked before anything starts (or None)."""
    import socket

    if not 0 < port < 65536:
        return None  # the config loader names the bad value
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.strerror.lower() if exc.strerror else str(exc)
    return None


def _config_validate(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, config_warnings, load_config

    try:
        cfg = load_config(Path(args.file))
    except ConfigError as exc:
        _print_config_errors(args.file, exc)
        return 2
    warnings = config_warnings(cfg)
    for w in warnings:
        print(f"schwebe: {args.file}: warning: {w}", file=sys.stderr)
    print(f"{args.file}: ok" + (f" ({len(warnings)} warning(s), above)" if warnings else ""))
    return 0


def _print_config_errors(path: str, exc: Exception) -> None:
    from gateway.config import ConfigError

    problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
    print(f"schwebe: {path}: {len(problems)} problem(s) in the configuration:", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)


def _web_cert(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.web.tls import ensure_cert, fingerprint

    try:
        cfg = load_config(Path(args.config))
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return 2
    try:
        cert, _key, _made = ensure_cert(Path(cfg.gateway.data_dir), cfg.gateway.eui)
    except OSError as exc:
        print(f"schwebe: cannot read or make the certificate in {cfg.gateway.data_dir}/web: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{fingerprint(cert)}  {cert}")
    if not cfg.web.tls:
        print("schwebe: note: [web] tls is not set: the page is served over plain HTTP", file=sys.stderr)
    return 0


def _hash_password(args: argparse.Namespace) -> int:
    import getpass

    from gateway.web.auth import hash_password

    if sys.stdin.isatty():
        pw = getpass.getpass("new password: ")
        if pw != getpass.getpass("again: "):
            print("schwebe: the passwords differ", file=sys.stderr)
            return 2
    else:
        pw = sys.stdin.readline().rstrip("\n")
    if len(pw) < 10:
        print("schwebe: use at least 10 characters", file=sys.stderr)
        return 2
    print(hash_password(pw))
    return 0


def _top_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(prog="schwebe", description="Edge gateway for city LoRaWAN and parking sensors.")
    parser.add_argument("--version", action="version", version=f"schwebe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser, sub


def _decode_parser() -> argparse.ArgumentParser:
    """The parser for ``schwebe decode ...`` alone: the same usage, help and errors as the
    whole one gives for it, without importing the daemon's, buffer's and fleet's modules
    (a capture-decoding run starts in about a third of the time)."""
    from gateway.cli.decode import add_decode_parser

    parser, sub = _top_parser()
    add_decode_parser(sub)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from gateway.cli.buffer import add_buffer_parser
    from gateway.cli.decode import add_decode_parser
    from gateway.cli.fleet import add_fleet_parser
    from gateway.cli.remote import add_remote_parsers
    from gateway.cli.simulate import add_simulate_parser
    from gateway.cli.update import add_update_parser

    parser, sub = _top_parser()

    p = sub.add_parser(
        "run", help="run the gateway daemon",
        description="Run the gateway daemon on a configuration file, as systemd does "
                    "(Type=notify: READY once sources are bound and the web port listens). "
                    "Exit 2 on a bad configuration, 1 when a component cannot start.")
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="configuration file (TOML)")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "demo", help="run the whole gateway on simulated hardware",
        description="Run the whole gateway on this machine with simulated hardware: a packet "
                    "forwarder with LoRaWAN parking sensors, a stand-in network server, wired "
                    "RS-485 detectors and a GNSS receiver on pseudo-terminals, a durable buffer "
                    "and a local JSON Lines sink. The page is served on 127.0.0.1 without a login.")
    p.add_argument("--port", type=int, default=8080, help="web page port on 127.0.0.1 (default 8080)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="keep the buffer and forwarded.jsonl in DIR (default: a temporary "
                        "directory deleted on Ctrl-C)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    v = csub.add_parser(
        "validate", help="check a configuration file; exit 2 on problems",
        description="Load FILE with the daemon's strict loader. Every problem is named by its "
                    "key path (exit 2); settings that load but cannot work as meant are "
                    "warnings (exit 0).")
    v.add_argument("file", metavar="FILE", help="the configuration file (TOML) to check")
    v.set_defaults(func=_config_validate)
    add_remote_parsers(csub)

    p = sub.add_parser("web", help="web page tools")
    wsub = p.add_subparsers(dest="web_command", required=True, metavar="ACTION")
    c = wsub.add_parser(
        "cert", help="print the page's TLS certificate fingerprint (made if missing)",
        description="Print the SHA-256 fingerprint and path of the certificate the page serves "
                    "with [web] tls = true, making it (<data_dir>/web/, key 0600) if the daemon "
                    "has not yet. Compare it with what the phone's browser shows, then pin it.")
    c.add_argument("--config", "-c", required=True, metavar="FILE", help="the gateway's configuration file")
    c.set_defaults(func=_web_cert)
    h = wsub.add_parser("hash-password", help="read a password, print its hash for [[web.users]] password_hash")
    h.set_defaults(func=_hash_password)

    add_decode_parser(sub)
    add_buffer_parser(sub)
    add_simulate_parser(sub)
    add_fleet_parser(sub)
    add_update_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _decode_parser() if argv[:1] == ["decode"] else build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # `schwebe decode - | head` must end quietly
        sys.stderr.close()
        return 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
