"""The seam between the API client and the network: one async `send()` plus `aclose()`.

`AiohttpTransport` is the real one; `MockTransport` takes a handler for unit tests. Every
aiohttp failure is translated here, and only here, into a `TransportFailure`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from connector.semarize.errors import TransportFailure


@dataclass(slots=True, frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None


@dataclass(slots=True, frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    async def send(self, request: Request) -> Response: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """One connection pool, sized to the concurrency, with connect and read timeouts."""

    def __init__(self, *, pool_size: int, connect_timeout: float, read_timeout: float) -> None:
        self._pool_size = pool_size
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(self, request: Request) -> Response:
        session = self._open()
        try:
            async with session.request(
                request.method, request.url, headers=request.headers, data=request.body
            ) as response:
                body = await response.read()
                return Response(response.status, response.headers, body)
        except TimeoutError as exc:
            raise TransportFailure(f"{request.method} timed out", kind="timeout") from exc
        except aiohttp.ServerTimeoutError as exc:
            raise TransportFailure(f"{request.method} timed out", kind="timeout") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise TransportFailure(
                f"{request.method} failed: {type(exc).__name__}", kind="connection"
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransportFailure(
                f"{request.method} failed: {type(exc).__name__}", kind="protocol"
            ) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


Handler = Callable[[Request], Awaitable[Response]]


class MockTransport:
    """Answers every request with `handler(request)`; for unit tests, no sockets."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[Request] = []

    async def send(self, request: Request) -> Response:
        self.requests.append(request)
        await asyncio.sleep(0)
        return await self._handler(request)

    async def aclose(self) -> None:
        return None
