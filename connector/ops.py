"""The ops server: /metrics, /healthz (liveness), /readyz (readiness).

An embedded aiohttp `AppRunner` with no signal handling of its own; the connector owns the
lifecycle. Probes are answered from a `HealthSource`, which judges; this module only serves.
"""

from __future__ import annotations

from typing import Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connector.metrics import REGISTRY


class HealthSource(Protocol):
    def liveness(self) -> tuple[bool, dict[str, object]]: ...

    def readiness(self) -> tuple[bool, dict[str, object]]: ...


HEALTH = web.AppKey("health", HealthSource)


async def _metrics(_request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    ok, details = request.app[HEALTH].liveness()
    return _json(ok, details)


async def _readyz(request: web.Request) -> web.Response:
    ok, details = request.app[HEALTH].readiness()
    return _json(ok, details)


def _json(ok: bool, details: dict[str, object]) -> web.Response:
    body = orjson.dumps({"ok": ok, **details}, default=str)
    return web.Response(body=body, status=200 if ok else 503, content_type="application/json")


class OpsServer:
    def __init__(self, health: HealthSource, *, host: str, port: int) -> None:
        app = web.Application()
        app[HEALTH] = health
        app.router.add_get("/metrics", _metrics)
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/readyz", _readyz)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        self._host = host
        self._port = port
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await self._runner.cleanup()
