"""`schwebe fleet ...`: the operator's side of remote configuration (argument parsing, printing).

The work is in gateway/fleet/. Every failure is one line on stderr naming what and where,
exit 1; `fleet status` and `fleet rollout` exit 2 when gateways did not answer in time.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.fleet import FleetError

ROLES = ("root", "targets", "snapshot", "timestamp")


def _role_values(items: list[str] | None, flag: str, parse: Callable[[str], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        role, sep, value = item.partition("=")
        if not sep or role not in ROLES:
            raise FleetError(f"{flag} {item}: use ROLE=VALUE with ROLE one of {', '.join(ROLES)}")
        try:
            out[role] = parse(value)
        except ValueError as exc:
            raise FleetError(f"{flag} {item}: {exc}") from None
    return out


def _seconds(text: str) -> float:
    from gateway.config_values import parse_duration

    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


def _timeout(text: str, flag: str = "--timeout") -> float:
    try:
        t = _seconds(text)
    except ValueError as exc:
        raise FleetError(f"{flag} {text}: {exc}") from None
    if t <= 0:
        raise FleetError(f"{flag} {text}: must be more than 0")
    return t


def _open_repo(path: str) -> Any:
    from gateway.fleet.repo import Repository

    return Repository.open(Path(path))


def _init(args: argparse.Namespace) -> int:
    from gateway.fleet.repo import Repository

    thresholds = _role_values(args.threshold, "--threshold", int)
    expiry = _role_values(args.expiry, "--expiry", _seconds)
    key_dirs: dict[str, Path] = {}
    for item in args.keys_dir or []:
        role, sep, value = item.partition("=")
        if sep and role in ROLES:
            key_dirs[role] = Path(value)
        else:  # one directory for every role's private keys
            key_dirs.update({r: Path(item) for r in ROLES if r not in key_dirs})
    repo = Repository.init(Path(args.dir), thresholds=thresholds, key_dirs=key_dirs, expiry=expiry)
    root = repo.path / "metadata" / "root.json"  # the same bytes as 1.root.json until a key rotation
    sys.stdout.write(root.read_text(encoding="utf-8"))
    keys = sorted({str((repo.path / p).parent) for r in ROLES for p in repo.book["roles"][r]["keys"]})
    print(f"schwebe fleet: repository made in {repo.path}; private keys (0600) in {', '.join(keys)}.\n"
          f"The trusted root above is {root}: copy it to every gateway and point "
          "[remote_config] root at it.", file=sys.stderr)
    return 0


def _set_config(args: argparse.Namespace) -> int:
    from gateway.fleet.configs import set_config
    from gateway.fleet.repo import config_target, normalise_eui

    repo = _open_repo(args.dir)
    eui = None if args.all else normalise_eui(args.gateway)
    version = set_config(repo, Path(args.file), eui, allow_plain_secrets=args.allow_plain_secrets)
    print(version)
    print(f"schwebe fleet: {args.file} stored as {config_target(eui)} version {version}; sign it with: "
          f"schwebe fleet publish {args.dir}", file=sys.stderr)
    return 0


def _release(args: argparse.Namespace) -> int:
    from gateway.fleet.release import add_release
    from gateway.fleet.repo import normalise_eui

    repo = _open_repo(args.dir)
    eui = normalise_eui(args.gateway) if args.gateway else None
    info, target = add_release(repo, Path(args.package), eui)
    print(info.version)
    who = f"gateway {eui}" if eui else f"every {info.arch} gateway without a release of its own"
    print(f"schwebe fleet: {info.file_name} stored as {target} (for {who}); sign it with: "
          f"schwebe fleet publish {args.dir}", file=sys.stderr)
    return 0


async def _with_link(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    from gateway.fleet.mqtt import FleetLink, parse_broker

    broker = parse_broker(args.mqtt)
    link = await FleetLink.open(broker, args.prefix, ca=Path(args.ca) if args.ca else None)
    try:
        return await work(link)
    finally:
        await link.close()


def _publish(args: argparse.Namespace) -> int:
    from gateway.fleet.mqtt import mirror, notify, parse_broker, read_states

    repo = _open_repo(args.dir)
    if args.mqtt:
        parse_broker(args.mqtt)  # a bad URL is refused before anything is signed
    pub = repo.publish()
    print(f"published: targets version {pub.targets}, snapshot {pub.snapshot}, timestamp {pub.timestamp}")
    for name, v in sorted(pub.config_targets.items()):
        print(f"  {name}: config version {v}")
    for name, rv in sorted(pub.releases.items()):
        print(f"  {name}: release {rv}")
    if not args.mqtt:
        return 0

    async def push(link: Any) -> int:
        result = await mirror(link, repo)
        # every gateway known (its state, or a config of its own) on its command topic too
        euis = set(await read_states(link)) | {
            name[len("configs/"):-len(".toml")] for name in pub.config_targets if name != "configs/all.toml"}
        await notify(link, repo.config_version, sorted(euis), broadcast=True)
        if result.warning:
            print(f"schwebe fleet publish: warning: {result.warning}", file=sys.stderr)
        print(f"mirrored to {link.broker.shown} under {link.prefix}/fleet/: {result.published} file(s) "
              f"sent, {result.unchanged} unchanged, {result.cleared} cleared; notified "
              f"{link.prefix}/fleet/notify and {len(euis)} gateway(s) (version {repo.config_version})")
        return 0

    try:
        return asyncio.run(_with_link(args, push))
    except FleetError as exc:  # the broker failed: what is signed stays signed
        raise FleetError(f"signed in {repo.path} but not mirrored: {exc}") from None


def _status_table(states: list[Any]) -> str:
    # the reason last: a long one then does not push the short columns apart
    cols = ("EUI", "VERSION", "STATE", "SOURCE", "AT", "REASON")
    rows = [cols] + [(s.eui, "-" if s.version is None else str(s.version), s.state, s.source or "-",
                      s.at or "-", s.reason or "-") for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _status(args: argparse.Namespace) -> int:
    from gateway.fleet.mqtt import FAILED, gateway_states, read_states, settled

    wait = args.wait
    timeout = _timeout(args.timeout)

    async def show(link: Any) -> int:
        states = await read_states(link)
        if not states:
            raise FleetError(f"MQTT broker {link.broker.shown}: no gateway has reported under "
                             f"{link.prefix}/gateway/+/state/config (wrong --prefix?)")
        late: list[str] = []
        if wait is not None:
            known = list(states)

            def done() -> bool:
                now = gateway_states(link.messages, link.prefix)
                return all(e in now and settled(now[e], wait) for e in known)

            await link.watch(done, timeout)
            states = gateway_states(link.messages, link.prefix)
            late = [e for e in known if e not in states or not settled(states[e], wait)]
        rows = list(states.values())
        if args.json:
            print(json.dumps([s.as_dict() for s in rows], indent=1))
        else:
            print(_status_table(rows))
        failed = [s for s in rows if s.state in FAILED]
        if failed:
            print(f"schwebe fleet: {len(failed)} gateway(s) not on the config they were sent: "
                  + ", ".join(f"{s.eui} {s.state} (version {s.version})" for s in failed), file=sys.stderr)
        if late:
            print(f"schwebe fleet: no answer for version {wait} within {timeout:g}s from "
                  + ", ".join(late), file=sys.stderr)
        return 1 if failed else 2 if late else 0

    return asyncio.run(_with_link(args, show))


def _rollout(args: argparse.Namespace) -> int:
    from gateway.fleet.configs import checked_config
    from gateway.fleet.mqtt import parse_broker
    from gateway.fleet.rollout import RolloutError, parse_waves, rollout

    repo = _open_repo(args.dir)
    waves = parse_waves(args.waves)
    timeout = _timeout(args.timeout)
    parse_broker(args.mqtt)
    try:
        with open(args.config, "rb") as f:
            is_package = f.read(8) == b"!<arch>\n"  # a Debian package (ar archive), not TOML
    except OSError as exc:
        raise FleetError(f"{args.config}: cannot read: {exc.strerror}") from None
    say = lambda line: print(line, flush=True)  # noqa: E731
    start: Callable[[Any], Awaitable[int | str]]  # the version rolled out
    if is_package:
        from gateway.fleet.release_rollout import rollout_release

        def start(link: Any) -> Awaitable[int | str]:
            return rollout_release(repo, link, Path(args.config), waves, timeout=timeout, say=say)
        done = "rollout of release {} complete: every gateway runs it"
    else:
        data = checked_config(Path(args.config), None, allow_plain_secrets=args.allow_plain_secrets)

        def start(link: Any) -> Awaitable[int | str]:
            return rollout(repo, link, data, waves, timeout=timeout, say=say)
        done = "rollout of version {} complete: every gateway confirmed it"

    async def run(link: Any) -> int:
        try:
            version = await start(link)
        except RolloutError as exc:
            print(f"schwebe fleet: {exc}", file=sys.stderr)
            return exc.code
        print(done.format(version))
        return 0

    return asyncio.run(_with_link(args, run))


def _seal(args: argparse.Namespace) -> int:
    from gateway.remote.sealed import SealedError, seal

    if sys.stdin.isatty():
        secret = getpass.getpass("secret to seal: ")
    else:
        secret = sys.stdin.read().removesuffix("\n")
    if not secret:
        raise FleetError("no secret on stdin: pipe it in (printf %s 'secret' | schwebe fleet seal PUBKEY)")
    try:
        print(seal(args.pubkey, secret))
    except SealedError as exc:
        raise FleetError(f"PUBKEY: {exc}") from None
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from gateway.fleet.bundle import make_bundle
    from gateway.fleet.repo import normalise_eui

    repo = _open_repo(args.dir)
    eui = normalise_eui(args.gateway)
    b = make_bundle(repo, eui, Path(args.output))
    print(f"{args.output}: bundle for gateway {eui}: {len(b.members)} file(s), config target(s) "
          f"{', '.join(b.targets)}")
    print(f"upload it on the gateway's page before {b.timestamp_expires.isoformat()} (when its "
          "timestamp expires; run fleet publish again for a fresh one)")
    return 0


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except FleetError as exc:
            print(f"schwebe fleet {args.fleet_command}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            # not 0 (the top level's answer to Ctrl-C): a rollout or a wait did not finish
            print(f"schwebe fleet {args.fleet_command}: interrupted; what was published stays "
                  "published (a rollout's waves so far keep their per-gateway targets)", file=sys.stderr)
            return 130
        except OSError as exc:  # a key directory not writable, an output path missing...
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"schwebe fleet {args.fleet_command}: {where}{exc.strerror or exc}", file=sys.stderr)
            return 1
    return run


def add_fleet_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `fleet init|set-config|release|publish|status|rollout|seal|bundle`."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "fleet", help="operator tools: a signed config repository for many gateways",
        description="Keep gateway configs in a TUF repository (a plain directory any static "
                    "web server serves), mirror it to an MQTT broker, watch gateways confirm.")
    sub = p.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    broker = argparse.ArgumentParser(add_help=False)
    broker.add_argument("--prefix", default="eu868",
                        help="topic prefix: the gateways' [[forward.mqtt]] topic_prefix (default eu868)")
    broker.add_argument("--ca", metavar="FILE", help="CA certificate (PEM) for an mqtts:// broker")

    s = sub.add_parser("init", help="make a repository: keys, the first root",
                       description="Make a TUF repository in DIR and print its root.json "
                                   "(to install on gateways as [remote_config] root).")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--threshold", action="append", metavar="ROLE=N",
                   help="keys needed for ROLE (root, targets, snapshot, timestamp); default 1")
    s.add_argument("--keys-dir", action="append", metavar="[ROLE=]PATH",
                   help="where private keys go (default DIR/keys); e.g. --keys-dir root=/media/usb")
    s.add_argument("--expiry", action="append", metavar="ROLE=DURATION",
                   help="how long ROLE's metadata stays valid (defaults root 365d, targets 90d, "
                        "snapshot 7d, timestamp 1d)")
    s.set_defaults(func=_guarded(_init))

    s = sub.add_parser("set-config", help="store a checked config as a target (bumps the version)")
    s.add_argument("dir", metavar="DIR")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--gateway", metavar="EUI", help="for this gateway only")
    who.add_argument("--all", action="store_true", help="for every gateway without its own")
    s.add_argument("file", metavar="FILE", help="configuration (TOML) as the gateway loads it")
    s.add_argument("--allow-plain-secrets", action="store_true",
                   help="publish secrets in clear (else they must be sealed: fleet seal)")
    s.set_defaults(func=_guarded(_set_config))

    s = sub.add_parser("release", help="store a Debian package of schwebe as a release target",
                       description="Check PACKAGE (a .deb of schwebe made by `make deb`) and store it "
                                   "as the release for one gateway or for every gateway of its "
                                   "architecture; gateways install it after the next publish.")
    s.add_argument("dir", metavar="DIR")
    who = s.add_mutually_exclusive_group()
    who.add_argument("--gateway", metavar="EUI", help="for this gateway only")
    who.add_argument("--all", action="store_true",
                     help="for every gateway without its own (the default)")
    s.add_argument("package", metavar="PACKAGE.deb")
    s.set_defaults(func=_guarded(_release))

    s = sub.add_parser("publish", parents=[broker], help="sign; with --mqtt also mirror and notify")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--mqtt", metavar="URL", help="mqtt[s]://[user:password@]host[:port]")
    s.set_defaults(func=_guarded(_publish))

    s = sub.add_parser("status", parents=[broker], help="every gateway's config state")
    s.add_argument("--mqtt", metavar="URL", required=True)
    s.add_argument("--wait", metavar="VERSION", type=int,
                   help="wait until every gateway has confirmed (or failed) VERSION")
    s.add_argument("--timeout", default="300", metavar="SECONDS", help="for --wait (default 300)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_guarded(_status))

    s = sub.add_parser("rollout", parents=[broker], help="push a fleet-wide config or a release in waves")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--mqtt", metavar="URL", required=True)
    s.add_argument("--waves", default="1,10%,100%", help="cumulative gateway counts or shares; "
                   "the last must be 100%% (default 1,10%%,100%%)")
    s.add_argument("--timeout", default="900", metavar="SECONDS",
                   help="per wave, for every confirmation (default 900)")
    s.add_argument("--allow-plain-secrets", action="store_true")
    # required: an optional positional after DIR would swallow nothing and refuse the file
    s.add_argument("config", metavar="CONFIG.toml|PACKAGE.deb",
                   help="the fleet-wide config, or a release (a .deb of schwebe), to roll out")
    s.set_defaults(func=_guarded(_rollout))

    s = sub.add_parser("seal", help="encrypt a secret (stdin) to a gateway's public key")
    s.add_argument("pubkey", metavar="PUBKEY", help="from `schwebe config pubkey` on the gateway")
    s.set_defaults(func=_guarded(_seal))

    s = sub.add_parser("bundle", help="a tar for an on-site upload to one gateway")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--gateway", required=True, metavar="EUI")
    s.add_argument("-o", "--output", required=True, metavar="FILE.tar")
    s.set_defaults(func=_guarded(_bundle))
    return p
