"""The API client against a MockTransport: requests sent, responses classified."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pytest

from connector.idempotency import MAX_KEY_LENGTH
from connector.semarize.client import ApiResult, SemarizeClient
from connector.semarize.errors import (
    ConfigurationRejected,
    CredentialsRejected,
    RateLimited,
    RecordRejected,
    ServerError,
    TransportFailure,
)
from connector.semarize.transport import MockTransport, Request, Response

API_KEY = "smz_test_0123456789abcdef"
KEY = "smzc1-" + "a" * 64
BODY = b'{"input":{"transcript":"hi"},"kit_code":"A1B2C3D4","type":"api","mode":"async"}'
T = TypeVar("T")


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else (b"" if body is None else orjson.dumps(body))
    return Response(status, headers or {}, raw)


def client_for(
    *responses: Response, base_url: str = "https://api.example.test"
) -> tuple[SemarizeClient, MockTransport]:
    queue = list(responses)

    async def handler(request: Request) -> Response:
        return queue.pop(0)

    transport = MockTransport(handler)
    return SemarizeClient(transport, base_url=base_url, api_key=API_KEY), transport


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def create(client: SemarizeClient, *, key: str = KEY, chose_kit: bool = False) -> ApiResult:
    return run(lambda: client.create_run(BODY, idempotency_key=key, record_chose_kit=chose_kit))


def test_create_sends_every_required_header() -> None:
    client, transport = client_for(reply(202, {"run_id": "run_1", "status": "queued"}))
    result = create(client)
    [request] = transport.requests
    assert request.method == "POST"
    assert request.url == "https://api.example.test/v1/runs"
    assert request.body == BODY
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Idempotency-Key"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert len(request.headers["X-Request-Id"]) >= 16
    assert result.request_id == request.headers["X-Request-Id"]
    assert result.status == 202
    assert result.body == {"run_id": "run_1", "status": "queued"}


def test_every_request_has_its_own_request_id_and_the_key() -> None:
    ok = {"run_id": "run_1", "status": "running"}
    client, transport = client_for(*(reply(200, ok) for _ in range(4)))

    async def calls() -> None:
        await client.create_run(BODY, idempotency_key=KEY, record_chose_kit=False)
        await client.create_run(BODY, idempotency_key=KEY, record_chose_kit=False)
        await client.get_run("run_1")
        await client.kit_schema(kit_code="A1B2C3D4", kit_version_id=None)

    run(calls)
    ids = [r.headers["X-Request-Id"] for r in transport.requests]
    assert len(set(ids)) == 4
    for request in transport.requests:
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert [r.headers.get("Idempotency-Key") for r in transport.requests] == [KEY, KEY, None, None]


def test_get_run_url_and_method() -> None:
    client, transport = client_for(reply(200, {"run_id": "run_1", "status": "running"}))
    result = run(lambda: client.get_run("run_1"))
    [request] = transport.requests
    assert (request.method, request.url, request.body) == (
        "GET",
        "https://api.example.test/v1/runs/run_1",
        None,
    )
    assert "Content-Type" not in request.headers
    assert result.body["status"] == "running"


def test_run_id_is_escaped_in_the_path() -> None:
    client, transport = client_for(reply(200, {"status": "running"}))
    run(lambda: client.get_run("../kits/schema?x=1#y"))
    assert transport.requests[0].url == (
        "https://api.example.test/v1/runs/..%2Fkits%2Fschema%3Fx%3D1%23y"
    )


def test_base_url_trailing_slash() -> None:
    client, transport = client_for(reply(200, {}), base_url="http://127.0.0.1:8090/")
    run(lambda: client.get_run("r"))
    assert transport.requests[0].url == "http://127.0.0.1:8090/v1/runs/r"


def test_kit_schema_query() -> None:
    client, transport = client_for(reply(200, {"bricks": []}), reply(200, {"bricks": []}))
    run(lambda: client.kit_schema(kit_code="A1B2C3D4", kit_version_id=None))
    run(lambda: client.kit_schema(kit_code="A1B2C3D4", kit_version_id="kv 1/2"))
    assert transport.requests[0].url == "https://api.example.test/v1/kits/schema?kit_code=A1B2C3D4"
    assert transport.requests[1].url == (
        "https://api.example.test/v1/kits/schema?kit_version_id=kv+1%2F2"
    )


def test_key_of_254_characters_is_sent() -> None:
    client, transport = client_for(reply(202, {"run_id": "r"}))
    key = "k" * MAX_KEY_LENGTH
    create(client, key=key)
    assert transport.requests[0].headers["Idempotency-Key"] == key


def test_key_over_254_characters_is_never_sent() -> None:
    client, transport = client_for(reply(202, {"run_id": "r"}))
    with pytest.raises(RecordRejected) as caught:
        create(client, key="k" * (MAX_KEY_LENGTH + 1))
    assert caught.value.error_code == "key_too_long"
    assert transport.requests == []


def test_unknown_response_fields_are_ignored() -> None:
    body = {
        "run_id": "run_1",
        "status": "queued",
        "run_type": "api",
        "brand_new": {"nested": [1, 2]},
        "queue_position": 3,
    }
    client, _ = client_for(reply(202, body, {"X-New-Header": "1"}))
    result = create(client)
    assert result.body["run_id"] == "run_1"
    assert result.body["status"] == "queued"


def test_retry_after_on_a_202_is_returned() -> None:
    client, _ = client_for(reply(202, {"run_id": "r"}, {"Retry-After": "4"}))
    assert create(client).retry_after == 4.0


def test_missing_retry_after_is_none() -> None:
    client, _ = client_for(reply(202, {"run_id": "r"}))
    assert create(client).retry_after is None


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>502 Bad Gateway</html>", b'["run_1"]', b'"run_1"', b"null", b'{"run_id": '],
    ids=["empty", "html", "array", "string", "null", "truncated"],
)
@pytest.mark.parametrize("status", [200, 202])
def test_2xx_without_a_json_object_is_a_retryable_failure(status: int, body: bytes) -> None:
    client, _ = client_for(reply(status, body))
    with pytest.raises(TransportFailure) as caught:
        create(client)
    assert caught.value.retryable
    assert caught.value.kind == "protocol"


@pytest.mark.parametrize(
    "body",
    [{"status": "queued"}, {"run_id": ""}, {"run_id": 5}, {"run_id": None}],
    ids=["missing", "empty", "number", "null"],
)
@pytest.mark.parametrize("status", [200, 202])
def test_create_without_a_run_id_is_a_retryable_failure(status: int, body: Any) -> None:
    """Nothing could be tracked: the create is retried with the same key instead."""
    client, _ = client_for(reply(status, body))
    with pytest.raises(TransportFailure) as caught:
        create(client)
    assert caught.value.retryable
    assert caught.value.kind == "protocol"


def test_429_carries_retry_after_from_the_header() -> None:
    client, _ = client_for(reply(429, {"error": "rate_limited"}, {"Retry-After": "10"}))
    with pytest.raises(RateLimited) as caught:
        create(client)
    assert caught.value.retry_after == 10.0
    assert caught.value.status == 429


def test_429_carries_retry_after_from_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 60, usegmt=True)
    client, _ = client_for(reply(429, b"", {"Retry-After": when}))
    with pytest.raises(RateLimited) as caught:
        create(client)
    assert caught.value.retry_after is not None
    assert 55 <= caught.value.retry_after <= 61


def test_429_body_delay_wins_over_the_header() -> None:
    body = {"error": "rate_limited", "retry_after_seconds": 2}
    client, _ = client_for(reply(429, body, {"Retry-After": "10"}))
    with pytest.raises(RateLimited) as caught:
        create(client)
    assert caught.value.retry_after == 2.0


@pytest.mark.parametrize(
    ("status", "body", "chose_kit", "expected"),
    [
        (500, {"error": "run_request_failed"}, False, ServerError),
        (503, b"Service Unavailable", False, ServerError),
        (401, {"error": "invalid_api_key"}, False, CredentialsRejected),
        (403, b"", False, CredentialsRejected),
        (404, {"error": "kit_not_found"}, False, ConfigurationRejected),
        (404, {"error": "kit_not_found"}, True, RecordRejected),
        (409, {"error": "idempotency_key_conflict"}, False, RecordRejected),
        (413, {"error": "payload_too_large"}, False, RecordRejected),
        (400, {"error": "invalid_run_mode"}, True, ConfigurationRejected),
    ],
)
def test_errors_are_classified(
    status: int, body: Any, chose_kit: bool, expected: type[Exception]
) -> None:
    client, transport = client_for(reply(status, body))
    with pytest.raises(expected) as caught:
        create(client, chose_kit=chose_kit)
    request_id = transport.requests[0].headers["X-Request-Id"]
    assert caught.value.request_id == request_id  # type: ignore[attr-defined]


def test_get_never_blames_the_record_for_a_kit() -> None:
    """kit_not_found on a GET is about the configuration: the record chose nothing there."""
    client, _ = client_for(reply(404, {"error": "kit_not_found"}))
    with pytest.raises(ConfigurationRejected):
        run(lambda: client.get_run("r"))


def test_transport_failures_pass_through_with_the_request_id() -> None:
    async def handler(request: Request) -> Response:
        raise TransportFailure("POST timed out", kind="timeout")

    transport = MockTransport(handler)
    client = SemarizeClient(transport, base_url="https://x.test", api_key=API_KEY)
    with pytest.raises(TransportFailure) as caught:
        create(client)
    assert caught.value.kind == "timeout"
    assert caught.value.request_id == transport.requests[0].headers["X-Request-Id"]  # type: ignore[attr-defined]


def test_aclose_closes_the_transport() -> None:
    closed: list[bool] = []

    class Closing(MockTransport):
        async def aclose(self) -> None:
            closed.append(True)

    async def handler(request: Request) -> Response:
        return reply(200, {})

    client = SemarizeClient(Closing(handler), base_url="https://x.test", api_key=API_KEY)
    run(client.aclose)
    assert closed == [True]


def test_the_api_key_is_not_in_errors() -> None:
    client, _ = client_for(reply(401, {"error": "invalid_api_key", "message": "bad key"}))
    with pytest.raises(CredentialsRejected) as caught:
        create(client)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value)
