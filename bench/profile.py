"""Summaries of a py-spy raw (collapsed-stack) profile: where the connector's CPU goes.

Each line of the raw format is ``thread (TID): NAME;frame;frame;... COUNT`` with frames
``function (package/file.py:line)``. Samples are of active threads only (py-spy leaves idle
ones out), so shares are of the CPU the connector's Python threads used.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")

# Leaf frames grouped by what the time is spent on (first match wins).
AREAS: tuple[tuple[str, str], ...] = (
    ("connector/semarize/", "connector: API client"),
    ("connector/simulator/", "connector: simulator (unexpected)"),
    ("connector/", "connector: own code"),
    ("aiohttp/", "aiohttp (HTTP client and ops server)"),
    ("yarl/", "yarl / multidict (URLs, headers)"),
    ("multidict/", "yarl / multidict (URLs, headers)"),
    ("asyncio/", "asyncio event loop"),
    ("selectors.py", "asyncio event loop"),
    ("logging/", "logging"),
    ("json/", "JSON (stdlib)"),
    ("prometheus_client/", "prometheus_client (metrics)"),
    ("confluent_kafka/", "confluent_kafka (Python side)"),
    ("threading.py", "threads (locks, events)"),
    ("concurrent/", "threads (locks, events)"),
    ("queue.py", "threads (locks, events)"),
    ("ssl.py", "socket / ssl"),
    ("socket.py", "socket / ssl"),
)


def area_of(file: str) -> str:
    for prefix, area in AREAS:
        if prefix in file:
            return area
    return "other: " + file.split("/")[0]


@dataclass
class Profile:
    total: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    areas: Counter[str] = field(default_factory=Counter)
    threads: Counter[str] = field(default_factory=Counter)
    connector_owner: Counter[str] = field(default_factory=Counter)


def read_text(path: Path) -> str:
    """A raw profile, plain or gzip-compressed (``.gz``)."""
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode()
    return path.read_text()


def compress(path: Path) -> Path:
    """Replace ``path`` by ``path.gz`` (the raw stacks compress about 15:1)."""
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes(), mtime=0))
    path.unlink()
    return target


def parse(path: Path) -> Profile:
    prof = Profile()
    for line in read_text(path).splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        head, _, frames_text = stack.partition(";")
        thread = head.split(": ", 1)[1] if ": " in head else "(unnamed thread)"
        thread = re.sub(r"-\d+", "-N", thread)
        frames = frames_text.split(";") if frames_text else []
        prof.total += count
        prof.threads[thread] += count
        if not frames:
            prof.areas["(no Python frame)"] += count
            continue
        parsed = [_FRAME.match(f) for f in frames]
        names = [
            f"{m.group('func')} ({m.group('file')})" if m else f
            for m, f in zip(parsed, frames, strict=True)
        ]
        leaf = parsed[-1]
        prof.self_time[names[-1]] += count
        prof.areas[area_of(leaf.group("file")) if leaf else "other"] += count
        for name in set(names):
            prof.inclusive[name] += count
        owner = next(
            (
                names[i]
                for i in range(len(frames) - 1, -1, -1)
                if parsed[i] and parsed[i].group("file").startswith("connector/")
            ),
            "(no connector frame: " + thread + ")",
        )
        if owner.startswith("main (connector/cli.py)"):
            owner = "(the event loop itself: scheduling, I/O callbacks, the ops server)"
        prof.connector_owner[owner] += count
    return prof


def _rows(counter: Counter[str], total: int, limit: int) -> list[str]:
    return [
        f"| {100 * count / total:5.1f} % | `{name}` |" for name, count in counter.most_common(limit)
    ]


def summary_markdown(prof: Profile, title: str, limit: int = 12) -> str:
    """Tables: by area, by innermost connector function, by function (self), by thread."""
    if prof.total == 0:
        return f"### {title}\n\nNo samples were recorded.\n"
    parts = [f"### {title}", "", f"{prof.total:,} samples of active Python threads.", ""]
    parts += ["Leaf frames by area:", "", "| share | area |", "|---:|---|"]
    parts += _rows(prof.areas, prof.total, limit)
    parts += [
        "",
        "Samples charged to the innermost connector function on the stack (what connector "
        "code the time is spent for):",
        "",
        "| share | function |",
        "|---:|---|",
    ]
    parts += _rows(prof.connector_owner, prof.total, limit)
    parts += ["", "Hottest functions (self time):", "", "| share | function |", "|---:|---|"]
    parts += _rows(prof.self_time, prof.total, limit)
    parts += ["", "By thread:", "", "| share | thread |", "|---:|---|"]
    parts += _rows(prof.threads, prof.total, 6)
    return "\n".join(parts) + "\n"


def dominant(prof: Profile) -> str:
    """One sentence: the biggest areas and connector functions."""
    if prof.total == 0:
        return "no samples"
    areas = ", ".join(
        f"{name} {100 * count / prof.total:.0f} %" for name, count in prof.areas.most_common(3)
    )
    owners = ", ".join(
        f"`{name.split(' (')[0]}` {100 * count / prof.total:.0f} %"
        for name, count in prof.connector_owner.most_common(3)
    )
    return f"by area: {areas}; by connector function: {owners}"
