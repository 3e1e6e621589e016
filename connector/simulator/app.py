"""The simulator's HTTP routes: the Semarize `/v1` API and the `/_sim` control plane.

Every `/v1` request passes, in order: the outage switch, authentication, the rate limit,
then its route's injected faults (429 / 5xx / reset, drawn per subject and attempt), then
the route itself. Each answer is counted by route template and status for `/_sim/stats`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

import orjson
from aiohttp import web

from connector.simulator import bricks, kits
from connector.simulator.errors import ApiError
from connector.simulator.faults import Dice, FaultPlan, Outage, TokenBucket, plan_request
from connector.simulator.options import MAX_BODY_BYTES, SimConfig, apply_overrides, settings_view
from connector.simulator.runs import RunStore
from connector.simulator.stats import RequestCounts
from connector.simulator.validate import check_idempotency_key, parse_create
from connector.simulator.webhooks import Webhooks

CREATE = "POST /v1/runs"
GET_RUN = "GET /v1/runs/{runId}"
LIST = "GET /v1/runs"
SCHEMA = "GET /v1/kits/schema"
TEST = "POST /v1/test"
OTHER = "other"

_JSON = "application/json"
_5XX_CODES = {500: "run_request_failed", 502: "bad_gateway", 503: "service_unavailable"}
_RESET_BYTES = b"HTTP/1.1 20"  # the first bytes of a status line, then the connection goes


class SimState:
    """Everything one simulator holds: settings, runs, counters, faults and webhooks."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.dice = Dice(config.seed)
        self.store = RunStore(self.dice)
        self.requests = RequestCounts()
        self.attempts: dict[str, int] = {}
        self.outage = Outage()
        self.webhooks = Webhooks(self.dice, lambda: self.config)
        self.bucket: TokenBucket | None = None
        self.retry_after: dict[str, str] = {}  # headers of a 202 or non-terminal answer
        self.set_config(config)

    def set_config(self, config: SimConfig) -> None:
        if self.bucket is None or self.bucket.rate != config.rate_limit:
            self.bucket = (
                TokenBucket(config.rate_limit, time.monotonic()) if config.rate_limit else None
            )
        self.config = config
        self.retry_after = {"Retry-After": str(config.retry_after)} if config.retry_after else {}

    def plan(self, subject: str) -> FaultPlan:
        """The faults for this subject's next attempt (every attempt is counted)."""
        attempt = self.attempts.get(subject, 0) + 1
        self.attempts[subject] = attempt
        return plan_request(self.config, self.dice, subject, attempt)

    def reset(self) -> None:
        self.store.clear()
        self.requests.clear()
        self.attempts.clear()
        self.webhooks.clear()
        self.bucket = None
        self.set_config(self.config)

    def stats(self) -> dict[str, Any]:
        return {
            "runs_created": self.store.created,
            "runs_replayed": self.store.replayed,
            "runs_by_status": self.store.count_by_status(time.monotonic()),
            "requests": self.requests.view(),
            "webhooks": self.webhooks.view(),
        }

    def settings(self) -> dict[str, Any]:
        view = settings_view(self.config)
        now = time.monotonic()
        view["outage"] = self.outage.active(now)
        view["outage_seconds"] = round(self.outage.remaining(now), 3)
        return view


STATE = web.AppKey("state", SimState)


# --- answers ----------------------------------------------------------------------------------


def _reply(
    state: SimState,
    route: str,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> web.Response:
    state.requests.count(route, status)
    return web.Response(body=body, status=status, content_type=_JSON, headers=headers)


def _error(state: SimState, route: str, exc: ApiError) -> web.Response:
    return _reply(state, route, exc.status, orjson.dumps(exc.body()))


def _rate_limited(state: SimState, route: str, seconds: int) -> web.Response:
    body = orjson.dumps({"error": "rate_limited", "retry_after_seconds": seconds})
    return _reply(state, route, 429, body, {"Retry-After": str(seconds)})


def _injected(state: SimState, route: str, status: int) -> web.Response:
    if status == 429:
        return _rate_limited(state, route, state.config.retry_after_429)
    return _reply(state, route, status, orjson.dumps({"error": _5XX_CODES[status]}))


def _drop(state: SimState, request: web.Request, route: str, partial: bool) -> web.Response:
    """Close the connection (after the first bytes of a response when `partial`)."""
    state.requests.count(route, "reset")
    transport = request.transport
    if transport is not None:
        if partial:
            transport.write(_RESET_BYTES)
        transport.close()
    return web.Response(status=500)  # never reaches the client: its transport is closed


def _refusing(state: SimState) -> bool:
    return state.outage.mode == "refuse" and state.outage.active(time.monotonic()) == "refuse"


def _admit(state: SimState, request: web.Request, route: str) -> web.Response | None:
    """Outage, authentication and rate limit: an answer that ends the request, or None."""
    if state.outage.mode is not None:
        mode = state.outage.active(time.monotonic())
        if mode == "503":
            body = b'{"error":"service_unavailable","message":"Service temporarily unavailable"}'
            return _reply(state, route, 503, body)
        if mode == "refuse":
            return _drop(state, request, route, partial=False)
    config = state.config
    auth = request.headers.get("Authorization")
    if auth is None or auth[:7].lower() != "bearer ":
        return _reply(state, route, 401, _MISSING_BEARER)
    key = auth[7:].strip()
    if (
        not key
        or " " in key
        or config.revoke_key
        or (config.api_key is not None and not hmac.compare_digest(key, config.api_key))
    ):
        return _reply(state, route, 401, _INVALID_KEY)
    if state.bucket is not None:
        wait = state.bucket.take(time.monotonic())
        if wait:
            return _rate_limited(state, route, wait)
    return None


_MISSING_BEARER = orjson.dumps(
    {"error": "missing_bearer_token", "message": "Authorization: Bearer <key> is required"}
)
_INVALID_KEY = orjson.dumps({"error": "invalid_api_key", "message": "The API key is not valid"})


async def _slow(plan: FaultPlan) -> None:
    if plan.slow_ms:
        await asyncio.sleep(plan.slow_ms / 1000.0)


async def _gate(
    state: SimState, request: web.Request, route: str, subject: str
) -> web.Response | None:
    """`_admit`, then the subject's injected faults (slow, then 429 / 5xx or a reset)."""
    early = _admit(state, request, route)
    if early is not None:
        return early
    plan = state.plan(subject)
    if plan.reset:
        return _drop(state, request, route, partial=True)
    await _slow(plan)
    return _injected(state, route, plan.status) if plan.status else None


async def _read_body(request: web.Request) -> bytes:
    """The body, or ApiError 413 when it is over 1 MiB (declared or read)."""
    length = request.content_length
    if length is None or length <= MAX_BODY_BYTES:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            pass  # no Content-Length, and the body turned out too large
    raise ApiError(413, "payload_too_large", f"The body exceeds {MAX_BODY_BYTES} bytes")


# --- /v1 --------------------------------------------------------------------------------------


async def create_run(request: web.Request) -> web.Response:
    state = request.app[STATE]
    early = _admit(state, request, CREATE)
    if early is not None:
        return early
    key = request.headers.get("Idempotency-Key")
    try:
        raw = await _read_body(request)
        check_idempotency_key(key)
    except ApiError as exc:
        return _error(state, CREATE, exc)
    subject = "create:" + (key if key is not None else hashlib.sha256(raw).hexdigest())
    plan = state.plan(subject)
    if plan.status:
        await _slow(plan)
        return _injected(state, CREATE, plan.status)
    if plan.reset and not plan.reset_after_create:
        return _drop(state, request, CREATE, partial=True)
    config = state.config
    now = time.monotonic()
    try:
        req = parse_create(raw, config)
        run, replayed = state.store.create(req, key, config, now, time.time())
    except ApiError as exc:
        await _slow(plan)
        return _error(state, CREATE, exc)
    if not replayed and config.webhook_url:
        state.webhooks.schedule(run, now)
    if plan.reset:
        return _drop(state, request, CREATE, partial=True)

    if req.mode == "sync":
        remaining = run.ends - time.monotonic()
        wait_s = config.sync_wait_ms / 1000.0
        if remaining <= wait_s:
            if remaining > 0:
                await asyncio.sleep(remaining)
            await _slow(plan)
            return _reply(state, CREATE, 200, run.detail_bytes(max(time.monotonic(), run.ends)))
        await asyncio.sleep(wait_s)
        body: dict[str, Any] = {
            "run_id": run.run_id,
            "status": run.status(time.monotonic()),
            "run_type": run.run_type,
            "sync_fallback": True,
            "waited_ms": config.sync_wait_ms,
        }
    else:
        body = {"run_id": run.run_id, "status": run.status(now), "run_type": run.run_type}
    await _slow(plan)
    return _reply(state, CREATE, 202, orjson.dumps(body), state.retry_after)


async def get_run(request: web.Request) -> web.Response:
    state = request.app[STATE]
    run_id = request.match_info["run_id"]
    early = await _gate(state, request, GET_RUN, "run:" + run_id)
    if early is not None:
        return early
    run = state.store.get(run_id)
    if run is None:
        return _error(state, GET_RUN, ApiError(404, "run_not_found", "No run with this id"))
    now = time.monotonic()
    if now >= run.ends:
        return _reply(state, GET_RUN, 200, run.detail_bytes(now))
    return _reply(state, GET_RUN, 200, run.detail_bytes(now), state.retry_after)


async def list_runs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    early = await _gate(state, request, LIST, "list")
    if early is not None:
        return early
    raw = request.query.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        exc = ApiError(400, "invalid_limit", "limit must be an integer from 1 to 100")
        return _error(state, LIST, exc)
    now = time.monotonic()
    runs, has_more = state.store.newest(limit)
    body = {"data": [run.summary(now) for run in runs], "has_more": has_more}
    return _reply(state, LIST, 200, orjson.dumps(body))


async def kit_schema(request: web.Request) -> web.Response:
    state = request.app[STATE]
    early = await _gate(state, request, SCHEMA, "schema:" + request.query_string)
    if early is not None:
        return early
    try:
        code, version = kits.resolve(
            state.config, request.query.get("kit_code"), request.query.get("kit_version_id")
        )
    except ApiError as exc:
        return _error(state, SCHEMA, exc)
    return _reply(state, SCHEMA, 200, orjson.dumps(kits.schema(code, version)))


async def test_kit(request: web.Request) -> web.Response:
    """`POST /v1/test`: the output shape for a body, without storing a run."""
    state = request.app[STATE]
    early = _admit(state, request, TEST)
    if early is not None:
        return early
    try:
        req = parse_create(await _read_body(request), state.config)
    except ApiError as exc:
        return _error(state, TEST, exc)
    body = {
        "kit_code": req.kit_code,
        "kit_version_id": req.kit_version_id,
        "output": {"kit_code": req.kit_code, "bricks": bricks.evaluate(req.input)},
    }
    return _reply(state, TEST, 200, orjson.dumps(body))


async def not_found(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if _refusing(state):
        return _drop(state, request, OTHER, partial=False)
    body = orjson.dumps({"error": "not_found", "message": f"No route {request.path}"})
    return _reply(state, OTHER, 404, body)


# --- /_sim (no authentication, not counted) ---------------------------------------------------


def _control(status: int, body: object) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=_JSON)


def _control_drop(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


async def sim_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if _refusing(state):
        return _control_drop(request)
    return _control(200, state.stats())


async def sim_get_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if _refusing(state):
        return _control_drop(request)
    return _control(200, state.settings())


async def sim_set_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if _refusing(state):
        return _control_drop(request)
    try:
        changes = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _control(400, {"error": "invalid_json", "message": "Body must be a JSON object"})
    if not isinstance(changes, dict):
        return _control(400, {"error": "invalid_json", "message": "Body must be a JSON object"})
    try:
        config = apply_overrides(state.config, changes)
    except ValueError as exc:
        return _control(400, {"error": "invalid_setting", "message": str(exc)})
    state.set_config(config)
    if "outage" in changes:
        state.outage.start(config.outage, config.outage_seconds, time.monotonic())
    return _control(200, state.settings())


async def sim_reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if _refusing(state):
        return _control_drop(request)
    state.reset()
    return _control(200, {"reset": True})


def build_app(state: SimState) -> web.Application:
    """The aiohttp application serving `state` (bodies above 1 MiB are refused with 413)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    router = app.router
    router.add_post("/v1/runs", create_run)
    router.add_get("/v1/runs", list_runs, allow_head=False)
    router.add_get("/v1/runs/{run_id}", get_run, allow_head=False)
    router.add_get("/v1/kits/schema", kit_schema, allow_head=False)
    router.add_post("/v1/test", test_kit)
    router.add_get("/_sim/stats", sim_stats, allow_head=False)
    router.add_get("/_sim/faults", sim_get_faults, allow_head=False)
    router.add_post("/_sim/faults", sim_set_faults)
    router.add_post("/_sim/reset", sim_reset)
    router.add_route("*", "/{tail:.*}", not_found)
    return app
