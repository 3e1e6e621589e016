"""The simulator's /v1 routes and control plane over HTTP (in-process, loopback)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

from connector.simulator.options import SimConfig
from tests.fixtures_simulator import SimClient, run_body, run_in_process

run = run_in_process


def fixed(duration_ms: int = 0, outcome: str = "succeeded", **extra: object) -> dict[str, object]:
    """A body whose run takes exactly `duration_ms` and ends `outcome`."""
    transcript = "Rep: What budget do you have? Prospect: $10k. We use Gong."
    return run_body(
        None,
        input={
            "transcript": transcript,
            "_sim": {"duration_ms": duration_ms, "outcome": outcome},
            **extra,
        },
    )


# --- authentication ---------------------------------------------------------------------------


def test_authentication() -> None:
    async def scenario(c: SimClient) -> None:
        for path in ("/v1/runs", "/v1/runs/run_x", "/v1/kits/schema?kit_code=A1B2C3D4"):
            reply = await c.request("GET", path, auth=None)
            assert (reply.status, reply.data["error"]) == (401, "missing_bearer_token")
        reply = await c.create(run_body(), auth="Basic abc")
        assert (reply.status, reply.data["error"]) == (401, "missing_bearer_token")
        reply = await c.request("GET", "/v1/runs", auth="Bearer")
        assert (reply.status, reply.data["error"]) == (401, "missing_bearer_token")
        for bad in ("Bearer two words", "Bearer other-key"):
            reply = await c.request("GET", "/v1/runs", auth=bad)
            assert (reply.status, reply.data["error"]) == (401, "invalid_api_key"), bad
        assert (await c.request("GET", "/v1/runs", auth="Bearer the-key")).status == 200
        assert (await c.request("GET", "/v1/runs", auth="bearer the-key")).status == 200

    run(scenario, SimConfig(api_key="the-key"))


def test_any_well_formed_key_without_api_key_option() -> None:
    async def scenario(c: SimClient) -> None:
        for auth in ("Bearer smz_live_1", "Bearer x"):
            assert (await c.request("GET", "/v1/runs", auth=auth)).status == 200
        assert (await c.request("GET", "/v1/runs", auth="Bearer a b")).status == 401

    run(scenario)


# --- create -----------------------------------------------------------------------------------


def test_create_async() -> None:
    async def scenario(c: SimClient) -> None:
        reply = await c.create(run_body(type="sandbox"), key="k-1")
        assert reply.status == 202
        assert re.fullmatch(r"run_[0-9a-f]{24}", reply.data["run_id"])
        assert reply.data == {
            "run_id": reply.data["run_id"],
            "status": "queued",
            "run_type": "sandbox",
        }
        assert reply.headers["Retry-After"] == "3"
        assert reply.headers["Content-Type"].startswith("application/json")

    run(scenario, SimConfig(retry_after=3))


def test_retry_after_zero_omits_the_header() -> None:
    async def scenario(c: SimClient) -> None:
        reply = await c.create(fixed(5000))
        assert reply.status == 202 and "Retry-After" not in reply.headers
        reply = await c.get_run(reply.data["run_id"])
        assert reply.data["status"] == "queued" and "Retry-After" not in reply.headers

    run(scenario, SimConfig(retry_after=0))


def test_create_errors() -> None:
    async def scenario(c: SimClient) -> None:
        cases: list[tuple[bytes, int, str]] = [
            (b"not json", 400, "invalid_json"),
            (b'"a string"', 400, "invalid_json"),
            (b'{"input": {}}', 400, "kit_code_or_kit_version_id_required"),
            (b'{"kit_code": "A1B2C3D4", "input": "x"}', 400, "input_must_be_object"),
            (b'{"kit_code": "A1B2C3D4", "input": {}, "type": "x"}', 400, "invalid_run_type"),
            (b'{"kit_code": "A1B2C3D4", "input": {}, "mode": "x"}', 400, "invalid_run_mode"),
            (b'{"kit_code": "not-a-kit", "input": {}}', 404, "kit_not_found"),
            (b'{"kit_version_id": "kv_nope", "input": {}}', 404, "kit_not_found"),
            (
                b'{"kit_code": "A1B2C3D4", "input": {"transcript": ""}}',
                422,
                "input_not_processable",
            ),
            (
                b'{"kit_code": "A1B2C3D4", "input": {"transcript": []}}',
                422,
                "input_not_processable",
            ),
        ]
        for raw, status, code in cases:
            reply = await c.request("POST", "/v1/runs", data=raw)
            assert (reply.status, reply.data["error"]) == (status, code), raw
            assert isinstance(reply.data["message"], str)
        reply = await c.create(run_body(), key="k" * 255)
        assert (reply.status, reply.data["error"]) == (400, "invalid_idempotency_key")
        assert (await c.create(run_body(), key="k" * 254)).status == 202
        big = b'{"kit_code": "A1B2C3D4", "input": {"transcript": "' + b"x" * (1 << 20) + b'"}}'
        reply = await c.request("POST", "/v1/runs", data=big)
        assert (reply.status, reply.data["error"]) == (413, "payload_too_large")

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
            yield b'{"kit_code": "A1B2C3D4", "input": {"transcript": "'
            for _ in range(17):
                yield b"x" * 65536
            yield b'"}}'

        headers = {"Authorization": "Bearer k"}
        async with c.session.post(c.url + "/v1/runs", data=chunked(), headers=headers) as r:
            assert r.status == 413 and (await r.json())["error"] == "payload_too_large"
        stats = await c.stats()
        assert stats["runs_created"] == 1
        assert stats["requests"]["POST /v1/runs"] == {
            "202": 1,
            "400": 7,
            "404": 2,
            "413": 2,
            "422": 2,
        }

    run(scenario, SimConfig(kit_versions=frozenset({"kv_yes"})))


def test_known_kits_and_versions() -> None:
    async def scenario(c: SimClient) -> None:
        assert (await c.create(run_body(kit_code="KNOWN001"))).status == 202
        assert (await c.create(run_body(kit_code="OTHER001"))).status == 404
        both = run_body(kit_code="OTHER001", kit_version_id="kv_yes")
        reply = await c.create(both)
        assert reply.status == 202  # kit_version_id wins
        detail = (await c.get_run(reply.data["run_id"])).data
        assert detail["kit_version_id"] == "kv_yes"

    run(scenario, SimConfig(kits=frozenset({"KNOWN001"}), kit_versions=frozenset({"kv_yes"})))


def test_unknown_fields_are_ignored() -> None:
    async def scenario(c: SimClient) -> None:
        body = run_body(future_field={"x": 1}, input={"transcript": "hi", "account_id": "a"})
        assert (await c.create(body)).status == 202

    run(scenario)


# --- idempotency ------------------------------------------------------------------------------


def test_idempotency_same_and_other_body() -> None:
    async def scenario(c: SimClient) -> None:
        first = await c.create(fixed(5000), key="event-1")
        again = await c.create(fixed(5000), key="event-1")
        assert (first.status, again.status) == (202, 202)
        assert again.data["run_id"] == first.data["run_id"]
        conflict = await c.create(fixed(5000, "failed"), key="event-1")
        assert (conflict.status, conflict.data["error"]) == (409, "idempotency_key_conflict")
        no_key = [await c.create(fixed(5000)) for _ in range(2)]
        assert no_key[0].data["run_id"] != no_key[1].data["run_id"]
        stats = await c.stats()
        assert (stats["runs_created"], stats["runs_replayed"]) == (3, 1)

    run(scenario)


def test_replay_returns_the_current_state() -> None:
    async def scenario(c: SimClient) -> None:
        first = await c.create(fixed(0), key="done")
        again = await c.create(fixed(0), key="done")
        assert again.data["run_id"] == first.data["run_id"]
        assert again.data["status"] == "succeeded"
        # mode is not part of the fingerprint: a sync replay of the same body is the same run
        sync = await c.create({**fixed(0), "mode": "sync"}, key="done")
        assert sync.status == 200 and sync.data["run_id"] == first.data["run_id"]

    run(scenario)


def test_concurrent_creates_with_one_key_make_one_run() -> None:
    async def scenario(c: SimClient) -> None:
        replies = await asyncio.gather(*(c.create(fixed(5000), key="same") for _ in range(20)))
        assert {r.status for r in replies} == {202}
        assert len({r.data["run_id"] for r in replies}) == 1
        stats = await c.stats()
        assert (stats["runs_created"], stats["runs_replayed"]) == (1, 19)

    run(scenario)


# --- get, lifecycle, sync ---------------------------------------------------------------------


def test_lifecycle_over_http() -> None:
    async def scenario(c: SimClient) -> None:
        start = time.monotonic()
        run_id = (await c.create(fixed(3000))).data["run_id"]
        first = await c.get_run(run_id)
        assert first.data["status"] == "queued"  # the first 300 ms
        assert first.headers["Retry-After"] == "1"
        assert "completed_at" not in first.data and "output" not in first.data
        await asyncio.sleep(max(0.0, start + 0.6 - time.monotonic()))
        assert (await c.get_run(run_id)).data["status"] == "running"
        await asyncio.sleep(max(0.0, start + 3.05 - time.monotonic()))
        done = await c.get_run(run_id)
        assert done.status == 200 and "Retry-After" not in done.headers
        detail = done.data
        assert detail["status"] == "succeeded" and detail["duration_ms"] == 3000
        assert set(detail) == {
            "run_id",
            "status",
            "run_type",
            "kit_code",
            "kit_version_id",
            "created_at",
            "completed_at",
            "duration_ms",
            "output",
        }
        assert detail["output"]["kit_code"] == "A1B2C3D4"
        assert detail["output"]["bricks"]["competitor_mentioned"]["value"] == "Gong"
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
        assert re.fullmatch(stamp, detail["created_at"])
        assert re.fullmatch(stamp, detail["completed_at"])

    run(scenario)


def test_failed_and_cancelled_details() -> None:
    async def scenario(c: SimClient) -> None:
        for outcome, codes in (
            ("failed", {"transcript_too_short", "model_error", "model_timeout"}),
            ("cancelled", {"run_cancelled"}),
        ):
            run_id = (await c.create(fixed(0, outcome))).data["run_id"]
            detail = (await c.get_run(run_id)).data
            assert detail["status"] == outcome and "output" not in detail
            assert detail["error_code"] in codes | {"input_language_unsupported"}
            assert detail["error_message"] and detail["error_user_message"]

    run(scenario)


def test_unknown_run() -> None:
    async def scenario(c: SimClient) -> None:
        reply = await c.get_run("run_000000000000000000000000")
        assert (reply.status, reply.data["error"]) == (404, "run_not_found")

    run(scenario)


def test_rates_decide_outcomes() -> None:
    async def scenario(c: SimClient) -> None:
        ids = [(await c.create(run_body(f"call {i}"))).data["run_id"] for i in range(60)]
        statuses = [(await c.get_run(i)).data["status"] for i in ids]
        assert set(statuses) == {"failed", "cancelled"}

    run(scenario, SimConfig(run_duration_ms=(0, 0), fail_rate=0.5, cancel_rate=0.5))


def test_sync_finishes_within_the_wait() -> None:
    async def scenario(c: SimClient) -> None:
        started = time.monotonic()
        reply = await c.create({**fixed(300, "failed"), "mode": "sync"}, key="s1")
        assert time.monotonic() - started >= 0.29
        assert reply.status == 200
        assert reply.data["status"] == "failed" and reply.data["error_code"]
        assert reply.data["duration_ms"] == 300

    run(scenario)


def test_sync_falls_back_to_202() -> None:
    async def scenario(c: SimClient) -> None:
        started = time.monotonic()
        reply = await c.create({**fixed(5000), "mode": "sync"})
        assert 0.7 <= time.monotonic() - started < 3.0
        assert reply.status == 202
        assert reply.data["sync_fallback"] is True and reply.data["waited_ms"] == 700
        assert reply.data["status"] == "running"  # queued only for the first 500 ms
        assert reply.headers["Retry-After"] == "1"

    run(scenario, SimConfig(sync_wait_ms=700))


# --- list, schema, unknown routes -------------------------------------------------------------


def test_list_runs() -> None:
    async def scenario(c: SimClient) -> None:
        ids = [(await c.create(fixed(0 if i < 2 else 5000))).data["run_id"] for i in range(4)]
        listing = (await c.request("GET", "/v1/runs")).data
        assert [r["run_id"] for r in listing["data"]] == ids[::-1]
        assert listing["has_more"] is False
        assert listing["data"][-1]["status"] == "succeeded"
        assert "completed_at" in listing["data"][-1]
        assert listing["data"][0]["status"] == "queued"
        two = (await c.request("GET", "/v1/runs?limit=2")).data
        assert [r["run_id"] for r in two["data"]] == ids[:1:-1] and two["has_more"] is True
        for bad in ("0", "101", "x", ""):
            reply = await c.request("GET", f"/v1/runs?limit={bad}")
            assert (reply.status, reply.data["error"]) == (400, "invalid_limit")
        assert (await c.request("GET", "/v1/runs?limit=100")).status == 200

    run(scenario)


def test_kit_schema() -> None:
    async def scenario(c: SimClient) -> None:
        reply = await c.request("GET", "/v1/kits/schema?kit_code=A1B2C3D4")
        assert reply.status == 200
        assert reply.data["kit_code"] == "A1B2C3D4"
        assert reply.data["kit_version_id"] == "kv_a1b2c3d4_v1"
        keys = {b["key"] for b in reply.data["bricks"]}
        assert {"budget_discussed", "next_steps", "sentiment", "talk_ratio"} <= keys
        assert all(set(b) == {"key", "type", "description"} for b in reply.data["bricks"])
        assert reply.data["output_fields"]
        by_version = await c.request("GET", "/v1/kits/schema?kit_version_id=kv_abc")
        assert by_version.status == 200 and by_version.data["kit_version_id"] == "kv_abc"
        reply = await c.request("GET", "/v1/kits/schema")
        assert (reply.status, reply.data["error"]) == (400, "kit_code_or_kit_version_id_required")
        reply = await c.request("GET", "/v1/kits/schema?kit_code=NOTAKIT1")
        assert (reply.status, reply.data["error"]) == (404, "kit_not_found")

    run(scenario, SimConfig(kits=frozenset({"A1B2C3D4"})))


def test_test_endpoint_stores_nothing() -> None:
    async def scenario(c: SimClient) -> None:
        reply = await c.request("POST", "/v1/test", run_body("Rep: what is the price?"))
        assert reply.status == 200
        assert reply.data["output"]["bricks"]["budget_discussed"]["value"] is True
        assert (await c.stats())["runs_created"] == 0

    run(scenario)


def test_unknown_routes() -> None:
    async def scenario(c: SimClient) -> None:
        for method, path in (("GET", "/nope"), ("GET", "/v1/other"), ("DELETE", "/v1/runs")):
            reply = await c.request(method, path)
            assert (reply.status, reply.data["error"]) == (404, "not_found")

    run(scenario)


# --- control plane ----------------------------------------------------------------------------


def test_stats_shape_and_reset() -> None:
    async def scenario(c: SimClient) -> None:
        run_id = (await c.create(fixed(5000))).data["run_id"]
        await c.get_run(run_id)
        await c.request("GET", "/v1/runs")
        await c.request("GET", "/v1/kits/schema?kit_code=A1B2C3D4")
        stats = await c.stats()
        assert stats["runs_created"] == 1 and stats["runs_replayed"] == 0
        assert stats["runs_by_status"] == {
            "queued": 1,
            "running": 0,
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
        }
        assert stats["requests"] == {
            "POST /v1/runs": {"202": 1},
            "GET /v1/runs/{runId}": {"200": 1},
            "GET /v1/runs": {"200": 1},
            "GET /v1/kits/schema": {"200": 1},
        }
        assert set(stats["webhooks"]) >= {"events", "attempts", "acknowledged", "pending"}
        reset = await c.request("POST", "/_sim/reset", {}, auth=None)
        assert reset.status == 200
        stats = await c.stats()
        assert stats["runs_created"] == 0 and stats["requests"] == {}
        assert (await c.get_run(run_id)).status == 404

    run(scenario)


def test_faults_endpoint() -> None:
    async def scenario(c: SimClient) -> None:
        reply = await c.faults(rate_5xx=0.5, run_duration_ms="50:500", kits="A1B2C3D4")
        assert reply.status == 200
        assert reply.data["rate_5xx"] == 0.5 and reply.data["run_duration_ms"] == "50:500"
        assert reply.data["kits"] == "A1B2C3D4"
        current = await c.request("GET", "/_sim/faults", auth=None)
        assert current.data == reply.data
        for bad in ({"bogus": 1}, {"rate_429": 7}, {"slow_ms": "x"}):
            reply = await c.faults(**bad)
            assert reply.status == 400 and reply.data["error"] == "invalid_setting"
        reply = await c.request("POST", "/_sim/faults", data=b"[1]", auth=None)
        assert reply.status == 400
        # applied at once: the Kit list now refuses other codes
        assert (await c.create(run_body(kit_code="B1B2C3D4"))).status == 404
        reply = await c.faults(kits="*", fail_rate=1, run_duration_ms="0:0", rate_5xx=0)
        run_id = (await c.create(run_body(kit_code="B1B2C3D4"))).data["run_id"]
        assert (await c.get_run(run_id)).data["status"] == "failed"

    run(scenario)
