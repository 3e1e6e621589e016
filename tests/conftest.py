"""Shared pytest configuration. Fixtures live in plugin modules listed here."""

pytest_plugins = [
    "tests.fixtures_kafka",
    "tests.fixtures_simulator",
    "tests.fixtures_connector",
    "tests.figures",
]
