"""Frame codec benchmark: compiled module, Python twin and a public peer on the same corpus.

Run: .venv/bin/python tests/bench/bench_frames.py [--frames N] [--peer-python PATH]
Prints ns per frame (or per rxpk) and ratios. Never a pass/fail: machines differ. Each task's
implementations are timed alternately, repeat by repeat (best of --repeat each), so the load
of a shared machine falls on both sides of a ratio.
`--cli-frames N --cli-runs R` (defaults 50 000 and 5; 0 skips) also times `schwebe decode phy -`
and `decode gwmp -` on N frames as a user runs them (a new process, JSON Lines in and out,
startup included), compiled and twin alternated, medians of R runs, outputs compared.
The peer (PyPI `liblora`, module `loramsg`) runs in its own interpreter when it is not
importable here, e.g. one made with: python3 -m venv /tmp/peervenv && /tmp/peervenv/bin/pip
install liblora
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.frames import _frames_py as twin

PEER_SCRIPT = r"""
import sys, time
from loramsg import unpack_updf
frames = [bytes.fromhex(line) for line in open(sys.argv[1]).read().split()]
best = float("inf")
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter_ns()
    for f in frames:
        unpack_updf(f)
    best = min(best, time.perf_counter_ns() - t0)
print(best / len(frames))
"""


def make_frames(n: int, rng: random.Random) -> list[bytes]:
    """City traffic: mostly unconfirmed uplinks of parking sensors, some with FOpts, few joins."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append(bytes([0x00]) + rng.randbytes(22))
            continue
        mtype = 2 if r < 0.9 else 4
        fopts = rng.randbytes(rng.choice([0, 0, 0, 1, 3, 5]))
        body = rng.randbytes(rng.choice([2, 4, 8, 11, 20, 51]))
        out.append(
            bytes([mtype << 5])
            + rng.randbytes(4)
            + bytes([0x80 | len(fopts)])
            + rng.randbytes(2)
            + fopts
            + bytes([rng.randint(1, 223)])
            + body
            + rng.randbytes(4)
        )
    return out


def make_datagrams(frames: list[bytes], rng: random.Random) -> tuple[list[bytes], int]:
    dgs, count, i = [], 0, 0
    while i < len(frames):
        k = rng.choice([1, 1, 2, 3, 8])
        rxpk = []
        for f in frames[i : i + k]:
            rxpk.append(
                {
                    "jver": 1,
                    "tmst": rng.randrange(2**32),
                    "time": f"2024-05-01T10:00:00.{rng.randrange(10**6):06d}Z",
                    "chan": rng.randrange(8),
                    "rfch": 0,
                    "freq": rng.choice([868.1, 868.3, 868.5, 867.1, 867.3]),
                    "mid": 8,
                    "stat": 1,
                    "modu": "LORA",
                    "datr": f"SF{rng.randint(7, 12)}BW125",
                    "codr": "4/5",
                    "rssis": rng.randint(-120, -30),
                    "lsnr": round(rng.uniform(-15, 12), 1),
                    "foff": rng.randint(-2000, 2000),
                    "rssi": rng.randint(-120, -30),
                    "size": len(f),
                    "data": base64.b64encode(f).decode(),
                }
            )
        dgs.append(twin.encode_push_data(rng.randrange(65536), 0xAA555A0000000101, rxpk))
        count += len(rxpk)
        i += k
    return dgs, count


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - t0)
    return best


def run_peer(frames: list[bytes], peer_python: str | None, repeat: int) -> float | None:
    data_frames = [f for f in frames if f[0] >> 5 in (2, 4)]
    try:
        from loramsg import unpack_updf  # type: ignore[import-not-found]
    except ImportError:
        unpack_updf = None
    if unpack_updf is not None:
        return best_of(lambda: [unpack_updf(f) for f in data_frames], repeat) / len(data_frames)
    if not peer_python or not os.path.exists(peer_python):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".hex", delete=False) as fh:
        fh.write("\n".join(f.hex() for f in data_frames))
    try:
        out = subprocess.run(
            [peer_python, "-c", PEER_SCRIPT, fh.name, str(repeat)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(fh.name)
    return float(out.stdout.strip())


def _cli_run(kind: str, path: Path, twin: bool) -> tuple[float, float, bytes]:
    """Wall and CPU seconds of one `schwebe decode KIND -` run on the file, and its output."""
    env = dict(os.environ, SCHWEBE_NO_EXTENSIONS="1" if twin else "0")
    cmd = [sys.executable, "-m", "gateway.cli", "decode", kind, "-"]
    out_path = path.with_suffix(".out")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with path.open("rb") as stdin, out_path.open("wb") as stdout:  # `... < capture > out`
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env,
                              check=False)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[:500]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out_path.read_bytes()


def cli_batches(n: int, runs: int) -> None:
    """The decode tool end to end, compiled vs twin, runs alternated (a shared machine's load
    hits both alike); medians, and the outputs compared byte for byte."""
    rng = random.Random(5)
    frames = make_frames(n, rng)
    dgs, n_rxpk = make_datagrams(frames, rng)
    print(f"\nschwebe decode ... - (new process, startup included), median of {runs} runs:")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, items, what in (
            ("phy", frames, f"{n} PHYPayloads"),
            ("gwmp", dgs, f"{len(dgs)} PUSH_DATA, {n_rxpk} rxpk"),
        ):
            path = Path(tmp) / f"{kind}.jsonl"
            path.write_text("".join(item.hex() + "\n" for item in items))
            res: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            outputs: dict[bool, bytes] = {}
            for _ in range(runs):
                for twin in (False, True):
                    wall, cpu, out = _cli_run(kind, path, twin)
                    res[twin].append((wall, cpu))
                    outputs[twin] = out
            same = "identical" if outputs[False] == outputs[True] else "DIFFERENT"
            wc, cc = (statistics.median(x[i] for x in res[False]) for i in (0, 1))
            wt, ct = (statistics.median(x[i] for x in res[True]) for i in (0, 1))
            print(f"  decode {kind} - on {what}: output {same} ({len(outputs[False])} bytes)")
            print(f"    cython  wall {wc * 1000:7.0f} ms  cpu {cc * 1000:7.0f} ms")
            print(
                f"    twin    wall {wt * 1000:7.0f} ms  cpu {ct * 1000:7.0f} ms"
                f"   {wt / wc:5.1f}x / {ct / cc:5.1f}x the compiled wall / cpu"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--peer-python", default="/tmp/peervenv/bin/python")
    ap.add_argument("--cli-frames", type=int, default=50000)
    ap.add_argument("--cli-runs", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(3)
    frames = make_frames(args.frames, rng)
    dgs, n_rxpk = make_datagrams(frames, rng)
    try:
        c: ModuleType | None = importlib.import_module("gateway.frames._frames_c")
    except ImportError:
        c = None
        print("compiled module not built: python setup.py build_ext --inplace")
    impls = [("twin", twin)] + ([("cython", c)] if c is not None else [])
    rows: dict[str, dict[str, float]] = {}
    small = frames[: max(1, len(frames) // 10)]  # the twin's batch is slow: time on a slice

    def record(task: str, name: str, ns: float) -> None:
        rows.setdefault(task, {})[name] = ns

    # Each task's implementations are timed alternately, repeat by repeat, so a slow spell of
    # this shared machine falls on both sides of a ratio, not on one of them.
    tasks: dict[str, dict[str, tuple[Callable[[], Any], int]]] = {}
    for name, mod in impls:
        parse = mod.parse_phy

        def phy_loop(parse: Callable[[bytes], Any] = parse) -> None:
            for f in frames:
                parse(f)

        tasks.setdefault("parse_phy (object)", {})[name] = (phy_loop, len(frames))
        sub = frames if name == "cython" else small

        def batch(mod: ModuleType = mod, sub: list[bytes] = sub) -> None:
            mod.parse_phy_batch(sub)

        tasks.setdefault("parse_phy_batch (numpy)", {})[name] = (batch, len(sub))
        decode = mod.decode_push_data

        def push_loop(decode: Callable[[bytes], Any] = decode) -> None:
            for d in dgs:
                decode(d)

        tasks.setdefault("decode_push_data (per rxpk)", {})[name] = (push_loop, n_rxpk)

        # The compiled Rxpk builds `fields` on first access: time the records' real cost too.
        def push_fields_loop(decode: Callable[[bytes], Any] = decode) -> None:
            for d in dgs:
                for r in decode(d).rxpk:
                    r.fields  # noqa: B018

        tasks.setdefault("decode_push_data + rxpk.fields (per rxpk)", {})[name] = (
            push_fields_loop,
            n_rxpk,
        )

        def push_batch(mod: ModuleType = mod) -> None:
            mod.push_data_batch(dgs)

        tasks.setdefault("push_data_batch (per rxpk)", {})[name] = (push_batch, n_rxpk)

    for task, fns in tasks.items():
        best = {name: float("inf") for name in fns}
        for _ in range(args.repeat):
            for name, (fn, _count) in fns.items():
                best[name] = min(best[name], best_of(fn, 1))
        for name, (_fn, count) in fns.items():
            record(task, name, best[name] / count)

    def stdlib_decode() -> None:  # the "Python with stdlib json" reference point
        for d in dgs:
            for r in json.loads(d[12:])["rxpk"]:
                twin.parse_phy(base64.b64decode(r["data"]))

    record("decode_push_data (per rxpk)", "stdlib json+twin", best_of(stdlib_decode, 3) / n_rxpk)
    peer = run_peer(frames, args.peer_python, args.repeat)
    if peer is not None:
        record("parse_phy (object)", "liblora", peer)

    print(f"corpus: {len(frames)} PHYPayloads, {len(dgs)} PUSH_DATA datagrams, {n_rxpk} rxpk")
    print(f"python {sys.version.split()[0]}, implementations: {', '.join(n for n, _ in impls)}")
    for task, res in rows.items():
        print(f"\n{task}")
        base = res.get("cython")
        for name, ns in res.items():
            ratio = f"  {ns / base:6.1f}x the compiled time" if base and name != "cython" else ""
            print(f"  {name:18s} {ns:10.1f} ns{ratio}")
    if c is not None:  # the corpus is what forwarders send: the fused scan must take it all
        print(f"\ncompiled PUSH_DATA bodies that took the general parser: {c._push_data_fallbacks()}")
    if peer is None:
        print("\n(peer liblora not found: see the module docstring)")
    if args.cli_frames > 0 and args.cli_runs > 0 and c is not None:  # 0 of either skips it
        cli_batches(args.cli_frames, args.cli_runs)


if __name__ == "__main__":
    main()
