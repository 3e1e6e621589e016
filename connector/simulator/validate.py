"""Validation of a `POST /v1/runs` (and `POST /v1/test`) body into a `CreateRequest`.

Checks run in the API's order and each failure is an `ApiError` with the documented code.
Unknown fields are ignored (but are part of the idempotency fingerprint, like any field).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from connector.simulator import kits
from connector.simulator.errors import ApiError
from connector.simulator.options import SimConfig

RUN_TYPES = ("api", "sandbox")
RUN_MODES = ("async", "sync")
OUTCOMES = ("succeeded", "failed", "cancelled")
MAX_IDEMPOTENCY_KEY = 254


@dataclass(frozen=True, slots=True)
class SimOverride:
    """`input._sim`: fixes a run's duration and/or outcome."""

    duration_ms: int | None
    outcome: str | None


@dataclass(frozen=True, slots=True)
class CreateRequest:
    kit_code: str
    kit_version_id: str
    run_type: str
    mode: str
    input: dict[str, Any]
    fingerprint: bytes  # canonical hash of the body without `mode`, for idempotency
    sim: SimOverride | None


def check_idempotency_key(key: str | None) -> None:
    if key is not None and (not key or len(key) > MAX_IDEMPOTENCY_KEY):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
        )


def fingerprint(body: dict[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON (sorted keys) of the body without `mode`."""
    canonical = orjson.dumps(
        {k: v for k, v in body.items() if k != "mode"}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).digest()


def parse_create(raw: bytes, config: SimConfig) -> CreateRequest:
    """Parse and check a create-run body. Raises ApiError (400, 404 or 422)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object")

    has_code = isinstance(body.get("kit_code"), str) and body["kit_code"]
    has_version = isinstance(body.get("kit_version_id"), str) and body["kit_version_id"]
    if not has_code and not has_version:
        raise ApiError(
            400,
            "kit_code_or_kit_version_id_required",
            "Provide kit_code or kit_version_id as a non-empty string",
        )
    run_input = body.get("input")
    if not isinstance(run_input, dict):
        raise ApiError(400, "input_must_be_object", "input must be a JSON object")
    run_type = body.get("type", "api")
    if run_type not in RUN_TYPES:
        raise ApiError(400, "invalid_run_type", "type must be one of: api, sandbox")
    mode = body.get("mode", "async")
    if mode not in RUN_MODES:
        raise ApiError(400, "invalid_run_mode", "mode must be one of: async, sync")
    sim = _sim_override(run_input.get("_sim"))

    kit_code, kit_version_id = kits.resolve(
        config, body.get("kit_code"), body.get("kit_version_id")
    )

    if "transcript" in run_input:
        transcript = run_input["transcript"]
        if transcript in ("", []) or (isinstance(transcript, str) and not transcript.strip()):
            raise ApiError(422, "input_not_processable", "input.transcript is empty")

    return CreateRequest(
        kit_code=kit_code,
        kit_version_id=kit_version_id,
        run_type=run_type,
        mode=mode,
        input=run_input,
        fingerprint=fingerprint(body),
        sim=sim,
    )


def _sim_override(value: object) -> SimOverride | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_sim_override", "input._sim must be an object")
    duration = value.get("duration_ms")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int) or duration < 0
    ):
        raise ApiError(
            400, "invalid_sim_override", "input._sim.duration_ms must be an integer >= 0"
        )
    outcome = value.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise ApiError(
            400,
            "invalid_sim_override",
            "input._sim.outcome must be one of: succeeded, failed, cancelled",
        )
    return SimOverride(duration, outcome)
