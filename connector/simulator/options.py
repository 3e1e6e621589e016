"""The simulator's settings: command-line options, the `SimConfig` value and runtime overrides.

`add_arguments(parser)` declares every option, `config_from_args(args)` turns the parsed
namespace into a frozen `SimConfig`. `POST /_sim/faults` changes settings at run time through
`apply_overrides(config, {...})`, which takes the option names with underscores for dashes and
uses the same parsers, so a value means the same thing on the command line and in JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Range = tuple[int, int]

KIT_CODE_RE = re.compile(r"[A-Z0-9]{8}")
KIT_VERSION_RE = re.compile(r"kv_[A-Za-z0-9_]{1,60}")
OUTAGE_MODES = ("refuse", "503")
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Every setting of a simulator. Immutable: a change builds a new one (`apply_overrides`)."""

    seed: int = 0
    api_key: str | None = None
    kits: frozenset[str] | None = None  # None: any well-formed code is known
    kit_versions: frozenset[str] | None = None  # None: any well-formed version id is known
    run_duration_ms: Range = (200, 2000)
    fail_rate: float = 0.0
    cancel_rate: float = 0.0
    sync_wait_ms: int = 30_000
    retry_after: int = 1  # seconds; 0 = no Retry-After on 202 and non-terminal GETs
    retry_after_429: int = 1
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    slow_rate: float = 0.0
    slow_ms: Range = (1000, 1000)
    reset_rate: float = 0.0
    rate_limit: float = 0.0  # requests per second over all /v1 calls; 0 = off
    outage: str | None = None  # start with an outage: "refuse" | "503"
    outage_seconds: float = 10.0
    revoke_key: bool = False
    webhook_url: tuple[str, ...] = ()
    webhook_secret: str | None = None
    webhook_max_attempts: int = 8
    webhook_backoff_ms: int = 1000
    webhook_duplicate_rate: float = 0.0
    webhook_delay_ms: Range = (0, 0)
    webhook_thin_rate: float = 0.0
    webhook_drop_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.webhook_url and not self.webhook_secret:
            raise ValueError("--webhook-secret is required with --webhook-url")
        if self.fail_rate + self.cancel_rate > 1.0:
            raise ValueError("fail_rate + cancel_rate must not exceed 1")
        if self.outage is not None and self.outage not in OUTAGE_MODES:
            raise ValueError(f"outage must be one of {', '.join(OUTAGE_MODES)}")


# --- value parsers: each takes the text form and raises ValueError with a clear message -------


def parse_range(text: str) -> Range:
    """`"MIN:MAX"` (or a single `"N"`, meaning N:N) of non-negative integers, MIN <= MAX."""
    parts = text.strip().split(":")
    try:
        if len(parts) == 1:
            low = high = int(parts[0])
        elif len(parts) == 2:
            low, high = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"expected MIN:MAX, got {text!r}") from None
    if low < 0 or high < low:
        raise ValueError(f"expected 0 <= MIN <= MAX, got {text!r}")
    return (low, high)


def parse_rate(text: str) -> float:
    """A fraction in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a fraction between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def parse_non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise ValueError(f"expected a non-negative integer, got {text!r}")
    return value


def parse_positive_int(text: str) -> int:
    value = parse_non_negative_int(text)
    if value == 0:
        raise ValueError("expected a positive integer, got 0")
    return value


def parse_non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a non-negative number, got {text!r}") from None
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"expected a non-negative number, got {text!r}")
    return value


def parse_kits(text: str) -> frozenset[str] | None:
    """Comma-separated Kit codes; `""` or `"*"` means any well-formed code."""
    return _parse_id_list(text, KIT_CODE_RE, "Kit code (8 characters A-Z, 0-9)")


def parse_kit_versions(text: str) -> frozenset[str] | None:
    """Comma-separated Kit version ids; `""` or `"*"` means any well-formed id."""
    return _parse_id_list(text, KIT_VERSION_RE, "kit_version_id (kv_ + 1-60 of A-Z a-z 0-9 _)")


def _parse_id_list(text: str, pattern: re.Pattern[str], what: str) -> frozenset[str] | None:
    if text.strip() in ("", "*"):
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if not pattern.fullmatch(item):
            raise ValueError(f"not a well-formed {what}: {item!r}")
    return frozenset(items)


def parse_urls(text: str) -> tuple[str, ...]:
    urls = tuple(url.strip() for url in text.split(",") if url.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must start with http:// or https://, got {url!r}")
    return urls


def parse_outage(text: str) -> str | None:
    """`refuse`, `503`, or `""`/`none`/`off` for no outage."""
    value = text.strip().lower()
    if value in ("", "none", "off", "null"):
        return None
    if value not in OUTAGE_MODES:
        raise ValueError(f"outage must be one of refuse, 503 (or none), got {text!r}")
    return value


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _for_argparse(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


# --- the command line ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every simulator option on `parser` (also used by `semarize-connector simulate`)."""
    rng = _for_argparse(parse_range, "range")
    rate = _for_argparse(parse_rate, "rate")
    nonneg = _for_argparse(parse_non_negative_int, "integer")
    pos = _for_argparse(parse_positive_int, "integer")
    seconds = _for_argparse(parse_non_negative_float, "number")
    d = SimConfig()

    srv = parser.add_argument_group("server")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    srv.add_argument(
        "--port", type=nonneg, default=8090, help="port (default %(default)s; 0 = a free port)"
    )
    srv.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for every draw (faults, durations, outcomes, ids); default: random",
    )
    srv.add_argument(
        "--api-key",
        default=None,
        help="the only accepted bearer key (default: any well-formed key); "
        "also read from SEMARIZE_SIM_API_KEY",
    )

    kits = parser.add_argument_group("kits and runs")
    kits.add_argument(
        "--kits",
        type=_for_argparse(parse_kits, "kits"),
        default=None,
        help="known Kit codes, comma-separated (default: any well-formed 8-character code)",
    )
    kits.add_argument(
        "--kit-versions",
        type=_for_argparse(parse_kit_versions, "kit_versions"),
        default=None,
        help="known kit_version_ids, comma-separated (default: any well-formed kv_... id)",
    )
    kits.add_argument(
        "--run-duration-ms",
        type=rng,
        default=d.run_duration_ms,
        metavar="MIN:MAX",
        help="run duration range in ms (default 200:2000)",
    )
    kits.add_argument(
        "--fail-rate", type=rate, default=0.0, help="fraction of runs that fail (default 0)"
    )
    kits.add_argument(
        "--cancel-rate", type=rate, default=0.0, help="fraction of runs cancelled (default 0)"
    )
    kits.add_argument(
        "--sync-wait-ms",
        type=nonneg,
        default=d.sync_wait_ms,
        help="how long a mode=sync create waits before the 202 fallback (default %(default)s)",
    )
    kits.add_argument(
        "--retry-after",
        type=nonneg,
        default=d.retry_after,
        metavar="SECONDS",
        help="Retry-After on 202 and non-terminal GETs (default %(default)s; 0 = omit)",
    )

    flt = parser.add_argument_group("faults")
    flt.add_argument("--rate-429", type=rate, default=0.0, help="fraction answered 429")
    flt.add_argument(
        "--retry-after-429",
        type=nonneg,
        default=d.retry_after_429,
        metavar="SECONDS",
        help="Retry-After of an injected 429 (default %(default)s)",
    )
    flt.add_argument("--rate-5xx", type=rate, default=0.0, help="fraction answered 500/502/503")
    flt.add_argument("--slow-rate", type=rate, default=0.0, help="fraction of slow responses")
    flt.add_argument(
        "--slow-ms",
        type=rng,
        default=d.slow_ms,
        metavar="MIN:MAX",
        help="delay of a slow response in ms (default 1000)",
    )
    flt.add_argument(
        "--reset-rate",
        type=rate,
        default=0.0,
        help="fraction of connections dropped mid-response (POST: half after creating the run)",
    )
    flt.add_argument(
        "--rate-limit",
        type=seconds,
        default=0.0,
        metavar="RPS",
        help="hard limit over all /v1 requests, beyond it 429 (default 0 = off)",
    )
    flt.add_argument(
        "--outage",
        type=_for_argparse(parse_outage, "outage"),
        default=None,
        help="start with an outage: refuse (connections refused) or 503",
    )
    flt.add_argument(
        "--outage-seconds",
        type=seconds,
        default=d.outage_seconds,
        help="length of an outage (default %(default)s)",
    )
    flt.add_argument(
        "--revoke-key", action="store_true", help="answer 401 invalid_api_key to every key"
    )

    wh = parser.add_argument_group("webhooks")
    wh.add_argument(
        "--webhook-url",
        type=_for_argparse(parse_urls, "urls"),
        default=(),
        metavar="URL[,URL...]",
        help="deliver terminal run events here (round-robin across the list)",
    )
    wh.add_argument(
        "--webhook-secret",
        default=None,
        help="signing secret, required with --webhook-url; also read from "
        "SEMARIZE_SIM_WEBHOOK_SECRET",
    )
    wh.add_argument(
        "--webhook-max-attempts",
        type=pos,
        default=d.webhook_max_attempts,
        help="delivery attempts per event (default %(default)s)",
    )
    wh.add_argument(
        "--webhook-backoff-ms",
        type=nonneg,
        default=d.webhook_backoff_ms,
        help="first retry delay, doubled per attempt (default %(default)s)",
    )
    wh.add_argument(
        "--webhook-duplicate-rate", type=rate, default=0.0, help="fraction delivered twice"
    )
    wh.add_argument(
        "--webhook-delay-ms",
        type=rng,
        default=d.webhook_delay_ms,
        metavar="MIN:MAX",
        help="delay before a delivery in ms (reorders events; default 0:0)",
    )
    wh.add_argument(
        "--webhook-thin-rate", type=rate, default=0.0, help="fraction of events without output"
    )
    wh.add_argument(
        "--webhook-drop-rate", type=rate, default=0.0, help="fraction of events never delivered"
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build the `SimConfig` from parsed options. Raises ValueError on a bad combination."""
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    return SimConfig(
        seed=seed,
        api_key=args.api_key or os.environ.get("SEMARIZE_SIM_API_KEY") or None,
        kits=args.kits,
        kit_versions=args.kit_versions,
        run_duration_ms=args.run_duration_ms,
        fail_rate=args.fail_rate,
        cancel_rate=args.cancel_rate,
        sync_wait_ms=args.sync_wait_ms,
        retry_after=args.retry_after,
        retry_after_429=args.retry_after_429,
        rate_429=args.rate_429,
        rate_5xx=args.rate_5xx,
        slow_rate=args.slow_rate,
        slow_ms=args.slow_ms,
        reset_rate=args.reset_rate,
        rate_limit=args.rate_limit,
        outage=args.outage,
        outage_seconds=args.outage_seconds,
        revoke_key=args.revoke_key,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret or os.environ.get("SEMARIZE_SIM_WEBHOOK_SECRET"),
        webhook_max_attempts=args.webhook_max_attempts,
        webhook_backoff_ms=args.webhook_backoff_ms,
        webhook_duplicate_rate=args.webhook_duplicate_rate,
        webhook_delay_ms=args.webhook_delay_ms,
        webhook_thin_rate=args.webhook_thin_rate,
        webhook_drop_rate=args.webhook_drop_rate,
    )


# --- runtime overrides (POST /_sim/faults) --------------------------------------------------


def _text(value: object) -> str:
    """A JSON scalar as the text an option would get (lists become comma lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return ",".join(str(v) for v in value)
    raise ValueError(f"unsupported value {value!r}")


def _range_value(value: object) -> Range:
    if isinstance(value, list) and len(value) == 2:
        return parse_range(f"{_text(value[0])}:{_text(value[1])}")
    return parse_range(_text(value))


def _bool_value(value: object) -> bool:
    return value if isinstance(value, bool) else parse_bool(_text(value))


def _seconds_value(value: object) -> float:
    return parse_non_negative_float(_text(value))


def _secret_value(value: object) -> str | None:
    return _text(value) or None


OVERRIDES: Mapping[str, Callable[[object], Any]] = {
    "kits": lambda v: parse_kits(_text(v)),
    "kit_versions": lambda v: parse_kit_versions(_text(v)),
    "run_duration_ms": _range_value,
    "fail_rate": lambda v: parse_rate(_text(v)),
    "cancel_rate": lambda v: parse_rate(_text(v)),
    "sync_wait_ms": lambda v: parse_non_negative_int(_text(v)),
    "retry_after": lambda v: parse_non_negative_int(_text(v)),
    "retry_after_429": lambda v: parse_non_negative_int(_text(v)),
    "rate_429": lambda v: parse_rate(_text(v)),
    "rate_5xx": lambda v: parse_rate(_text(v)),
    "slow_rate": lambda v: parse_rate(_text(v)),
    "slow_ms": _range_value,
    "reset_rate": lambda v: parse_rate(_text(v)),
    "rate_limit": _seconds_value,
    "outage": lambda v: parse_outage(_text(v)),
    "outage_seconds": _seconds_value,
    "revoke_key": _bool_value,
    "webhook_url": lambda v: parse_urls(_text(v)),
    "webhook_secret": _secret_value,
    "webhook_max_attempts": lambda v: parse_positive_int(_text(v)),
    "webhook_backoff_ms": lambda v: parse_non_negative_int(_text(v)),
    "webhook_duplicate_rate": lambda v: parse_rate(_text(v)),
    "webhook_delay_ms": _range_value,
    "webhook_thin_rate": lambda v: parse_rate(_text(v)),
    "webhook_drop_rate": lambda v: parse_rate(_text(v)),
}


def apply_overrides(config: SimConfig, overrides: Mapping[str, object]) -> SimConfig:
    """A new config with `overrides` applied; ValueError names the first bad key or value."""
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        parse = OVERRIDES.get(key)
        if parse is None:
            raise ValueError(f"unknown setting {key!r}")
        try:
            changes[key] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return dataclasses.replace(config, **changes)


def _range_text(value: Range) -> str:
    return f"{value[0]}:{value[1]}"


def settings_view(config: SimConfig) -> dict[str, object]:
    """Every overridable setting as JSON, in the form `apply_overrides` accepts; no secrets."""
    view: dict[str, object] = {}
    for key in OVERRIDES:
        value = getattr(config, key)
        if key == "webhook_secret":
            value = "***" if value else None
        elif isinstance(value, frozenset):
            value = ",".join(sorted(value))
        elif value is None and key in ("kits", "kit_versions"):
            value = "*"
        elif isinstance(value, tuple) and key.endswith("_ms"):
            value = _range_text(value)
        elif isinstance(value, tuple):
            value = list(value)
        view[key] = value
    view["seed"] = config.seed
    view["api_key_required"] = config.api_key is not None
    return view
