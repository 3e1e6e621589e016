"""The connector's own exceptions (the Semarize API's live in `connector.semarize.errors`).

ConnectorError
├── ConfigError          bad configuration: exit 2, one line per problem
├── StartupCheckError    a topic or the configured Kit does not exist: exit 2
└── KafkaFatalError      librdkafka reported a fatal error (fenced producer, ...): exit 1
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""

    exit_code = EXIT_FAILURE


class ConfigError(ConnectorError):
    """One or more configuration problems, each a complete sentence on its own line."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StartupCheckError(ConfigError):
    """A start-up check against Kafka or the API found the configuration wrong."""


class KafkaFatalError(ConnectorError):
    """librdkafka reported an error it cannot recover from."""
