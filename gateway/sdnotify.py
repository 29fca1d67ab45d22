"""systemd notification protocol (sd_notify) in a few lines, no dependency.

Does nothing when NOTIFY_SOCKET is unset, so the same code runs under systemd,
in a terminal and in tests (which pass their own socket path).
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger("schwebe.sdnotify")


class Notifier:
    def __init__(self, socket_path: str | None, watchdog_usec: str | None = None) -> None:
        self._addr: str | None = None
        if socket_path:
            # '@' names an abstract socket (leading NUL on the wire)
            self._addr = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
        self.watchdog_interval: float | None = None
        if watchdog_usec and watchdog_usec.isdigit() and int(watchdog_usec) > 0:
            # ping at half the deadline, as systemd recommends
            self.watchdog_interval = int(watchdog_usec) / 2e6

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def notify(self, state: str) -> None:
        if self._addr is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self._addr)
                s.sendall(state.encode())
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", state.split("=")[0], exc)
