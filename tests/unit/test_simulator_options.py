"""Simulator settings: option parsing, SimConfig checks, runtime overrides."""

from __future__ import annotations

import argparse

import pytest

from connector.simulator.options import (
    SimConfig,
    add_arguments,
    apply_overrides,
    config_from_args,
    parse_kits,
    parse_range,
    parse_rate,
    settings_view,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    args = parse()
    assert (args.host, args.port) == ("127.0.0.1", 8090)
    config = config_from_args(args)
    assert config.run_duration_ms == (200, 2000)
    assert config.sync_wait_ms == 30_000
    assert config.retry_after == 1
    assert config.retry_after_429 == 1
    assert config.kits is None and config.kit_versions is None
    assert config.webhook_max_attempts == 8
    assert (config.fail_rate, config.cancel_rate, config.rate_limit) == (0.0, 0.0, 0.0)


def test_every_option_reaches_the_config() -> None:
    args = parse(
        "--port=0",
        "--seed=7",
        "--api-key=k1",
        "--kits=A1B2C3D4,ZZZZ9999",
        "--kit-versions=kv_one",
        "--run-duration-ms=10:20",
        "--fail-rate=0.1",
        "--cancel-rate=0.2",
        "--sync-wait-ms=5",
        "--retry-after=0",
        "--rate-429=0.3",
        "--retry-after-429=4",
        "--rate-5xx=0.4",
        "--slow-rate=0.5",
        "--slow-ms=7:9",
        "--reset-rate=0.6",
        "--rate-limit=25",
        "--outage=503",
        "--outage-seconds=3",
        "--revoke-key",
        "--webhook-url=http://a/x,http://b/y",
        "--webhook-secret=s",
        "--webhook-max-attempts=3",
        "--webhook-backoff-ms=10",
        "--webhook-duplicate-rate=0.7",
        "--webhook-delay-ms=1:2",
        "--webhook-thin-rate=0.8",
        "--webhook-drop-rate=0.9",
    )
    c = config_from_args(args)
    assert args.port == 0
    assert c.seed == 7 and c.api_key == "k1"
    assert c.kits == frozenset({"A1B2C3D4", "ZZZZ9999"})
    assert c.kit_versions == frozenset({"kv_one"})
    assert c.run_duration_ms == (10, 20) and c.slow_ms == (7, 9) and c.webhook_delay_ms == (1, 2)
    assert (c.fail_rate, c.cancel_rate, c.rate_429, c.rate_5xx) == (0.1, 0.2, 0.3, 0.4)
    assert (c.slow_rate, c.reset_rate, c.rate_limit) == (0.5, 0.6, 25.0)
    assert (c.sync_wait_ms, c.retry_after, c.retry_after_429) == (5, 0, 4)
    assert (c.outage, c.outage_seconds, c.revoke_key) == ("503", 3.0, True)
    assert c.webhook_url == ("http://a/x", "http://b/y") and c.webhook_secret == "s"
    assert (c.webhook_max_attempts, c.webhook_backoff_ms) == (3, 10)
    assert (c.webhook_duplicate_rate, c.webhook_thin_rate, c.webhook_drop_rate) == (0.7, 0.8, 0.9)


def test_random_seed_without_option() -> None:
    seeds = {config_from_args(parse()).seed for _ in range(5)}
    assert len(seeds) > 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--run-duration-ms=5:1"],
        ["--run-duration-ms=x"],
        ["--fail-rate=1.5"],
        ["--rate-5xx=-0.1"],
        ["--kits=abc"],
        ["--kit-versions=v1"],
        ["--outage=maybe"],
        ["--webhook-url=ftp://x"],
        ["--port=-1"],
        ["--webhook-max-attempts=0"],
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_webhook_url_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="webhook-secret"):
        config_from_args(parse("--webhook-url=http://x/y"))


def test_fail_plus_cancel_above_one() -> None:
    with pytest.raises(ValueError):
        config_from_args(parse("--fail-rate=0.6", "--cancel-rate=0.6"))


def test_value_parsers() -> None:
    assert parse_range("50:500") == (50, 500)
    assert parse_range("7") == (7, 7)
    assert parse_rate("0") == 0.0 and parse_rate("1") == 1.0
    assert parse_kits("") is None and parse_kits("*") is None
    assert parse_kits(" A1B2C3D4 , B1B2C3D4 ") == frozenset({"A1B2C3D4", "B1B2C3D4"})
    for bad in ("1:2:3", "-1:2", "a:b"):
        with pytest.raises(ValueError):
            parse_range(bad)


def test_overrides_use_the_option_parsers() -> None:
    c = apply_overrides(
        SimConfig(),
        {
            "rate_5xx": 0.5,
            "run_duration_ms": "50:500",
            "slow_ms": [1, 2],
            "kits": ["A1B2C3D4"],
            "revoke_key": True,
            "rate_limit": 10,
            "webhook_delay_ms": 5,
        },
    )
    assert c.rate_5xx == 0.5 and c.run_duration_ms == (50, 500) and c.slow_ms == (1, 2)
    assert c.kits == frozenset({"A1B2C3D4"}) and c.revoke_key is True
    assert c.rate_limit == 10.0 and c.webhook_delay_ms == (5, 5)
    assert apply_overrides(c, {"kits": "*"}).kits is None
    assert apply_overrides(c, {"kits": ""}).kits is None
    assert apply_overrides(c, {"revoke_key": "false"}).revoke_key is False


@pytest.mark.parametrize(
    "overrides",
    [
        {"nonsense": 1},
        {"rate_5xx": 2},
        {"run_duration_ms": "9:1"},
        {"outage": "sideways"},
        {"revoke_key": "perhaps"},
        {"webhook_url": "http://x/y"},  # no secret configured
        {"seed": 3},  # not a runtime setting
        {"fail_rate": {"a": 1}},
    ],
)
def test_bad_overrides(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        apply_overrides(SimConfig(), overrides)


def test_settings_view_round_trips_and_hides_secrets() -> None:
    config = SimConfig(
        api_key="secret-key",
        webhook_url=("http://h/x",),
        webhook_secret="whsec",
        kits=frozenset({"B1B2C3D4", "A1B2C3D4"}),
    )
    view = settings_view(config)
    assert "secret-key" not in repr(view) and "whsec" not in repr(view)
    assert view["kits"] == "A1B2C3D4,B1B2C3D4"
    assert view["run_duration_ms"] == "200:2000"
    assert view["api_key_required"] is True
    replayable = {k: v for k, v in view.items() if k not in ("seed", "api_key_required")}
    replayable.pop("webhook_secret")
    assert apply_overrides(config, replayable) == config
