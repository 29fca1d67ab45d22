"""A static HTTPS server for tests: serves a directory as a CDN would (Last-Modified, ETag, 304).

Run as ``python -m tests.helpers.static_https DIR PORT CERT KEY LOG``; prints ``ready`` once
listening; every request is appended to LOG as ``METHOD PATH STATUS`` (to check that pollers
ask conditionally). Files are read at each request, so a test can replace them while it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import sys
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

from aiohttp import web


def read(root: Path, rel: str) -> tuple[bytes, float] | None:
    """The file's bytes and mtime, or None outside ``root`` or missing (small files: read whole)."""
    path = (root / rel).resolve()
    if root.resolve() not in path.parents or not path.is_file():
        return None
    return path.read_bytes(), path.stat().st_mtime


def make_app(root: Path, log: Path) -> web.Application:
    async def serve(request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        status = 200
        try:
            found = read(root, rel)
            if found is None:
                status = 404
                return web.Response(status=404)
            body, mtime = found
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            headers = {"ETag": etag, "Last-Modified": formatdate(mtime, usegmt=True)}
            if request.headers.get("If-None-Match") == etag:
                status = 304
                return web.Response(status=304, headers=headers)
            since = request.headers.get("If-Modified-Since")
            if since and "If-None-Match" not in request.headers:
                try:
                    if int(mtime) <= parsedate_to_datetime(since).timestamp():
                        status = 304
                        return web.Response(status=304, headers=headers)
                except (TypeError, ValueError):
                    pass
            return web.Response(body=body, headers=headers)
        finally:
            with open(log, "a") as f:  # noqa: ASYNC230 (a test server; one short line)
                f.write(f"{request.method} /{rel} {status}\n")

    app = web.Application()
    app.router.add_get("/{path:.*}", serve)
    return app


async def main(root: Path, port: int, cert: str, key: str, log: Path) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(make_app(root, log), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    d, p, c, k, lg = sys.argv[1:6]
    asyncio.run(main(Path(d), int(p), c, k, Path(lg)))
