"""The `schwebe decode` command line: argparse registration, single-shot runs and the JSON Lines
batch runner with bounded memory, around the pure builders of gateway.decode.
Bad input becomes an error line or a one-line stderr message with exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, Final, NoReturn

import orjson

from gateway.frames.decode import (
    DecodeError,
    decode_gwmp,
    decode_phy,
    decode_sensor,
    error_object,
    list_models,
)

#: A batch line longer than this is an error, not a reason to hold a gigabyte in memory.
MAX_LINE: Final = 1 << 20


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one stderr line and exit 2, like every other bad input of this tool."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


_BATCH_HELP: Final = """\
With - instead of the input, stdin is read line by line (a capture file) and one JSON
line is printed per input line, in order. Each input line is either
  a JSON object:  {obj}
  or bare:        {bare}   ({what})
A line that cannot be decoded prints {{"error": {{"kind": ..., "detail": ...}}}} and the batch
goes on. Exit status: 0 when every line decoded, 1 when any line failed (2: bad arguments)."""


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text.split('=')[0]!r}...")
    return name.strip(), value.strip()


def _configure(decode: argparse.ArgumentParser) -> None:
    sub = decode.add_subparsers(
        dest="decode_command", required=True, metavar="WHAT", parser_class=_OneLineParser
    )
    p = sub.add_parser(
        "phy", help="a LoRaWAN PHYPayload (hex, or - for JSON Lines on stdin)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_BATCH_HELP.format(
            obj='{"phy": "40...", "keys": {"NwkSKey": "..."}, "params": {"LoRaWAN": "1.0"}}',
            bare="40f17dbe4900020001954378762b11ff0d", what="a PHYPayload in hex")
        + "\n--key/--param given with - apply to every line (a line's own keys win).")
    p.add_argument("hex", metavar="HEX")
    p.add_argument(
        "--key",
        action="append",
        type=_key_value,
        default=[],
        metavar="NAME=HEX",
        help="a key, e.g. NwkSKey=..., AppSKey=..., AppKey=... (repeatable)",
    )
    p.add_argument(
        "--param",
        action="append",
        type=_key_value,
        default=[],
        metavar="NAME=VALUE",
        help="LoRaWAN=1.1, FCntHigh, ConfFCnt, TxDr, TxCh, JoinReqType, JoinEUI, DevNonce, AFCntDown",
    )
    g = sub.add_parser(
        "gwmp", help="a Semtech UDP datagram (hex, or - for JSON Lines on stdin)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_BATCH_HELP.format(obj='{"gwmp": "0212340001..."}', bare="02123404",
                                  what="a datagram in hex"))
    g.add_argument("hex", metavar="HEX")
    s = sub.add_parser(
        "sensor", help="a parking-sensor payload: MODEL FPORT HEX, or -, or --list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_BATCH_HELP.format(obj='{"model": "nwave/nps405", "fPort": 1, "bytes": "01"}',
                                  bare="nwave/nps405 1 01", what="MODEL FPORT HEX"))
    s.add_argument("--list", action="store_true", help="print the known models")
    s.add_argument("args", nargs="*", metavar="MODEL FPORT HEX")


def add_decode_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``decode`` on the CLI's subparsers; ``args.func(args)`` runs it on real stdio."""
    decode: argparse.ArgumentParser = subparsers.add_parser(
        "decode", help="decode frames, datagrams and sensor payloads to JSON"
    )
    _configure(decode)
    decode.set_defaults(func=_run_stdio)
    return decode


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="schwebe decode", description="Decode to JSON (see CONTRACTS.md).")
    _configure(parser)
    return parser


def _is_batch(args: argparse.Namespace) -> bool:
    if args.decode_command == "sensor":
        return bool(args.args == ["-"])
    return bool(args.hex == "-")


def _run_stdio(args: argparse.Namespace) -> int:
    """Run on the process's stdio; a batch reads stdin as UTF-8 with bad bytes replaced, so a
    corrupt capture line becomes an error line instead of ending the batch."""
    buffer = getattr(sys.stdin, "buffer", None) if _is_batch(args) else None
    if buffer is None:
        return run_decode(args, sys.stdin, sys.stdout, sys.stderr)
    stdin = io.TextIOWrapper(buffer, encoding="utf-8", errors="replace")
    try:
        return run_decode(args, stdin, sys.stdout, sys.stderr)
    finally:
        stdin.detach()  # leave sys.stdin's buffer open for whoever owns it


def main(argv: list[str] | None = None) -> int:
    """``schwebe decode`` on its own: ``argv`` without the leading 'decode'."""
    args = build_parser().parse_args(argv)
    try:
        return _run_stdio(args)
    except BrokenPipeError:
        sys.stderr.close()
        return 0


def _lines(stdin: IO[str]) -> Iterator[str | None]:
    """Input lines without their newline; None for a line longer than MAX_LINE (skipped whole)."""
    while True:
        line = stdin.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith("\n"):
            while True:  # drain the rest of the overlong line in bounded pieces
                more = stdin.readline(MAX_LINE)
                if not more or more.endswith("\n"):
                    break
            yield None
            continue
        yield line.rstrip("\r\n")


def _batch(
    stdin: IO[str], stdout: IO[str], handle: Callable[[dict[str, Any]], dict[str, Any]],
    bare: Callable[[str], dict[str, Any]],
) -> int:
    """One JSON line out per line in; exit status 1 when any line failed, else 0.

    A line is a JSON object, or the bare form ``bare`` turns into one (hex for phy/gwmp,
    ``MODEL FPORT HEX`` for sensor), so a plain list of captured frames works as it is.
    """
    failed = 0
    for line in _lines(stdin):
        try:
            if line is None:
                raise DecodeError("line_too_long", f"input line longer than {MAX_LINE} characters")
            text = line.strip()
            if text[:1] in ("{", "[", "\""):  # JSON (only an object is a valid line)
                try:
                    obj = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    raise DecodeError("bad_json", f"line is not JSON: {exc.msg}") from None
            elif not text:
                raise DecodeError("bad_input", "empty line")
            else:
                obj = bare(text)
            if not isinstance(obj, dict):
                raise DecodeError("bad_json", "each line must be a JSON object")
            result = handle(obj)
        except (ValueError, TypeError, OverflowError) as exc:  # FrameError, DecodeError too
            result = {"error": error_object(exc)}
            failed += 1
        stdout.write(orjson.dumps(result).decode("utf-8"))
        stdout.write("\n")
        stdout.flush()  # a consumer reading a live capture sees each answer at once
    return 1 if failed else 0


def _bare_hex(field: str) -> Callable[[str], dict[str, Any]]:
    def parse(text: str) -> dict[str, Any]:
        return {field: text}

    return parse


def _bare_sensor(text: str) -> dict[str, Any]:
    parts = text.split()
    if len(parts) != 3:
        raise DecodeError("bad_input", "a bare line is MODEL FPORT HEX (or give a JSON object)")
    return {"model": parts[0], "fPort": parts[1], "bytes": parts[2]}


def _field(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj:
        raise DecodeError("bad_input", f"line has no {name!r} field")
    return obj[name]


def _mapping(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if value is None:  # absent or null: none given
        return {}
    if not isinstance(value, dict):
        raise DecodeError("bad_input", f"{name!r} must be a JSON object")
    return value


def run_decode(args: argparse.Namespace, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> int:
    """Run one parsed ``decode`` command; 0 on success, 2 on bad input in single mode."""
    what = args.decode_command
    prog = f"schwebe decode {what}"
    try:
        if what == "phy":
            keys: dict[str, Any] = {}
            params: dict[str, Any] = {}
            for name, value in args.key:
                keys[name] = value
            for name, value in args.param:
                params[name] = value
            if args.hex == "-":
                # Keys/params on the command line serve as defaults for every line.
                return _batch(
                    stdin,
                    stdout,
                    lambda o: decode_phy(
                        _field(o, "phy"),
                        {**keys, **_mapping(o, "keys")},
                        {**params, **_mapping(o, "params")},
                    ),
                    _bare_hex("phy"),
                )
            result = decode_phy(args.hex, keys, params)
        elif what == "gwmp":
            if args.hex == "-":
                return _batch(stdin, stdout, lambda o: decode_gwmp(_field(o, "gwmp")),
                              _bare_hex("gwmp"))
            result = decode_gwmp(args.hex)
        elif what == "sensor":
            if args.list:
                if args.args:
                    raise DecodeError("bad_input", "--list takes no other arguments")
                result_list = list_models()
                stdout.write(orjson.dumps(result_list).decode("utf-8") + "\n")
                stdout.flush()
                return 0
            if args.args == ["-"]:
                return _batch(
                    stdin,
                    stdout,
                    lambda o: decode_sensor(
                        _field(o, "model"), _field(o, "fPort"), _field(o, "bytes")
                    ),
                    _bare_sensor,
                )
            if len(args.args) != 3:
                raise DecodeError("bad_input", "expected MODEL FPORT HEX, or -, or --list")
            model, fport, payload = args.args
            result = decode_sensor(model, fport, payload)
        else:  # pragma: no cover - argparse restricts the choices
            raise DecodeError("bad_input", f"unknown decode command {what!r}")
    except (ValueError, TypeError, OverflowError) as exc:  # FrameError, DecodeError too
        err = error_object(exc)
        stderr.write(f"{prog}: {err['kind']}: {err['detail']}\n")
        stderr.flush()
        return 2
    stdout.write(orjson.dumps(result).decode("utf-8") + "\n")
    stdout.flush()
    return 0
