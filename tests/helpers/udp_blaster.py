"""Send datagrams at a steady rate from a separate process, like a packet forwarder would.

Run as ``python -m tests.helpers.udp_blaster HOST PORT RATE SECONDS POOL_FILE``; the pool file
holds the datagrams as 2-byte big-endian lengths followed by the bytes, sent round-robin.
Prints one JSON line: ``{"sent": N, "acks": M}``. A process of its own keeps the sender off
the server's interpreter lock, so the test measures the server, not the two fighting.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time


def read_pool(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        blob = f.read()
    pool: list[bytes] = []
    i = 0
    while i < len(blob):
        n = int.from_bytes(blob[i : i + 2], "big")
        pool.append(blob[i + 2 : i + 2 + n])
        i += 2 + n
    return pool


def write_pool(path: str, pool: list[bytes]) -> None:
    with open(path, "wb") as f:
        for datagram in pool:
            f.write(len(datagram).to_bytes(2, "big") + datagram)


def blast(addr: tuple[str, int], pool: list[bytes], rate: float, seconds: float) -> tuple[int, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(addr)
    sock.setblocking(False)
    sent = acks = 0
    start = time.monotonic()
    try:
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while sent < due:
                sock.send(pool[sent % len(pool)])
                sent += 1
            while True:
                try:
                    sock.recv(64)
                    acks += 1
                except BlockingIOError:
                    break
            time.sleep(0.002)
        sock.setblocking(True)
        sock.settimeout(1.0)
        with contextlib.suppress(TimeoutError):
            while True:
                sock.recv(64)
                acks += 1
    finally:
        sock.close()
    return sent, acks


def main(argv: list[str]) -> int:
    host, port, rate, seconds, pool_file = argv
    sent, acks = blast((host, int(port)), read_pool(pool_file), float(rate), float(seconds))
    print(json.dumps({"sent": sent, "acks": acks}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
