"""docs/metrics.md lists every metric of connector/metrics.py with its type and labels."""

from __future__ import annotations

import re

from .conftest import REPO

PREFIX = "semarize_connector_"
ROW = re.compile(r"^\| `(?P<name>[a-z0-9_]+)` \| (?P<type>\w+) \| (?P<labels>[^|]*) \|", re.M)


def documented() -> dict[str, tuple[str, str]]:
    text = (REPO / "docs" / "metrics.md").read_text()
    rows = {m["name"]: (m["type"], m["labels"]) for m in ROW.finditer(text)}
    assert rows, "no metric table found"
    return rows


def exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Short name (as documented: counters with _total) -> (type, label names)."""
    from prometheus_client import Counter, Gauge, Histogram

    from connector import metrics

    found = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            name = value._name.removeprefix(PREFIX)
            kind = value._type
            if kind == "counter":
                name += "_total"
            found[name] = (kind, tuple(value._labelnames))
    return found


def test_every_metric_is_documented_and_nothing_else() -> None:
    assert set(documented()) == set(exported())


def test_types_and_labels_match() -> None:
    docs = documented()
    for name, (kind, labels) in exported().items():
        doc_type, doc_labels = docs[name]
        assert doc_type == kind, name
        named = set(re.findall(r"`([a-z_]+)`", doc_labels))
        for label in labels:
            assert label in named, f"{name}: label {label} not documented"
        if not labels:
            assert doc_labels.strip() == "—", name
