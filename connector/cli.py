"""Commands: parse, build the settings, hand over. Nothing else lives here."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

import orjson

from connector import __version__
from connector.errors import EXIT_CONFIG, ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semarize-connector",
        description="Kafka -> Semarize Runs API -> Kafka: analyse finished calls.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the connector", description="Run the connector.")
    _config_option(run)
    run.add_argument(
        "--stop-when-idle",
        type=_non_negative,
        metavar="SECONDS",
        help="exit 0 once the input is drained, nothing is in flight and everything is "
        "committed, for SECONDS (backfills, demos, tests)",
    )

    check = commands.add_parser(
        "check-config",
        help="validate and print the effective configuration (secrets masked)",
        description="Validate and print the effective configuration, every secret masked. "
        "Exit 0 when valid, 2 with one line per problem.",
    )
    _config_option(check)

    from connector.redrive import add_arguments as add_redrive_arguments

    redrive = commands.add_parser(
        "redrive",
        help="republish dead letters to the input topic for a new run",
        description="Republish chosen dead letters to the input topic (or --to) byte for "
        "byte, with a bumped redrive generation so each gets a new run. Resumable: the "
        "position on the dead-letter topic is committed to its own group, so a second "
        "identical run sends nothing; records a filter leaves out are passed over for good "
        "(--from-beginning starts over). See docs/runbook.md.",
    )
    _config_option(redrive)
    add_redrive_arguments(redrive)

    from connector.simulator.options import add_arguments as add_simulator_arguments

    simulate = commands.add_parser(
        "simulate",
        help="run a local Semarize API for development, demos and tests",
        description="A local, deterministic Semarize API (see docs/simulator.md).",
    )
    add_simulator_arguments(simulate)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML configuration file (optional; env overrides it)"
    )


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        from connector.simulator.server import main as simulate

        return simulate(args)

    from connector.config import load_settings, masked_dict

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "check-config":
        sys.stdout.write(
            orjson.dumps(masked_dict(settings), option=orjson.OPT_INDENT_2).decode() + "\n"
        )
        return 0

    from connector.config import librdkafka_secrets
    from connector.logs import configure_logging

    secrets = [
        settings.semarize.api_key.reveal(),
        settings.webhooks.secret.reveal(),
        settings.pipeline.idempotency_salt.reveal(),
        *librdkafka_secrets(settings),
    ]
    configure_logging(settings.ops.log_level, secrets)

    if args.command == "redrive":
        from connector.redrive import run_redrive

        return run_redrive(settings, args)

    from connector.app import Connector

    async def _run() -> int:
        return await Connector(settings, stop_when_idle=args.stop_when_idle).run()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_run())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop (a dependency, not on Windows) unless CONNECTOR_EVENT_LOOP=asyncio: it takes
    10-20 % off the per-record CPU cost (bench/RESULTS.md); the stdlib loop otherwise."""
    if os.environ.get("CONNECTOR_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


if __name__ == "__main__":
    raise SystemExit(main())
