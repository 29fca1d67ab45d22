"""Where the TUF client's bytes come from: HTTPS, the MQTT mirror, or an on-site bundle.

All three feed python-tuf's ngclient through its FetcherInterface, so every byte is
checked the same way (signatures, thresholds, versions, expiry, hashes) whatever carried
it. The fetchers only move bytes and bound them; they decide nothing.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import urllib3
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from gateway import __version__
from gateway.remote import MAX_BUNDLE


class HttpsFetcher(FetcherInterface):
    """A static HTTPS repository; ``timestamp.json`` is asked for conditionally.

    The timestamp is fetched on every poll (that is how TUF sees freshness); with
    If-None-Match / If-Modified-Since an unchanged repository answers 304 and a few
    hundred gateways polling cost the server headers only.
    """

    def __init__(self, *, ca_file: Path | None = None, timeout: float = 20.0) -> None:
        self._pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED", ca_certs=str(ca_file) if ca_file else None,
            retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )
        self._validators: dict[str, tuple[dict[str, str], bytes]] = {}
        self.not_modified = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        headers = {"User-Agent": f"schwebe/{__version__}"}
        conditional = url.endswith("/timestamp.json")
        cached = self._validators.get(url) if conditional else None
        if cached is not None:
            headers.update(cached[0])
        try:
            resp = self._pool.request("GET", url, headers=headers, preload_content=False,
                                      redirect=False)
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: no answer in time") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"{url}: {exc}") from exc
        if resp.status == 304 and cached is not None:
            resp.release_conn()
            self.not_modified += 1
            return iter([cached[1]])
        if resp.status >= 300:
            resp.release_conn()
            raise exceptions.DownloadHTTPError(f"{url}: HTTP {resp.status}", resp.status)
        if conditional:
            body = resp.read(65536)  # ngclient bounds timestamp.json far lower; so do we
            resp.release_conn()
            validators = {}
            if resp.headers.get("ETag"):
                validators["If-None-Match"] = resp.headers["ETag"]
            if resp.headers.get("Last-Modified"):
                validators["If-Modified-Since"] = resp.headers["Last-Modified"]
            if validators:
                self._validators[url] = (validators, body)
            return iter([body])
        return self._chunks(url, resp)

    @staticmethod
    def _chunks(url: str, resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            yield from resp.stream(65536)
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: stalled") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"{url}: {exc}") from exc
        finally:
            resp.release_conn()


class FilesFetcher(FetcherInterface):
    """Serves a repository held in memory: the retained MQTT mirror or an on-site bundle.

    Keys are paths relative to the repository (``metadata/timestamp.json``,
    ``targets/configs/<sha256>.all.toml``); a URL's path is looked up below ``base``.
    """

    def __init__(self, files: Mapping[str, bytes], what: str) -> None:
        self.files = dict(files)
        self.what = what

    def _fetch(self, url: str) -> Iterator[bytes]:
        key = urlsplit(url).path.lstrip("/")
        data = self.files.get(key)
        if data is None:
            raise exceptions.DownloadHTTPError(f"{key} is not in the {self.what}", 404)
        return iter([data])


def bundle_files(blob: bytes) -> dict[str, bytes]:
    """The files of an on-site bundle (``schwebe fleet bundle``: a tar of metadata/ and targets/).

    Only regular files below metadata/ or targets/ are taken; anything else (links, devices,
    absolute or ``..`` paths) is refused, so a bundle can never write outside memory.
    """
    if len(blob) > MAX_BUNDLE:
        raise ValueError(f"bundle of {len(blob)} bytes is larger than {MAX_BUNDLE}")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if member.isdir():
                    continue
                if (not member.isfile() or path.is_absolute() or ".." in path.parts
                        or path.parts[0] not in ("metadata", "targets")):
                    raise ValueError(f"bundle member {member.name!r} is not a file below "
                                     "metadata/ or targets/")
                f = tar.extractfile(member)
                if f is None:
                    raise ValueError(f"bundle member {member.name!r} cannot be read")
                files[str(path)] = f.read()
    except tarfile.TarError as exc:
        raise ValueError(f"not a bundle (tar) file: {exc}") from None
    if not any(k.startswith("metadata/") for k in files):
        raise ValueError("bundle has no metadata/ (make it with `schwebe fleet bundle`)")
    return files
