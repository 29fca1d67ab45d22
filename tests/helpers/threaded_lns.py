"""A network server's Semtech UDP side on its own thread, for tests that drive a real daemon
process from synchronous code (soak, clock steps)."""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class ThreadedLns:
    """PULL_DATA gets PULL_ACK; PUSH_DATA goes to `on_push` and gets PUSH_ACK while `up`, and
    gets nothing otherwise (a server that is away)."""

    def __init__(self, on_push: Callable[[bytes], None] | None = None, *, up: bool = True) -> None:
        self.on_push = on_push
        self.up = up
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            if len(data) >= 12 and data[3] == 0 and self.up:  # PUSH_DATA
                if self.on_push is not None:
                    self.on_push(data[12:])
                self.sock.sendto(data[:3] + b"\x01", addr)
            elif len(data) >= 4 and data[3] == 2:  # PULL_DATA
                self.sock.sendto(data[:3] + b"\x04", addr)
