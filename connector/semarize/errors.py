"""The one error taxonomy of the Semarize API: every response and failure maps to a class
here, and each class carries the action the pipeline takes (semarize-api.md sections 4-6).

    SemarizeError
    ├── RetryableError          retry with backoff, never sooner than retry_after
    │   ├── RateLimited         429
    │   ├── ServerError         5xx, 408, 425
    │   └── TransportFailure    timeout, refused or dropped connection, unreadable body
    ├── RecordRejected          400/404/409/413/422 about this record: dead letter
    └── HaltError               stop creating anything until it is fixed; never a dead letter
        ├── CredentialsRejected 401, 403
        └── ConfigurationRejected the configured Kit or mode is refused (kit_not_found, ...)

`classify()` is the single place that decides. It looks at the `error` code, not the status
alone: `kit_not_found` is the record's fault when the record chose its own Kit, and the
configuration's fault otherwise.
"""

from __future__ import annotations

from typing import Any

from connector.errors import ConnectorError

# Codes that blame the connector's configuration, whatever the status.
CONFIGURATION_CODES = frozenset(
    {"invalid_run_mode", "invalid_run_type", "kit_code_or_kit_version_id_required"}
)
KIT_CODES = frozenset({"kit_not_found", "kit_version_not_found"})
RETRYABLE_STATUSES = frozenset({408, 425, 429})


class SemarizeError(ConnectorError):
    retryable = False
    halts = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        """A bounded label for metrics: the status or the failure kind."""
        return str(self.status) if self.status is not None else "error"


class RetryableError(SemarizeError):
    retryable = True


class RateLimited(RetryableError):
    pass


class ServerError(RetryableError):
    @property
    def reason(self) -> str:
        return "5xx" if self.status and self.status >= 500 else str(self.status)


class TransportFailure(RetryableError):
    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind  # "timeout" | "connection" | "protocol"

    @property
    def reason(self) -> str:
        return self.kind


class RecordRejected(SemarizeError):
    pass


class HaltError(SemarizeError):
    halts = True


class CredentialsRejected(HaltError):
    pass


class ConfigurationRejected(HaltError):
    pass


def error_fields(body: Any) -> tuple[str | None, str | None, float | None]:
    """(error code, message, retry_after_seconds) from a flat error envelope, if any."""
    if not isinstance(body, dict):
        return None, None, None
    code = body.get("error")
    message = body.get("message") or body.get("detail")
    retry_after = body.get("retry_after_seconds")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
        float(retry_after) if isinstance(retry_after, int | float) and retry_after >= 0 else None,
    )


def classify(
    status: int,
    body: Any,
    *,
    retry_after: float | None,
    record_chose_kit: bool = False,
) -> SemarizeError:
    """The error for a non-success response."""
    code, message, body_retry_after = error_fields(body)
    # The body's retry_after_seconds, when present, is the delay to use (api.md section 5).
    delay = body_retry_after if body_retry_after is not None else retry_after
    text = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if status == 429:
        return RateLimited(text, status=status, error_code=code, retry_after=delay)
    if status >= 500 or status in RETRYABLE_STATUSES:
        return ServerError(text, status=status, error_code=code, retry_after=delay)
    if status in (401, 403):
        return CredentialsRejected(text, status=status, error_code=code)
    if code in CONFIGURATION_CODES or (code in KIT_CODES and not record_chose_kit):
        return ConfigurationRejected(text, status=status, error_code=code)
    return RecordRejected(text, status=status, error_code=code)
