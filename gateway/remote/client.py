"""One TUF check: which config version the repository offers this gateway, verified.

Synchronous (python-tuf's ngclient is); the manager runs it in a thread. The trusted
metadata lives in ``<data_dir>/remote/metadata``, shared by every way in (HTTPS, MQTT,
bundle), so a version seen once can never be replaced by an older one from another path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api import exceptions
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from gateway.remote.target import MAX_TARGET


class Refused(Exception):
    """The repository's answer cannot be trusted or used; the message is the one-line reason."""

    def __init__(self, reason: str, version: int | None = None) -> None:
        super().__init__(reason)
        self.version = version


@dataclass(frozen=True)
class Offer:
    version: int
    target: str  # configs/<eui>.toml or configs/all.toml
    text: str | None  # None: not downloaded (a version the caller said it has no use for)
    signed_by: tuple[str, ...]  # key ids (first 8 hex digits) that signed the targets role


def _reason(exc: Exception) -> str:
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    if isinstance(exc, exceptions.ExpiredMetadataError):
        return f"expired metadata: {detail}"
    if isinstance(exc, exceptions.UnsignedMetadataError):
        return f"signatures below threshold or from an untrusted key: {detail}"
    if isinstance(exc, exceptions.BadVersionNumberError):
        return f"replayed older metadata (rollback): {detail}"
    if isinstance(exc, exceptions.LengthOrHashMismatchError | exceptions.DownloadLengthMismatchError):
        return f"tampered: length or hash does not match the signed metadata: {detail}"
    if isinstance(exc, exceptions.SlowRetrievalError):
        return f"repository timed out: {detail}"
    if isinstance(exc, exceptions.DownloadError):
        return f"repository unreachable: {detail}"
    return f"repository refused: {detail}"


def open_updater(*, fetcher: FetcherInterface, base_url: str, metadata_dir: Path, trusted_root: Path,
                 target_dir: Path | None = None) -> Updater:
    """An ngclient Updater over ``metadata_dir``, bootstrapped from ``trusted_root`` the first
    time (afterwards the metadata there, checked on every refresh, is what is trusted)."""
    metadata_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = None
    if not (metadata_dir / "root.json").exists():
        try:
            bootstrap = trusted_root.read_bytes()
        except OSError as exc:
            raise Refused(f"trusted root {trusted_root}: {exc.strerror}") from None
    base = base_url.rstrip("/") + "/"
    return Updater(
        metadata_dir=str(metadata_dir), metadata_base_url=base + "metadata/",
        target_dir=None if target_dir is None else str(target_dir),
        target_base_url=base + "targets/", fetcher=fetcher,
        config=UpdaterConfig(targets_max_length=1 << 20, snapshot_max_length=1 << 20),
        bootstrap=bootstrap,
    )


def check(*, fetcher: FetcherInterface, base_url: str, state_dir: Path, trusted_root: Path,
          eui: int, skip: Callable[[int], bool] = lambda v: False) -> Offer | None:
    """The config offered to ``eui`` (its own target, else ``all``), or None when there is none.

    A version ``skip`` says is of no use (running, or once rolled back) is not downloaded.

    Raises Refused with the reason for anything TUF or our limits do not accept.
    """
    download_dir = state_dir / "download"
    download_dir.mkdir(parents=True, exist_ok=True)
    metadata_dir = state_dir / "metadata"
    try:
        updater = open_updater(fetcher=fetcher, base_url=base_url, metadata_dir=metadata_dir,
                               trusted_root=trusted_root, target_dir=download_dir)
        updater.refresh()
        target = f"configs/{eui:016x}.toml"
        info = updater.get_targetinfo(target)
        if info is None:
            target = "configs/all.toml"
            info = updater.get_targetinfo(target)
        if info is None:
            return None
        version = info.custom.get("version") if isinstance(info.custom, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise Refused(f"{target}: no version in its signed metadata (custom.version)", None)
        if skip(version):
            return Offer(version, target, None, ())
        if info.length > MAX_TARGET:
            raise Refused(f"{target} version {version}: oversized target ({info.length} bytes, "
                          f"at most {MAX_TARGET})", version)
        try:
            path = Path(updater.download_target(info, str(download_dir / "config.toml")))
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise Refused(f"{target} version {version}: {_reason(exc)}", version) from None
    except Refused:
        raise
    except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
        raise Refused(_reason(exc)) from None
    except (OSError, ValueError) as exc:  # a damaged local cache, bad JSON from the server
        raise Refused(f"repository refused: {' '.join(str(exc).split())[:200]}") from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise Refused(f"{target} version {version}: not UTF-8 text", version) from None
    finally:
        path.unlink(missing_ok=True)
    return Offer(version, target, text, _signers(metadata_dir / "targets.json"))


def _signers(path: Path) -> tuple[str, ...]:
    try:
        sigs = json.loads(path.read_bytes()).get("signatures", [])
        return tuple(sorted(str(s["keyid"])[:8] for s in sigs if s.get("sig")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return ()



@dataclass(frozen=True)
class ReleaseOffer:
    version: str
    arch: str
    target: str  # releases/<eui>/schwebe_<arch>.deb or releases/all/schwebe_<arch>.deb
    path: Path | None  # the verified download; None when ``skip`` said no


def release_names(eui: int, arch: str) -> tuple[str, str]:
    """The release targets a gateway looks for, its own first (as with configs)."""
    return f"releases/{eui:016x}/schwebe_{arch}.deb", f"releases/all/schwebe_{arch}.deb"


def release_info(updater: Updater, target: str, arch: str) -> tuple[Any, str]:
    """(TargetFile, version) of a release target from refreshed metadata; Refused if unusable."""
    from gateway.update import MAX_RELEASE
    from gateway.update.deb import VERSION_RE

    info = updater.get_targetinfo(target)
    if info is None:
        raise Refused(f"{target}: not in the signed targets")
    custom = info.custom if isinstance(info.custom, dict) else {}
    version, t_arch = custom.get("version"), custom.get("arch")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version) or t_arch != arch:
        raise Refused(f"{target}: its signed metadata does not name a version for {arch} "
                      f"(custom: {str(custom)[:120]}); publish it with `schwebe fleet release`")
    if info.length > MAX_RELEASE:
        raise Refused(f"{target} release {version}: oversized ({info.length} bytes, at most "
                      f"{MAX_RELEASE})")
    return info, version


def check_release(*, fetcher: FetcherInterface, base_url: str, state_dir: Path, trusted_root: Path,
                  eui: int, arch: str, dest: Callable[[str], Path],
                  skip: Callable[[str], bool] = lambda v: False) -> ReleaseOffer | None:
    """The release offered to this gateway and architecture, downloaded and verified by
    ngclient (length and hashes from the signed targets) to ``dest(version)``; None when the
    repository offers none. Same trusted metadata as the config check (``state_dir``)."""
    try:
        updater = open_updater(fetcher=fetcher, base_url=base_url, metadata_dir=state_dir / "metadata",
                               trusted_root=trusted_root)
        updater.refresh()
        target = next((t for t in release_names(eui, arch) if updater.get_targetinfo(t) is not None), None)
        if target is None:
            return None
        info, version = release_info(updater, target, arch)
        if skip(version):
            return ReleaseOffer(version, arch, target, None)
        path = dest(version)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            updater.download_target(info, str(path))
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            path.unlink(missing_ok=True)
            raise Refused(f"{target} release {version}: {_reason(exc)}") from None
        return ReleaseOffer(version, arch, target, path)
    except Refused:
        raise
    except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
        raise Refused(_reason(exc)) from None
    except (OSError, ValueError) as exc:
        raise Refused(f"repository refused: {' '.join(str(exc).split())[:200]}") from None
