"""`AiohttpTransport` against raw loopback servers: answers, read timeouts, refused and
dropped connections all come out as a `Response` or a `TransportFailure` of the right kind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from connector.semarize.errors import TransportFailure
from connector.semarize.transport import AiohttpTransport, Request
from tests.kafka_broker import free_port

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(serve: Serve | None, *, read_timeout: float = 0.3) -> tuple[object, float]:
    """Send one GET to a server running `serve` (None: nothing listens); returns the
    response or the TransportFailure, and how long it took."""

    async def main() -> tuple[object, float]:
        server = None
        port = free_port()
        handlers: list[asyncio.Task[None]] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert serve is not None
            handlers.append(asyncio.current_task())  # type: ignore[arg-type]
            try:
                await serve(reader, writer)
            finally:
                writer.close()

        if serve is not None:
            server = await asyncio.start_server(handle, "127.0.0.1", port)
        transport = AiohttpTransport(pool_size=2, connect_timeout=1.0, read_timeout=read_timeout)
        started = time.monotonic()
        try:
            result: object = await transport.send(
                Request("GET", f"http://127.0.0.1:{port}/v1/runs/r1", {"Accept": "*/*"})
            )
        except TransportFailure as exc:
            result = exc
        finally:
            elapsed = time.monotonic() - started
            await transport.aclose()
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            if server is not None:
                server.close()
                await server.wait_closed()
        return result, elapsed

    return asyncio.run(main())


async def read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def test_an_answer_comes_back_as_a_response() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nRetry-After: 3\r\n\r\n{}")
        await writer.drain()

    response, _ = run(serve)
    assert getattr(response, "status", None) == 200
    assert response.body == b"{}"  # type: ignore[attr-defined]
    assert response.headers["Retry-After"] == "3"  # type: ignore[attr-defined]


def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    failure, elapsed = run(serve, read_timeout=0.3)
    assert isinstance(failure, TransportFailure) and failure.kind == "timeout"
    assert 0.25 < elapsed < 5


def test_a_body_that_stalls_is_a_read_timeout() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        await asyncio.sleep(30)

    failure, _ = run(serve, read_timeout=0.3)
    assert isinstance(failure, TransportFailure) and failure.kind == "timeout"


def test_a_refused_connection_is_a_connection_failure() -> None:
    failure, _ = run(None)
    assert isinstance(failure, TransportFailure) and failure.kind == "connection"


def test_a_connection_dropped_mid_response_is_a_connection_failure() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.transport.abort()

    failure, _ = run(serve)
    assert isinstance(failure, TransportFailure) and failure.kind == "connection"


def test_the_connect_timeout_is_set_on_the_pool() -> None:
    transport = AiohttpTransport(pool_size=4, connect_timeout=2.5, read_timeout=7.0)
    assert transport._timeout.sock_connect == 2.5
    assert transport._timeout.sock_read == 7.0
    assert transport._timeout.total is None  # a long run's poll is not cut short


@pytest.mark.parametrize("status", [200, 503])
def test_status_codes_are_passed_through(status: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()

    response, _ = run(serve)
    assert getattr(response, "status", None) == status
