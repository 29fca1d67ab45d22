"""The `schwebe decode` command line: argparse registration, single-shot runs and the JSON Lines
batch runner with bounded memory, around the pure builders of gateway.decode.
Bad input becomes an error line or a one-line stderr message with exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, BinaryIO, Final, NoReturn

import orjson

from gateway.frames import decode_lines

# gateway.frames.decode is imported where it is used, not here: it pulls in LoRaWAN crypto
# (the cryptography package, ~8 MiB resident), and `schwebe run` registers this command's
# parser on every start without ever decoding through it.

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
    """Run on the process's stdio. A batch reads and writes bytes (decoded per line as UTF-8
    with bad bytes replaced, so a corrupt capture line becomes an error line instead of ending
    the batch)."""
    stdin_b = getattr(sys.stdin, "buffer", None) if _is_batch(args) else None
    stdout_b = getattr(sys.stdout, "buffer", None)
    if stdin_b is None or stdout_b is None:
        return run_decode(args, sys.stdin, sys.stdout, sys.stderr)
    sys.stdout.flush()
    return run_decode(args, sys.stdin, sys.stdout, sys.stderr, binary=(stdin_b, stdout_b))


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


#: Bytes asked of stdin per read; a read returns what is there, so a live capture is answered
#: line by line, and a file in few large pieces.
_READ: Final = 1 << 20
#: Bytes that hold more than MAX_LINE characters whatever they are (UTF-8: at most 4 a char).
_SURELY_LONG: Final = 4 * MAX_LINE


def _checked(line: bytes) -> bytes | None:
    """The line, or None when it holds more than MAX_LINE characters."""
    if len(line) > MAX_LINE and (
        len(line) > _SURELY_LONG or len(line.decode("utf-8", "replace")) > MAX_LINE
    ):
        return None
    return line


def _byte_chunks(read: Callable[[int], bytes]) -> Iterator[bytes | None]:
    """What each read completes: a block of whole lines, each ended by \\n (\\r\\n and \\r
    become \\n, as text mode reads them), or None for a line longer than MAX_LINE whose
    end is still far (its bytes are dropped as they come: memory stays bounded)."""
    pending = b""  # the start of a line whose end has not come yet
    skipping = False  # inside an overlong line already reported
    drop_lf = False  # the last read ended in \\r: a \\n starting the next one belongs to it
    while True:
        data = read(_READ)
        if not data:
            if pending and not skipping:
                yield pending + b"\n"
            return
        if drop_lf and data[:1] == b"\n":
            data = data[1:]
        drop_lf = data[-1:] == b"\r"
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = data.rfind(b"\n") + 1
        if skipping:
            start = data.find(b"\n") + 1
            if not start:
                continue  # still inside the overlong line
            skipping = False
            data, cut, pending = data[start:], cut - start, b""
        if cut:
            head = data if cut == len(data) else data[:cut]
            yield pending + head if pending else head
            pending = data[cut:]
        else:
            pending += data
        if len(pending) > _SURELY_LONG:
            yield None
            skipping = True
            pending = b""


def _text_chunks(stdin: IO[str]) -> Iterator[bytes | None]:
    """Each line of a text stream on its own (it is answered before the next is read)."""
    for line in _lines(stdin):
        yield None if line is None else line.encode("utf-8", "surrogatepass") + b"\n"


def _fail(kind: str, detail: str) -> NoReturn:
    """Raise a DecodeError; the import stays off the path of lines that decode."""
    from gateway.frames.decode import DecodeError

    raise DecodeError(kind, detail) from None


def _answer(
    line: bytes | None, handle: Callable[[dict[str, Any]], dict[str, Any]],
    bare: Callable[[str], dict[str, Any]],
) -> tuple[bytes, bool]:
    """The general path for one batch line: its JSON answer and whether it failed.

    A line is a JSON object, or the bare form ``bare`` turns into one (hex for phy/gwmp,
    ``MODEL FPORT HEX`` for sensor), so a plain list of captured frames works as it is.
    """
    if line is not None and len(line) > MAX_LINE:
        line = _checked(line)
    try:
        if line is None:
            _fail("line_too_long", f"input line longer than {MAX_LINE} characters")
        text = line.decode("utf-8", "replace").strip()
        if text[:1] in ("{", "[", "\""):  # JSON (only an object is a valid line)
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                _fail("bad_json", f"line is not JSON: {exc.msg}")
        elif not text:
            _fail("bad_input", "empty line")
        else:
            obj = bare(text)
        if not isinstance(obj, dict):
            _fail("bad_json", "each line must be a JSON object")
        result = handle(obj)
    except (ValueError, TypeError, OverflowError) as exc:  # FrameError, DecodeError too
        from gateway.frames.decode import error_object

        return orjson.dumps({"error": error_object(exc)}), True
    return orjson.dumps(result), False


def _batch(
    chunks: Iterator[bytes | None], write: Callable[[bytes], None],
    handle: Callable[[dict[str, Any]], dict[str, Any]], bare: Callable[[str], dict[str, Any]],
    fast: str | None = None,
) -> int:
    """One JSON line out per line in, written as soon as its read is answered; exit status 1
    when any line failed, else 0.

    ``fast`` ("phy" or "gwmp") lets the frame codec write the lines it can (the compiled
    module writes whole lines in C; the twin takes the general path for each)."""
    failed = 0

    def answer(line: bytes | None) -> tuple[bytes, bool]:
        return _answer(line, handle, bare)

    bad: int
    for block in chunks:
        if block is None:
            out, bad = answer(None)
            out += b"\n"
        elif fast is not None:
            out, bad = decode_lines(fast, block, answer)
        else:
            parts = []
            bad = 0
            for line in block.split(b"\n")[:-1]:
                text, line_bad = answer(line)
                bad += line_bad
                parts.append(text + b"\n")
            out = b"".join(parts)
        failed += bad
        write(out)
    return 1 if failed else 0


def _bare_hex(field: str) -> Callable[[str], dict[str, Any]]:
    def parse(text: str) -> dict[str, Any]:
        return {field: text}

    return parse


def _bare_sensor(text: str) -> dict[str, Any]:
    parts = text.split()
    if len(parts) != 3:
        _fail("bad_input", "a bare line is MODEL FPORT HEX (or give a JSON object)")
    return {"model": parts[0], "fPort": parts[1], "bytes": parts[2]}


def _field(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj:
        _fail("bad_input", f"line has no {name!r} field")
    return obj[name]


def _mapping(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if value is None:  # absent or null: none given
        return {}
    if not isinstance(value, dict):
        _fail("bad_input", f"{name!r} must be a JSON object")
    return value


def run_decode(
    args: argparse.Namespace, stdin: IO[str], stdout: IO[str], stderr: IO[str],
    binary: tuple[BinaryIO, BinaryIO] | None = None,
) -> int:
    """Run one parsed ``decode`` command; 0 on success, 2 on bad input in single mode.

    ``binary`` (stdin's and stdout's byte streams) makes a batch read and write bytes: the
    fast path of a capture file. Without it a batch reads ``stdin`` line by line."""
    from gateway.frames.decode import (
        DecodeError,
        decode_gwmp,
        decode_phy,
        decode_sensor,
        error_object,
        list_models,
    )

    what = args.decode_command
    chunks: Iterator[bytes | None]
    if binary is not None:
        chunks = _byte_chunks(binary[0].read1)  # type: ignore[attr-defined]
        out_b = binary[1]

        def write(data: bytes) -> None:
            out_b.write(data)
            out_b.flush()  # a consumer reading a live capture sees each answer at once
    else:
        chunks = _text_chunks(stdin)

        def write(data: bytes) -> None:
            stdout.write(data.decode("utf-8"))
            stdout.flush()

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
                    chunks,
                    write,
                    lambda o: decode_phy(
                        _field(o, "phy"),
                        {**keys, **_mapping(o, "keys")},
                        {**params, **_mapping(o, "params")},
                    ),
                    _bare_hex("phy"),
                    # keys on the command line apply to every line: only the general path
                    fast=None if keys or params else "phy",
                )
            result = decode_phy(args.hex, keys, params)
        elif what == "gwmp":
            if args.hex == "-":
                return _batch(chunks, write, lambda o: decode_gwmp(_field(o, "gwmp")),
                              _bare_hex("gwmp"), fast="gwmp")
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
                    chunks,
                    write,
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
