"""The server's HTTP protocol sends each reply in one write, so a server
killed mid-reply leaves the client a connection error (which the SDK
retries) rather than a 200 with no body (which botocore reads as an empty
result)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from shoal.api.app import _respond
from shoal.api.protocol import WholeReplyProtocol


class RecordingTransport(asyncio.Transport):
    """The socket end under the protocol: records each write it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 80), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await _respond(send, 200, b'{"jobId": "x"}', "req-1", b"application/x-amz-json-1.1")


async def serve_one(protocol_class: type[HttpToolsProtocol]) -> list[bytes]:
    config = Config(app, log_level="warning")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"POST /v1/submitjob HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    deadline = asyncio.get_running_loop().time() + 5
    while b"".join(transport.writes).count(b'"jobId"') == 0:
        assert asyncio.get_running_loop().time() < deadline, transport.writes
        await asyncio.sleep(0.001)
    protocol.connection_lost(None)
    return transport.writes


def test_a_reply_is_one_write() -> None:
    writes = asyncio.run(serve_one(WholeReplyProtocol))
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b'\r\n\r\n{"jobId": "x"}')


def test_uvicorn_alone_writes_headers_and_body_apart() -> None:
    # What the wrapper is for: without it the status line goes out alone.
    writes = asyncio.run(serve_one(HttpToolsProtocol))
    assert len(writes) == 2
    assert writes[1] == b'{"jobId": "x"}'


def test_bytes_that_are_not_http_get_an_aws_shaped_400(tmp_path: Any) -> None:
    # The protocol answers these itself (the app never sees them): JSON with
    # __type, like every other error, where uvicorn alone sends plain text.
    import json
    import socket

    from conftest import start_server

    server = start_server(tmp_path)
    try:
        for raw in (
            b"GET /health HTTP/1.1\r\nHost: x\r\nBad\x01Header: y\r\n\r\n",
            b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /v1/submitjob HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(raw)
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400"), reply
            assert b"content-type: application/json" in head.lower(), reply
            doc = json.loads(body)
            assert doc["__type"] == "ClientException" and doc["message"], doc
    finally:
        server.stop()
