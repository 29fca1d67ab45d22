"""Value parsers for the config: durations, sizes, host:port, hosts, IPs, EUIs, keys, DevAddrs.

Each takes one string and returns a value or raises ValueError saying what it accepts; none
reads files, touches sockets or knows about key paths (config.py adds those).
"""

from __future__ import annotations

import ipaddress
import re

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|min|h|d|w)\s*$")
_DURATION_UNITS = {
    "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0,
    "h": 3600.0, "d": 86400.0, "w": 604800.0,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20,
    "GB": 10**9, "GiB": 2**30, "TB": 10**12, "TiB": 2**40,
}


def parse_duration(text: str) -> float:
    """'250ms' -> 0.25 (seconds). Raises ValueError with the accepted forms."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. \"250ms\", \"1s\", \"5m\", \"7d\")")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(text: str) -> int:
    """'256MiB' -> 268435456 (bytes)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. \"64KiB\", \"256MiB\", \"2GB\")")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_hostport(text: str, *, default_host: str | None = None) -> tuple[str, int]:
    """'127.0.0.1:1700' or '[::1]:1700' or 'host.example:1700' -> (host, port)."""
    host, sep, port_s = text.rpartition(":")
    if not sep:
        raise ValueError(f"not host:port: {text!r} (use e.g. \"127.0.0.1:1700\")")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        if default_host is None:
            raise ValueError(f"missing host in {text!r}")
        host = default_host
    elif not is_valid_host(host):
        raise ValueError(f"bad host in {text!r}: {host!r} is neither an IP address nor a "
                         "host name (e.g. \"127.0.0.1:1700\", \"[::1]:1700\", \"lns.example.org:1700\")")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"bad port in {text!r} (0..65535)")
    return host, int(port_s)


_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def is_valid_host(host: str) -> bool:
    """An IP literal, or a host name made of RFC 1123 labels.

    A name whose last label is all digits ("999.999.1.1") is a mistyped address,
    never a name: no top-level domain is numeric.
    """
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return all(_LABEL_RE.match(label) for label in labels) and not labels[-1].isdigit()


def parse_ip(text: str) -> str:
    """An IP address literal -> its canonical text (as the socket layer reports peers)."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"not an IP address: {text!r} (e.g. \"192.0.2.10\"; "
                         "datagrams are matched by source address, never by name)") from None


def parse_eui(text: str) -> int:
    """A 64-bit EUI as hex (16 digits, ':' or '-' allowed) -> int."""
    clean = text.replace(":", "").replace("-", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{16}", clean):
        raise ValueError(f"not an EUI-64: {text!r} (16 hex digits, e.g. \"b827ebfffe000001\")")
    return int(clean, 16)


def parse_key(text: str) -> bytes:
    clean = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", clean):
        # never echo the value: it is a secret
        raise ValueError("not a 128-bit key (32 hex digits)")
    return bytes.fromhex(clean)


def parse_devaddr(text: str) -> int:
    clean = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8}", clean):
        raise ValueError(f"not a DevAddr: {text!r} (8 hex digits)")
    return int(clean, 16)


def parse_net_id(text: str) -> int:
    clean = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{6}", clean):
        raise ValueError(f"not a NetID: {text!r} (6 hex digits, e.g. \"000013\")")
    return int(clean, 16)


def parse_prefix(text: str) -> tuple[int, int]:
    """'26000000/7' -> (0x26000000, 7): a DevAddr prefix filter."""
    addr, sep, bits = text.partition("/")
    if not sep or not bits.isdigit() or not 0 <= int(bits) <= 32:
        raise ValueError(f"not a DevAddr prefix: {text!r} (use e.g. \"26000000/7\")")
    return parse_devaddr(addr), int(bits)


def safe_url(url: str) -> str:
    """A URL fit for logs and the status page: credentials in it (``user:pass@``) and query
    values (``?api_key=...``) are secrets, shown as ``***``; scheme, host, port and path stay."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return "<unparsable URL>"
    if "@" not in netloc and not parts.query and not parts.fragment:
        return url  # nothing secret in it: shown exactly as written
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(f"{q.partition('=')[0]}=***" if "=" in q else "***"
                     for q in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
