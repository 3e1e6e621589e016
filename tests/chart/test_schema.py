"""values.schema.json (and the templates' cross-value checks) reject bad values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from .conftest import BAD_VALUES, CHART, helm_template

BAD_FILES = sorted(BAD_VALUES.glob("*.yaml"))


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <text>'"
    return first.removeprefix("# expect: ").strip()


def test_there_are_bad_values_files() -> None:
    assert len(BAD_FILES) >= 20


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_values_are_rejected(helm: Path, path: Path) -> None:
    proc = helm_template(helm, path)
    assert proc.returncode != 0, f"{path.name} was accepted"
    assert expectation(path) in proc.stderr, proc.stderr


def test_schema_is_self_contained_and_strict() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    text = json.dumps(schema)
    refs = [part.split('"')[0] for part in text.split('"$ref": "')[1:]]
    assert refs and all(ref.startswith("#/definitions/") for ref in refs), refs


def test_every_default_value_is_described_by_the_schema() -> None:
    """Each key of values.yaml is a property of the schema (which rejects unknown keys)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: object, spec: dict[str, object], where: str) -> None:
        if "$ref" in spec:
            ref = str(spec["$ref"]).removeprefix("#/definitions/")
            spec = schema["definitions"][ref]
        if not isinstance(node, dict) or spec.get("type") != "object":
            return
        properties = spec.get("properties", {})
        assert isinstance(properties, dict)
        for key, value in node.items():
            if key in properties:
                walk(value, properties[key], f"{where}.{key}")
            else:
                assert spec.get("additionalProperties") is not False, f"{where}.{key}"

    walk(values, schema, "")


def test_readme_documents_every_value() -> None:
    """Every leaf of values.yaml (or an object holding it) has a row in the chart README."""
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", readme, re.M))
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node: object, path: str) -> list[str]:
        if isinstance(node, dict) and node:
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{path}{k}.")]
        return [path.rstrip(".")]

    for leaf in leaves(values, ""):
        parts = leaf.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        assert prefixes & documented, f"{leaf} is not in helm/semarize-connector/README.md"
