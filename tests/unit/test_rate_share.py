"""rate_limit.scope: group — each replica's share of the configured rate follows its part of
the input partitions, recomputed on every assignment change (no broker: `Connector` is built
and its assignment callbacks are called directly)."""

from __future__ import annotations

from typing import Any

import pytest

from connector.app import Connector
from connector.config import load_settings
from connector.semarize.transport import MockTransport, Response

ENV = {
    "SEMARIZE_API_KEY": "smz_test_share",
    "SEMARIZE_KIT_CODE": "A1B2C3D4",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "CONNECTOR_RATE_LIMIT_RPS": "120",
}


async def _no_api(_request: Any) -> Response:
    raise AssertionError("no request expected")


def connector(scope: str) -> Connector:
    c = Connector(
        load_settings(None, {**ENV, "CONNECTOR_RATE_LIMIT_SCOPE": scope}),
        transport=MockTransport(_no_api),
    )
    c._input_partitions = 12
    return c


def tps(*partitions: int) -> list[tuple[str, int]]:
    return [("transcripts", p) for p in partitions]


def test_the_share_follows_the_assignment_up_and_down() -> None:
    c = connector("group")
    c._on_assign(tps(0, 1, 2))
    assert c.rate_limit.rate == pytest.approx(30.0)  # 3 of 12 partitions
    c._on_assign(tps(3, 4, 5))
    assert c.rate_limit.rate == pytest.approx(60.0)  # a member left: a bigger share at once
    c.pipeline.partitions.pop(("transcripts", 5))
    c._share_rate_limit()
    assert c.rate_limit.rate == pytest.approx(50.0)


def test_no_partitions_is_a_small_rate_not_an_unlimited_one() -> None:
    c = connector("group")
    c._share_rate_limit()
    assert c.rate_limit.ceiling == 1.0 and c.rate_limit.rate == 1.0


def test_a_rate_cut_by_429s_stays_cut_when_the_share_grows() -> None:
    c = connector("group")
    c._on_assign(tps(0, 1, 2, 3, 4, 5))
    c.rate_limit._set_rate(20.0)  # the API pushed back
    c._on_assign(tps(6, 7, 8))
    assert c.rate_limit.ceiling == pytest.approx(90.0)
    assert c.rate_limit.rate == 20.0


def test_process_scope_keeps_the_whole_rate() -> None:
    c = connector("process")
    c._on_assign(tps(0))
    assert c.rate_limit.rate == 120.0
