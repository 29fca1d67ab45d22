"""A buffer writer process for the crash tests: it appends without pause and reports progress.

``kill`` mode: appends, commits every few ms, delivers through cursor ``c`` and acknowledges
at once; stdout lines (flushed): ``C <i>`` after a commit that holds every record up to i,
``D <run>:<i> ...`` after a batch was acknowledged. ``term`` mode: appends through
``Buffer.run()`` and prints ``A <i>`` after each append; SIGTERM makes it stop and commit.
Usage: python -m tests.helpers.buffer_writer MODE DB RUN
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from gateway.buffer import Buffer
from gateway.records import make_record


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def kill_mode(buf: Buffer, run: int) -> None:
    buf.register("c", start="oldest")
    i = 0

    async def produce() -> None:
        nonlocal i
        while True:
            for _ in range(20):
                i += 1
                kind = "parking" if i % 7 == 0 else "uplink"
                buf.append(make_record(kind, "writer", {"r": run, "i": i, "pad": "x" * 60}))
            await asyncio.sleep(0.001)

    async def commit() -> None:
        while True:
            await asyncio.sleep(0.005)
            upto = i
            if buf.commit():
                _out(f"C {upto}")

    async def consume() -> None:
        while True:
            batch = await buf.next_batch("c", 200, 1 << 20)
            buf.ack("c", batch)
            ids = [r.decoded() for _, r in batch.records]
            _out("D " + " ".join(f"{d['r']}:{d['i']}" for d in ids))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(produce())
        tg.create_task(commit())
        tg.create_task(consume())


async def term_mode(buf: Buffer, run: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    committer = asyncio.create_task(buf.run())
    i = 0
    while not stop.is_set():
        for _ in range(50):
            i += 1
            buf.append(make_record("parking", "writer", {"r": run, "i": i}))
        _out(f"A {i}")
        await asyncio.sleep(0.001)
    committer.cancel()  # run() commits everything before it returns
    try:
        await committer
    except asyncio.CancelledError:
        pass
    buf.close()
    _out("CLOSED")


def main(argv: list[str]) -> int:
    mode, db, run = argv[0], Path(argv[1]), int(argv[2])
    buf = Buffer(db, max_bytes=1 << 30, commit_interval=0.05)
    buf.open()
    _out("OPEN " + str(len(buf.stats()["recovery_events"])))
    asyncio.run(kill_mode(buf, run) if mode == "kill" else term_mode(buf, run))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
