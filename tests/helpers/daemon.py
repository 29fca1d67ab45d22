"""`schwebe run` as a real process for end-to-end tests: start, read /api/status, wait, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """One `schwebe run --config FILE`; stderr kept in a file for the assertions on logs."""

    def __init__(self, config: Path, web_port: int, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.web_port = web_port
        self.log = config.with_suffix(".log")
        self._log = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, **(env or {})})

    def status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.web_port}/api/status"
        with urllib.request.urlopen(url, timeout=5) as r:
            result: dict[str, Any] = json.load(r)
            return result

    def wait(self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        """Poll /api/status until ``check`` holds; fails naming ``what`` and the last status."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | Exception = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.output()[-3000:]}"
            try:
                last = self.status()
                if check(last):
                    return last
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout}s; last status: {str(last)[:3000]}")

    def output(self) -> str:
        self._log.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
