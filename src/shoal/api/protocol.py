"""The HTTP protocol the server runs: uvicorn's httptools protocol, sending
each reply whole.

uvicorn writes a reply's status line and headers as soon as the app starts
it, and the body in a second write. A server killed between the two leaves
the client a `200` whose body never comes, and botocore (which does not
enforce Content-Length) parses that as an empty result: a SubmitJob that
"succeeded" without a jobId, and that the SDK does not retry. Joining the
writes made in one event-loop turn into one send means a reply reaches the
client whole or not at all; a lost reply is a connection error, which the
SDK retries with the same invocation id, and that returns the job the first
call created.

A request that is not HTTP at all (a bad method, control characters in a
header, a lying chunked body) never reaches the app: uvicorn answers it, and
here that answer is AWS-shaped JSON like every other error, not plain text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class JoinedWrites:
    """An asyncio transport that joins the writes made in one loop turn.

    Everything but `write`, `writelines`, `close` and `abort` goes to the
    wrapped transport unchanged."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class WholeReplyProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `JoinedWrites` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        joined = JoinedWrites(transport, asyncio.get_running_loop())
        super().connection_made(joined)  # type: ignore[arg-type]

    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps({"__type": "ClientException", "message": f"{msg} (malformed HTTP)"})
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"x-amzn-errortype: ClientException\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
