"""Measured figures of the integration tests (events, kills, lost, duplicates, polls per run,
429 share, ...), printed together at the end of the session, so every CI log carries them
without `-s`."""

from __future__ import annotations

from typing import Any

_FIGURES: list[str] = []


def report_figure(line: str) -> None:
    """Print one figure line now (seen with -s) and list it in the session summary."""
    line = line.strip()
    print(f"\n{line}")
    _FIGURES.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
