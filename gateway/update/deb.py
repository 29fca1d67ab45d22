"""What a Debian package says about itself, read without dpkg (operators may not run Debian).

A ``.deb`` is an ar archive: ``debian-binary`` ("2.0"), ``control.tar.*`` (the control
file) and ``data.tar.*`` (the tree). Only what `schwebe fleet release` and the root step
need is read: Package, Version, Architecture, and whether the tree holds the release slot
``opt/schwebe/releases/<version>/bin/schwebe``.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PACKAGE = "schwebe"
VERSION_RE = re.compile(r"[0-9][A-Za-z0-9.+~-]{0,63}")
ARCH_RE = re.compile(r"[a-z0-9]{2,16}")
_AR_MAGIC = b"!<arch>\n"
_COMPRESSIONS = {"": "r|", ".gz": "r|gz", ".xz": "r|xz", ".bz2": "r|bz2"}


class DebError(ValueError):
    """Not a usable schwebe package; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class DebInfo:
    package: str
    version: str
    arch: str

    @property
    def slot(self) -> str:
        """The release slot the package installs, relative to the root."""
        return f"opt/schwebe/releases/{self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.package}_{self.version}_{self.arch}.deb"


def _members(f: BinaryIO, where: str) -> dict[str, tuple[int, int]]:
    """ar member name -> (offset, size)."""
    if f.read(8) != _AR_MAGIC:
        raise DebError(f"{where}: not a Debian package (no ar archive header; a .deb starts "
                       "with '!<arch>')")
    out: dict[str, tuple[int, int]] = {}
    while True:
        head = f.read(60)
        if not head:
            return out
        if len(head) < 60 or head[58:60] != b"`\n":
            raise DebError(f"{where}: damaged ar archive near byte {f.tell() - len(head)}")
        name = head[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(head[48:58].decode("ascii").strip())
        except ValueError:
            raise DebError(f"{where}: damaged ar member header for {name!r}") from None
        out[name] = (f.tell(), size)
        f.seek(size + (size & 1), io.SEEK_CUR)


def _tar(f: BinaryIO, members: dict[str, tuple[int, int]], stem: str, where: str) -> tarfile.TarFile:
    for suffix, mode in _COMPRESSIONS.items():
        if stem + suffix not in members:
            continue
        offset, size = members[stem + suffix]
        fileobj: BinaryIO
        if stem == "control.tar":  # small: read whole
            f.seek(offset)
            fileobj = io.BytesIO(f.read(size))
        else:  # the whole tree: streamed
            fileobj = io.BufferedReader(_Window(f, offset, size))
        return tarfile.open(fileobj=fileobj, mode=mode)  # type: ignore[call-overload,no-any-return]
    found = sorted(m for m in members if m.startswith(stem))
    if found:
        raise DebError(f"{where}: {found[0]} is compressed in a way this tool cannot read; build "
                       "the package with xz or gzip (deploy/build-deb.sh does)")
    raise DebError(f"{where}: not a Debian package: no {stem}.* member (has {', '.join(members) or 'none'})")


class _Window(io.RawIOBase):
    """A read-only view of ``size`` bytes at ``offset`` (the data member, streamed)."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self.f, self.left = f, size
        f.seek(offset)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        data = self.f.read(n)
        b[:len(data)] = data
        self.left -= len(data)
        return len(data)


def control_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line[:1] in (" ", "\t") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def inspect(path: Path, *, check_tree: bool = True) -> DebInfo:
    """Package, version and architecture of ``path``; DebError naming what is wrong.

    ``check_tree`` also reads the data member (the whole tree, streamed) to see that it holds
    the release slot with its ``bin/schwebe``.
    """
    where = str(path)
    try:
        with path.open("rb") as f:
            members = _members(f, where)
            if "debian-binary" not in members:
                raise DebError(f"{where}: not a Debian package: no debian-binary member")
            f.seek(members["debian-binary"][0])
            if not f.read(members["debian-binary"][1]).startswith(b"2."):
                raise DebError(f"{where}: Debian package format is not 2.x")
            try:
                with _tar(f, members, "control.tar", where) as tar:
                    control = None
                    for m in tar:
                        if m.isfile() and m.name.lstrip("./") == "control":
                            fh = tar.extractfile(m)
                            control = fh.read(65536).decode("utf-8", "replace") if fh else None
                            break
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise DebError(f"{where}: control member unreadable: {exc}") from None
            if control is None:
                raise DebError(f"{where}: the control member has no control file")
            fields = control_fields(control)
            pkg, ver, arch = (fields.get(k, "") for k in ("Package", "Version", "Architecture"))
            if pkg != PACKAGE:
                raise DebError(f"{where}: a package of {pkg or 'no name'!r}, not of {PACKAGE!r} "
                               "(make it with `make deb`)")
            if not VERSION_RE.fullmatch(ver) or ":" in ver:
                raise DebError(f"{where}: Version {ver!r} cannot name a release slot "
                               "(digits, letters, . + ~ -; no epoch)")
            if not ARCH_RE.fullmatch(arch) or arch == "all":
                raise DebError(f"{where}: Architecture {arch!r}: a release is built for one "
                               "architecture (amd64, arm64, armhf)")
            info = DebInfo(pkg, ver, arch)
            if check_tree:
                want = f"{info.slot}/bin/schwebe"
                try:
                    with _tar(f, members, "data.tar", where) as tar:
                        found = any(m.name.lstrip("./") == want for m in tar)
                except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
                    raise DebError(f"{where}: data member unreadable: {exc}") from None
                if not found:
                    raise DebError(f"{where}: the package has no /{want}: not a release slot "
                                   f"(version {ver} must install /{info.slot}, as `make deb` does)")
            return info
    except OSError as exc:
        raise DebError(f"{where}: cannot read: {exc.strerror}") from None
