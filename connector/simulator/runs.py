"""The run store: creation with idempotency, and each run's lifecycle by monotonic time.

A run holds only its creation time, its duration and its outcome; its status is computed
when asked (queued for the first tenth of the duration, then running, then the outcome), so
no timer runs per run. The terminal detail (Bricks included) is built once, on first use,
and kept serialised; the input is dropped then.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from connector.simulator import bricks
from connector.simulator.errors import ApiError
from connector.simulator.faults import Dice
from connector.simulator.options import SimConfig
from connector.simulator.validate import CreateRequest

TERMINAL = frozenset(("succeeded", "failed", "cancelled"))
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
QUEUED_FRACTION = 0.1

FAILURES = (
    (
        "transcript_too_short",
        "The transcript has too few words for this Kit",
        "This conversation is too short to analyse.",
    ),
    (
        "model_error",
        "The model returned a response that did not match the Kit's output schema",
        "Something went wrong while analysing this conversation. Please try again.",
    ),
    (
        "model_timeout",
        "The model did not respond within the execution time limit",
        "Analysis took too long. Please try again.",
    ),
    (
        "input_language_unsupported",
        "The transcript language is not supported by this Kit",
        "This conversation's language is not supported.",
    ),
)
CANCELLED = (
    "run_cancelled",
    "The run was cancelled before it completed",
    "This run was cancelled.",
)


def rfc3339(wall: float) -> str:
    """UTC time with milliseconds and a `Z`: `2026-01-02T03:04:05.678Z`."""
    millis = int(wall * 1000)
    t = time.gmtime(millis // 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 (faster than strftime)
        t.tm_year,
        t.tm_mon,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
        millis % 1000,
    )


class Run:
    __slots__ = (
        "_final",
        "created_at",
        "created_mono",
        "created_wall",
        "duration_ms",
        "ends",
        "error",
        "fingerprint",
        "input",
        "kit_code",
        "kit_version_id",
        "outcome",
        "run_id",
        "run_type",
        "starts",
    )

    def __init__(
        self,
        run_id: str,
        request: CreateRequest,
        now: float,
        wall: float,
        duration_ms: int,
        outcome: str,
        error: tuple[str, str, str] | None,
    ) -> None:
        self.run_id = run_id
        self.run_type = request.run_type
        self.kit_code = request.kit_code
        self.kit_version_id = request.kit_version_id
        self.fingerprint = request.fingerprint
        self.input: dict[str, Any] | None = request.input
        self.created_mono = now
        self.created_wall = wall
        self.created_at = rfc3339(wall)
        self.duration_ms = duration_ms
        self.starts = now + duration_ms * QUEUED_FRACTION / 1000.0
        self.ends = now + duration_ms / 1000.0
        self.outcome = outcome
        self.error = error
        self._final: bytes | None = None

    def status(self, now: float) -> str:
        if now >= self.ends:
            return self.outcome
        return "running" if now >= self.starts else "queued"

    def summary(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "status": status,
            "run_type": self.run_type,
            "kit_code": self.kit_code,
            "kit_version_id": self.kit_version_id,
            "created_at": self.created_at,
        }
        if status in TERMINAL:
            out["completed_at"] = rfc3339(self.created_wall + self.duration_ms / 1000.0)
        return out

    def detail_bytes(self, now: float) -> bytes:
        """The public run detail (as `GET /v1/runs/{runId}` returns it) at `now`, serialised.

        The terminal detail is built once and kept."""
        if now < self.ends:
            return orjson.dumps(self.summary(now))
        if self._final is None:
            out = self.summary(self.ends)
            out["duration_ms"] = self.duration_ms
            if self.outcome == "succeeded":
                bricks_json = orjson.Fragment(bricks.evaluate_json(self.input or {}))
                out["output"] = {"kit_code": self.kit_code, "bricks": bricks_json}
            elif self.error is not None:
                code, message, user_message = self.error
                out["error_code"] = code
                out["error_message"] = message
                out["error_user_message"] = user_message
            self._final = orjson.dumps(out)
            self.input = None  # only the serialised detail is kept: ~2-3 KB per finished run
        return self._final

    def final(self) -> dict[str, Any]:
        """The terminal detail as a new dict (for webhooks and the sync answer)."""
        result: dict[str, Any] = orjson.loads(self.detail_bytes(self.ends))
        return result


class RunStore:
    """Every run of the simulator's life, and the Idempotency-Keys that created them."""

    def __init__(self, dice: Dice) -> None:
        self._dice = dice
        self.runs: dict[str, Run] = {}
        self._by_key: dict[str, Run] = {}
        self._anonymous = 0
        self._epoch = 0
        self.created = 0
        self.replayed = 0

    def clear(self) -> None:
        self.runs.clear()
        self._by_key.clear()
        self._anonymous = 0
        self._epoch += 1  # ids of a new epoch never repeat those handed out before
        self.created = 0
        self.replayed = 0

    def get(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    def create(
        self,
        request: CreateRequest,
        idempotency_key: str | None,
        config: SimConfig,
        now: float,
        wall: float,
    ) -> tuple[Run, bool]:
        """`(run, replayed)`. Synchronous on purpose: no await between check and insert, so
        concurrent creates with one key get one run. Raises ApiError 409 on a key conflict."""
        if idempotency_key is not None:
            existing = self._by_key.get(idempotency_key)
            if existing is not None:
                if existing.fingerprint != request.fingerprint:
                    raise ApiError(
                        409,
                        "idempotency_key_conflict",
                        "This Idempotency-Key was used with a different request",
                    )
                self.replayed += 1
                return existing, True
            subject = f"{self._epoch}:key:{idempotency_key}"
        else:
            self._anonymous += 1
            subject = f"{self._epoch}:anon:{self._anonymous}"
        run_id = "run_" + self._dice.hex(subject, "run_id", 24)
        while run_id in self.runs:  # a 96-bit collision: keep ids unique all the same
            subject += "+"
            run_id = "run_" + self._dice.hex(subject, "run_id", 24)
        duration_ms, outcome, error = self._draw(request, run_id, config)
        run = Run(run_id, request, now, wall, duration_ms, outcome, error)
        self.runs[run_id] = run
        if idempotency_key is not None:
            self._by_key[idempotency_key] = run
        self.created += 1
        return run, False

    def _draw(
        self, request: CreateRequest, run_id: str, config: SimConfig
    ) -> tuple[int, str, tuple[str, str, str] | None]:
        dice = self._dice
        sim = request.sim
        if sim is not None and sim.duration_ms is not None:
            duration_ms = sim.duration_ms
        else:
            duration_ms = dice.pick(run_id, 0, "duration_ms", *config.run_duration_ms)
        if sim is not None and sim.outcome is not None:
            outcome = sim.outcome
        else:
            u = dice.uniform(run_id, 0, "outcome")
            if u < config.fail_rate:
                outcome = "failed"
            elif u < config.fail_rate + config.cancel_rate:
                outcome = "cancelled"
            else:
                outcome = "succeeded"
        error: tuple[str, str, str] | None = None
        if outcome == "failed":
            error = FAILURES[dice.pick(run_id, 0, "error_code", 0, len(FAILURES) - 1)]
        elif outcome == "cancelled":
            error = CANCELLED
        return duration_ms, outcome, error

    def newest(self, limit: int) -> tuple[list[Run], bool]:
        """Up to `limit` runs, newest first, and whether there are more."""
        out: list[Run] = []
        for run_id in reversed(self.runs):
            if len(out) == limit:
                return out, True
            out.append(self.runs[run_id])
        return out, False

    def count_by_status(self, now: float) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for run in self.runs.values():
            counts[run.status(now)] += 1
        return counts
