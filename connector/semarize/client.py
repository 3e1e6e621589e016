"""The Semarize Runs API client: one request per call, classified, measured; no retries.

Retrying, backoff and halting are the run tracker's job (`connector.tracker`), driven by the
error classes of `connector.semarize.errors`.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from connector import metrics
from connector.idempotency import MAX_KEY_LENGTH
from connector.semarize.errors import RecordRejected, TransportFailure, classify
from connector.semarize.retry import RateLimitSignal, TokenBucket, parse_retry_after
from connector.semarize.transport import Request, Response, Transport

# Request ids: unique per process start (random prefix), cheap per request (a counter).
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:16]
_request_numbers = itertools.count(1)

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
USER_AGENT = "semarize-connector"


@dataclass(slots=True)
class ApiResult:
    """A successful response: its JSON object, the advised delay and the request id."""

    status: int
    body: dict[str, Any]
    retry_after: float | None
    request_id: str
    sent_at: float = 0.0  # perf_counter just before the request went out


class SemarizeClient:
    def __init__(
        self,
        transport: Transport,
        *,
        base_url: str,
        api_key: str,
        rate_limit: TokenBucket | None = None,
        signal: RateLimitSignal | None = None,
    ) -> None:
        self._transport = transport
        self._rate_limit = rate_limit
        self._signal = signal
        self._base = base_url.rstrip("/")
        self._auth = f"Bearer {api_key}"

    async def create_run(
        self, body: bytes, *, idempotency_key: str, record_chose_kit: bool
    ) -> ApiResult:
        if len(idempotency_key) > MAX_KEY_LENGTH:
            # Never sent: the provider would reject it, and a truncated key could collide.
            raise RecordRejected("Idempotency-Key over 254 characters", error_code="key_too_long")
        headers = self._headers()
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = idempotency_key
        result = await self._call(
            "create", Request("POST", f"{self._base}/v1/runs", headers, body), record_chose_kit
        )
        run_id = result.body.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            # Nothing to track: retry the create (the same key returns the same run).
            raise TransportFailure(f"HTTP {result.status} without a run_id", kind="protocol")
        return result

    async def get_run(self, run_id: str) -> ApiResult:
        url = f"{self._base}/v1/runs/{quote(run_id, safe='')}"
        return await self._call("get", Request("GET", url, self._headers()), False)

    async def kit_schema(self, *, kit_code: str | None, kit_version_id: str | None) -> ApiResult:
        query = {"kit_version_id": kit_version_id} if kit_version_id else {"kit_code": kit_code}
        url = f"{self._base}/v1/kits/schema?{urlencode(query)}"
        return await self._call("kits", Request("GET", url, self._headers()), False)

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": self._auth,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "X-Request-Id": f"{_REQUEST_ID_PREFIX}{next(_request_numbers):08x}",
        }

    async def _call(self, route: str, request: Request, record_chose_kit: bool) -> ApiResult:
        if self._rate_limit is not None:
            await self._rate_limit.acquire()
        started = time.perf_counter()
        request_id = request.headers["X-Request-Id"]
        try:
            response = await self._transport.send(request)
        except TransportFailure as exc:
            metrics.HTTP_REQUESTS.labels(route=route, status="error", error_code=exc.kind).inc()
            exc.request_id = request_id  # type: ignore[attr-defined]
            raise
        finally:
            metrics.series(metrics.HTTP_REQUEST_DURATION, route).observe(
                time.perf_counter() - started
            )
        if self._signal is not None:
            self._signal.record(response.status == 429)
        body = _json_object(response)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if 200 <= response.status < 300 and body is not None:
            metrics.series(metrics.HTTP_REQUESTS, route, str(response.status), "").inc()
            return ApiResult(response.status, body, retry_after, request_id, started)
        if 200 <= response.status < 300:
            metrics.HTTP_REQUESTS.labels(
                route=route, status=str(response.status), error_code="bad_body"
            ).inc()
            raise TransportFailure(
                f"HTTP {response.status} with a body that is not a JSON object", kind="protocol"
            )
        error = classify(
            response.status, body, retry_after=retry_after, record_chose_kit=record_chose_kit
        )
        metrics.HTTP_REQUESTS.labels(
            route=route, status=str(response.status), error_code=_bounded(error.error_code)
        ).inc()
        if response.status == 429:
            metrics.RATE_LIMITED.labels(route=route).inc()
            if self._rate_limit is not None:
                self._rate_limit.rate_limited()
        if error.retry_after is not None:
            metrics.RETRY_AFTER.observe(error.retry_after)
        error.request_id = request_id  # type: ignore[attr-defined]
        raise error


def _json_object(response: Response) -> dict[str, Any] | None:
    if not response.body:
        return None
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


_KNOWN_CODES = frozenset(
    {
        "missing_bearer_token",
        "invalid_api_key",
        "api_key_expired",
        "kit_code_or_kit_version_id_required",
        "input_must_be_object",
        "invalid_run_type",
        "invalid_run_mode",
        "kit_not_found",
        "idempotency_key_conflict",
        "run_request_failed",
        "rate_limited",
        "payload_too_large",
        "run_not_found",
        "invalid_json",
        "input_not_processable",
        "forbidden",
    }
)


def _bounded(code: str | None) -> str:
    """Error codes become a label: keep the set bounded whatever the API sends."""
    if not code:
        return ""
    return code if code in _KNOWN_CODES else "other"
