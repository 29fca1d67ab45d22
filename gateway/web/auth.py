"""Password hashing and request authentication for the local web page.

Passwords are stored only as scrypt hashes (`schwebe web hash-password`); there
is no default password: with none configured, only /healthz answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p),
            dklen=len(digest_hex) // 2,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except ValueError:  # bad base64 (binascii.Error), non-ASCII text, bad UTF-8
        return None
    return (user, password) if sep else None


def bearer_ok(header: str | None, token: str | None) -> bool:
    if not token or not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].encode(), token.encode())


class Lockout:
    """Failed logins per client and per login name, with a growing wait.

    A client gets ``free`` attempts, then waits ``base`` seconds, doubling with each further
    failure up to ``cap``; a login name (every client together) locks the same way after
    ``account_free`` failures, so a botnet of addresses gains nothing. Names are counted
    whether or not they exist (a lockout must not tell which do). A success clears the client
    and the name. Bounded: at most ``max_clients`` clients and names are remembered (the
    oldest forgotten).
    """

    def __init__(self, *, free: int = 5, base: float = 1.0, cap: float = 900.0,
                 account_free: int = 50, max_clients: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.base, self.cap = free, base, cap
        self.account_free, self.max_clients = account_free, max_clients
        self.clock = clock
        self._clients: dict[str, tuple[int, float]] = {}  # client -> (failures, locked until)
        self._accounts: dict[str, tuple[int, float]] = {}  # login name -> the same

    def retry_after(self, client: str, account: str | None = None) -> float:
        """Seconds this client (for this name) must wait before the next attempt (0: go ahead)."""
        now = self.clock()
        _, until = self._clients.get(client, (0, 0.0))
        _, account_until = (self._accounts.get(account[:64], (0, 0.0)) if account is not None
                            else (0, 0.0))
        return max(0.0, until - now, account_until - now)

    def _wait(self, failures: int, free: int) -> float:
        over = failures - free
        return 0.0 if over < 0 else min(self.cap, self.base * 2.0 ** min(over, 30))

    def _count(self, table: dict[str, tuple[int, float]], key: str, free: int) -> None:
        n = table.pop(key, (0, 0.0))[0] + 1
        if len(table) >= self.max_clients:
            table.pop(next(iter(table)))
        table[key] = (n, self.clock() + self._wait(n, free))

    def failed(self, client: str, account: str | None = None) -> None:
        self._count(self._clients, client, self.free)
        if account is not None:
            self._count(self._accounts, account[:64], self.account_free)

    def succeeded(self, client: str, account: str | None = None) -> None:
        self._clients.pop(client, None)
        if account is not None:
            self._accounts.pop(account[:64], None)
