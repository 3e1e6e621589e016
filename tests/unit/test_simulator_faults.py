"""Injected faults: 429, 5xx, slow, reset, rate limit, outages, revoked key, determinism."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import aiohttp
import pytest

from connector.simulator.options import SimConfig
from tests.fixtures_simulator import SimClient, in_process, run_body, run_in_process

run = run_in_process


def test_injected_429_creates_nothing() -> None:
    async def scenario(c: SimClient) -> None:
        reply = await c.create(run_body(), key="k")
        assert reply.status == 429
        assert reply.headers["Retry-After"] == "7"
        assert reply.data == {"error": "rate_limited", "retry_after_seconds": 7}
        assert (await c.request("GET", "/v1/runs")).status == 429
        stats = await c.stats()
        assert stats["runs_created"] == 0
        assert stats["requests"]["POST /v1/runs"] == {"429": 1}

    run(scenario, SimConfig(rate_429=1.0, retry_after_429=7))


def test_injected_5xx_creates_nothing() -> None:
    async def scenario(c: SimClient) -> None:
        replies = [await c.create(run_body(), key=f"k{i}") for i in range(40)]
        assert {r.status for r in replies} == {500, 502, 503}
        for r in replies:
            if r.status == 500:
                assert r.data == {"error": "run_request_failed"}
        assert (await c.stats())["runs_created"] == 0
        # retrying with the same keys once the fault is off creates each run once
        await c.faults(rate_5xx=0)
        ids = {(await c.create(run_body(), key=f"k{i}")).data["run_id"] for i in range(40)}
        assert len(ids) == 40

    run(scenario, SimConfig(rate_5xx=1.0))


def test_slow_responses() -> None:
    async def scenario(c: SimClient) -> None:
        started = time.monotonic()
        reply = await c.create(run_body(), key="slow")
        assert reply.status == 202
        assert time.monotonic() - started >= 0.59
        await c.faults(slow_rate=0)
        started = time.monotonic()
        await c.get_run(reply.data["run_id"])
        assert time.monotonic() - started < 0.5

    run(scenario, SimConfig(slow_rate=1.0, slow_ms=(600, 600)))


def test_reset_drops_connections_and_half_create_the_run() -> None:
    async def scenario(c: SimClient) -> None:
        for i in range(30):
            with pytest.raises(aiohttp.ClientConnectionError):
                await c.create(run_body(), key=f"k{i}")
        stats = await c.stats()
        created = stats["runs_created"]
        assert 5 <= created <= 25  # about half were dropped after the run was created
        assert stats["requests"]["POST /v1/runs"] == {"reset": 30}
        await c.faults(reset_rate=0)
        replies = [await c.create(run_body(), key=f"k{i}") for i in range(30)]
        assert {r.status for r in replies} == {202}
        stats = await c.stats()
        # the idempotency key recovers the runs created before the drop
        assert (stats["runs_created"], stats["runs_replayed"]) == (30, created)

    run(scenario, SimConfig(reset_rate=1.0))


def test_reset_on_get() -> None:
    async def scenario(c: SimClient) -> None:
        run_id = (await c.create(run_body())).data["run_id"]
        await c.faults(reset_rate=1)
        with pytest.raises(aiohttp.ClientConnectionError):
            await c.get_run(run_id)

    run(scenario)


def test_rate_limit() -> None:
    async def scenario(c: SimClient) -> None:
        replies = await asyncio.gather(*(c.request("GET", "/v1/runs") for _ in range(30)))
        ok = [r for r in replies if r.status == 200]
        limited = [r for r in replies if r.status == 429]
        # a burst of 5, plus 5 a second refilled while the 30 are answered
        assert 5 <= len(ok) <= 12 and len(ok) + len(limited) == 30
        for r in limited:
            assert r.headers["Retry-After"] == "1"
            assert r.data == {"error": "rate_limited", "retry_after_seconds": 1}
        await asyncio.sleep(1.0)
        assert (await c.request("GET", "/v1/runs")).status == 200
        await c.faults(rate_limit=0)
        replies = await asyncio.gather(*(c.request("GET", "/v1/runs") for _ in range(30)))
        assert {r.status for r in replies} == {200}

    run(scenario, SimConfig(rate_limit=5))


def test_rate_limit_retry_after_for_slow_rates() -> None:
    async def scenario(c: SimClient) -> None:
        assert (await c.request("GET", "/v1/runs")).status == 200
        reply = await c.request("GET", "/v1/runs")
        assert reply.status == 429 and reply.headers["Retry-After"] == "4"

    run(scenario, SimConfig(rate_limit=0.25))


def test_revoke_key() -> None:
    async def scenario(c: SimClient) -> None:
        await c.faults(revoke_key=True)
        for auth in ("Bearer a", "Bearer b"):
            reply = await c.request("GET", "/v1/runs", auth=auth)
            assert (reply.status, reply.data["error"]) == (401, "invalid_api_key")
        await c.faults(revoke_key=False)
        assert (await c.request("GET", "/v1/runs")).status == 200

    run(scenario)


def test_outage_503_ends_by_itself() -> None:
    async def scenario(c: SimClient) -> None:
        reply = await c.faults(outage="503", outage_seconds=0.6)
        assert reply.data["outage"] == "503" and 0 < reply.data["outage_seconds"] <= 0.6
        for path in ("/v1/runs", "/v1/runs/run_x"):
            assert (await c.request("GET", path)).status == 503
        assert (await c.create(run_body())).status == 503
        assert (await c.stats())["runs_created"] == 0  # the control plane still answers
        await asyncio.sleep(0.7)
        assert (await c.request("GET", "/v1/runs")).status == 200
        await c.faults(outage="503", outage_seconds=30)
        assert (await c.request("GET", "/v1/runs")).status == 503
        await c.faults(outage=None)  # ended by hand
        assert (await c.request("GET", "/v1/runs")).status == 200

    run(scenario)


def test_outage_at_start() -> None:
    async def scenario(c: SimClient) -> None:
        assert (await c.request("GET", "/v1/runs")).status == 503

    run(scenario, SimConfig(outage="503", outage_seconds=5))


def test_outage_refuse_closes_the_port_and_reopens_it() -> None:
    async def scenario(c: SimClient) -> None:
        port = c.sim.port
        reply = await c.faults(outage="refuse", outage_seconds=1.0)
        assert reply.status == 200 and reply.data["outage"] == "refuse"
        started = time.monotonic()
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.ClientConnectorError):
                await fresh.get(c.url + "/_sim/stats")  # the control plane is unreachable too
        with pytest.raises(aiohttp.ClientConnectionError):
            await c.request("GET", "/v1/runs")  # kept-alive connections are dropped
        while time.monotonic() - started < 5.0:
            try:
                reply = await c.request("GET", "/v1/runs")
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        assert reply.status == 200
        assert 0.9 <= time.monotonic() - started < 5.0
        assert c.sim.port == port
        assert (await c.stats())["requests"]["GET /v1/runs"]["200"] == 1

    run(scenario)


def test_refuse_ended_early_reopens() -> None:
    async def scenario(c: SimClient) -> None:
        await c.faults(outage="refuse", outage_seconds=60)
        # the control plane is down, so end it from inside (as a restart of the test would)
        c.sim.state.outage.start(None, 0, time.monotonic())
        for _ in range(50):
            try:
                assert (await c.request("GET", "/v1/runs")).status == 200
                return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        raise AssertionError("never reopened")

    run(scenario)


def test_faults_on_gets_follow_the_run_id() -> None:
    async def scenario(c: SimClient) -> None:
        run_id = (await c.create(run_body())).data["run_id"]
        await c.faults(rate_5xx=0.5)
        statuses = [(await c.get_run(run_id)).status for _ in range(30)]
        assert 200 in statuses and any(s >= 500 for s in statuses)

    run(scenario)


def test_same_seed_same_faults() -> None:
    """Two fresh simulators with one seed meet the same traffic with the same answers."""
    config = SimConfig(
        seed=99,
        rate_429=0.2,
        rate_5xx=0.2,
        fail_rate=0.3,
        cancel_rate=0.1,
        run_duration_ms=(0, 0),
    )

    async def traffic(config: SimConfig) -> list[object]:
        seen: list[object] = []
        async with in_process(config) as c:
            for i in range(20):
                for _attempt in range(3):  # retry with the same key, as a client would
                    reply = await c.create(run_body(f"call {i}"), key=f"event-{i}")
                    seen.append(reply.status)
                    if reply.status == 202:
                        detail = await c.get_run(reply.data["run_id"])
                        seen.append((reply.data["run_id"], detail.status))
                        if detail.status == 200:
                            data = detail.data
                            seen.append(
                                (data["status"], data["duration_ms"], data.get("error_code"))
                            )
                        break
            no_key = await c.create(run_body("no key"))
            seen.append((no_key.status, no_key.data.get("run_id")))
        return seen

    async def main() -> tuple[list[object], list[object], list[object]]:
        other = dataclasses.replace(config, seed=100)
        return await traffic(config), await traffic(config), await traffic(other)

    first, second, other_seed = asyncio.run(main())
    assert first == second
    assert {429, 500, 502, 503} & set(first)  # faults did happen
    assert "failed" in repr(first) and "succeeded" in repr(first)
    assert other_seed != first
