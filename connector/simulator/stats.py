"""Request counters for `GET /_sim/stats`: by route template and HTTP status."""

from __future__ import annotations


class RequestCounts:
    """Counts of answered requests keyed by `(route, status)`; cheap to bump on the hot path."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int | str], int] = {}

    def count(self, route: str, status: int | str) -> None:
        key = (route, status)
        self._counts[key] = self._counts.get(key, 0) + 1

    def clear(self) -> None:
        self._counts.clear()

    def view(self) -> dict[str, dict[str, int]]:
        """`{"POST /v1/runs": {"202": n, "429": m}, ...}` with statuses as strings."""
        out: dict[str, dict[str, int]] = {}
        for (route, status), n in sorted(self._counts.items(), key=lambda kv: str(kv[0])):
            out.setdefault(route, {})[str(status)] = n
        return out
