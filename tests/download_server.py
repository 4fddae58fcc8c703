"""A local HTTP file server for the download tests (127.0.0.1 only): serves byte strings by path
with Range support, records every request, and misbehaves on demand (cut a body halfway, hang,
hold a body until the test releases it)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Served:
    data: bytes
    cut_first_at: int | None = None  # the first full request sends this many bytes, then drops the connection
    hold_at: int | None = None  # send this many bytes, then wait for `release` before the rest
    hang: bool = False  # never answer (a timeout)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    cuts_left: int = 1


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.stop = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        self.requests.append((path, request.headers.get("Range")))
        served = self.files.get(path)
        if served is None:
            raise web.HTTPNotFound(text="no such file")
        if served.hang:
            await self.stop.wait()
            raise web.HTTPServiceUnavailable()
        data, start = served.data, 0
        headers = {}
        status = 200
        if request.headers.get("Range"):
            start = int(request.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if served.cut_first_at is not None and start == 0 and served.cuts_left > 0:
            served.cuts_left -= 1
            await response.write(body[:served.cut_first_at])
            request.transport.close()  # the body ends short of its Content-Length
            return response
        if served.hold_at is not None and start == 0:
            await response.write(body[:served.hold_at])
            await served.release.wait()
            body = body[served.hold_at:]
        await response.write(body)
        await response.write_eof()
        return response


async def start_file_server(aiohttp_server) -> tuple[FileServer, str]:
    files = FileServer()
    server = await aiohttp_server(files.app())
    return files, f"http://127.0.0.1:{server.port}"
