"""The API error taxonomy: classify() maps every documented status and code to its action."""

from __future__ import annotations

from typing import Any

import pytest

from connector.errors import ConnectorError
from connector.semarize.errors import (
    ConfigurationRejected,
    CredentialsRejected,
    HaltError,
    RateLimited,
    RecordRejected,
    RetryableError,
    SemarizeError,
    ServerError,
    TransportFailure,
    classify,
    error_fields,
)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        # 401 / 403: the credentials; halt, never a dead letter.
        (401, "missing_bearer_token", CredentialsRejected),
        (401, "invalid_api_key", CredentialsRejected),
        (401, "api_key_expired", CredentialsRejected),
        (401, None, CredentialsRejected),
        (403, "forbidden", CredentialsRejected),
        (403, None, CredentialsRejected),
        # The configured Kit or mode: halt.
        (400, "kit_code_or_kit_version_id_required", ConfigurationRejected),
        (400, "invalid_run_type", ConfigurationRejected),
        (400, "invalid_run_mode", ConfigurationRejected),
        (422, "invalid_run_mode", ConfigurationRejected),
        # About this record: dead letter.
        (400, "input_must_be_object", RecordRejected),
        (400, "invalid_json", RecordRejected),
        (400, None, RecordRejected),
        (404, "run_not_found", RecordRejected),
        (404, None, RecordRejected),
        (409, "idempotency_key_conflict", RecordRejected),
        (413, "payload_too_large", RecordRejected),
        (422, "input_not_processable", RecordRejected),
        (422, None, RecordRejected),
        # Retry with the same key.
        (429, "rate_limited", RateLimited),
        (429, None, RateLimited),
        (500, "run_request_failed", ServerError),
        (500, None, ServerError),
        (502, None, ServerError),
        (503, None, ServerError),
        (504, None, ServerError),
        (599, None, ServerError),
        (408, None, ServerError),
        (425, None, ServerError),
    ],
)
def test_classify(status: int, code: str | None, expected: type[SemarizeError]) -> None:
    body = {"error": code, "message": "details"} if code else None
    error = classify(status, body, retry_after=None)
    assert type(error) is expected
    assert error.status == status
    assert error.error_code == code
    assert str(status) in str(error)


@pytest.mark.parametrize("code", ["kit_not_found", "kit_version_not_found"])
@pytest.mark.parametrize("status", [400, 404, 422])
def test_kit_not_found_blames_whoever_chose_the_kit(status: int, code: str) -> None:
    configured = classify(status, {"error": code}, retry_after=None, record_chose_kit=False)
    assert type(configured) is ConfigurationRejected
    assert configured.halts and not configured.retryable
    chosen = classify(status, {"error": code}, retry_after=None, record_chose_kit=True)
    assert type(chosen) is RecordRejected
    assert not chosen.halts and not chosen.retryable


def test_record_chose_kit_does_not_excuse_configuration_or_credentials() -> None:
    mode = classify(400, {"error": "invalid_run_mode"}, retry_after=None, record_chose_kit=True)
    assert type(mode) is ConfigurationRejected
    key = classify(401, {"error": "kit_not_found"}, retry_after=None, record_chose_kit=True)
    assert type(key) is CredentialsRejected


def test_the_action_flags() -> None:
    assert RateLimited("x").retryable and not RateLimited("x").halts
    assert ServerError("x").retryable
    assert TransportFailure("x", kind="timeout").retryable
    assert CredentialsRejected("x").halts and not CredentialsRejected("x").retryable
    assert ConfigurationRejected("x").halts
    assert not RecordRejected("x").halts and not RecordRejected("x").retryable
    assert issubclass(RateLimited, RetryableError)
    assert issubclass(TransportFailure, RetryableError)
    assert issubclass(CredentialsRejected, HaltError)
    assert issubclass(SemarizeError, ConnectorError)


def test_rate_limited_prefers_the_body_delay() -> None:
    body = {"error": "rate_limited", "retry_after_seconds": 3}
    error = classify(429, body, retry_after=10.0)
    assert isinstance(error, RateLimited)
    assert error.retry_after == 3.0


def test_rate_limited_falls_back_to_the_header_delay() -> None:
    error = classify(429, {"error": "rate_limited"}, retry_after=10.0)
    assert error.retry_after == 10.0
    assert classify(429, None, retry_after=None).retry_after is None


def test_server_errors_carry_the_delay_too() -> None:
    assert (
        classify(503, {"error": "x", "retry_after_seconds": 2.5}, retry_after=None).retry_after
        == 2.5
    )
    assert classify(503, None, retry_after=4.0).retry_after == 4.0


def test_non_retryable_errors_carry_no_delay() -> None:
    assert classify(401, {"retry_after_seconds": 5}, retry_after=5.0).retry_after is None
    assert classify(409, {"retry_after_seconds": 5}, retry_after=5.0).retry_after is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": "rate_limited", "message": "slow down", "retry_after_seconds": 10},
         ("rate_limited", "slow down", 10.0)),
        ({"error": "x", "detail": "the detail"}, ("x", "the detail", None)),
        ({"error": "x", "message": "m", "detail": "d"}, ("x", "m", None)),
        ({"error": 5, "message": ["m"], "retry_after_seconds": "10"}, (None, None, None)),
        ({"retry_after_seconds": -1}, (None, None, None)),
        ({"retry_after_seconds": 0}, (None, None, 0.0)),
        ({"retry_after_seconds": 1.5}, (None, None, 1.5)),
        ([{"error": "x"}], (None, None, None)),
        ("rate_limited", (None, None, None)),
        (None, (None, None, None)),
    ],
)  # fmt: skip
def test_error_fields(body: Any, expected: tuple[Any, ...]) -> None:
    assert error_fields(body) == expected


def test_unknown_fields_in_the_envelope_are_ignored() -> None:
    body = {"error": "idempotency_key_conflict", "new_field": {"nested": 1}, "docs": "https://x"}
    error = classify(409, body, retry_after=None)
    assert type(error) is RecordRejected
    assert error.error_code == "idempotency_key_conflict"


def test_reason_labels_are_bounded() -> None:
    assert classify(429, None, retry_after=None).reason == "429"
    assert classify(503, None, retry_after=None).reason == "5xx"
    assert classify(500, None, retry_after=None).reason == "5xx"
    assert classify(408, None, retry_after=None).reason == "408"
    assert TransportFailure("x", kind="timeout").reason == "timeout"
    assert SemarizeError("x").reason == "error"


def test_message_names_status_code_and_message() -> None:
    error = classify(
        422, {"error": "input_not_processable", "message": "bad stage"}, retry_after=None
    )
    assert str(error) == "HTTP 422 input_not_processable: bad stage"
