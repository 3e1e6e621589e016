"""Kafka fixtures: one real broker per test session (or an external one), unique topics.

- ``kafka_bootstrap`` (session): ``"host:port"`` of the broker the tests use. With
  ``CONNECTOR_TEST_BOOTSTRAP_SERVERS`` set, that cluster; otherwise a private single-node
  broker (tests/kafka_broker.py) on free loopback ports, started on first use and always
  stopped at the end of the session. ``KAFKA_BOOTSTRAP_SERVERS`` is never read here.
- ``kafka_broker`` (session): the private :class:`KafkaBroker` itself, for tests that stop,
  kill or restart it (skipped when an external broker is used). A test that stops or kills it
  must start it again (``kafka_broker.start()``) before it ends.
- ``topic_factory`` (function): ``topic_factory(partitions=1, config=None, prefix=None)``
  creates a uniquely named topic and returns its name; the topics are deleted afterwards.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

import pytest

from tests.kafka_admin import close_clients, create_topic, delete_topic, unique_name
from tests.kafka_broker import KafkaBroker

EXTERNAL_BOOTSTRAP_ENV = "CONNECTOR_TEST_BOOTSTRAP_SERVERS"

TopicFactory = Callable[..., str]


@pytest.fixture(scope="session")
def _kafka_private_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KafkaBroker | None]:
    if os.environ.get(EXTERNAL_BOOTSTRAP_ENV):
        yield None
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-broker"))
    try:
        broker.start()
        yield broker
    finally:
        close_clients()  # before the broker goes: no reconnect noise at the end
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_private_broker: KafkaBroker | None) -> str:
    """bootstrap.servers of the test broker (external or private)."""
    external = os.environ.get(EXTERNAL_BOOTSTRAP_ENV)
    if external:
        return external
    assert _kafka_private_broker is not None
    return _kafka_private_broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_broker(_kafka_private_broker: KafkaBroker | None) -> KafkaBroker:
    """The session's private broker, for restart / kill tests."""
    if _kafka_private_broker is None:
        pytest.skip(f"{EXTERNAL_BOOTSTRAP_ENV} names an external broker; it cannot be restarted")
    return _kafka_private_broker


def _topic_prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-.")
    return name[:60] or "t"


@pytest.fixture
def topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Creates uniquely named topics (named after the test) and deletes them afterwards."""
    created: list[str] = []
    default_prefix = _topic_prefix(request)

    def make(
        partitions: int = 1, config: dict[str, str] | None = None, prefix: str | None = None
    ) -> str:
        name = create_topic(
            kafka_bootstrap, unique_name(prefix or default_prefix), partitions, config
        )
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            delete_topic(kafka_bootstrap, name, timeout=10)
        except Exception:  # best effort: the broker may be down after a failed test
            break
