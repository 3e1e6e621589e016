"""The Dockerfile, read (no Docker engine here): multi-stage, slim, non-root, no build tools in
the final image, `semarize-connector run` as entrypoint, and the same UID as the chart."""

from __future__ import annotations

import json
import re

import yaml

from .conftest import CHART, REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_multi_stage_on_a_slim_python_base() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    args = dict(
        a.split("=", 1) for kind, a in instructions() if kind == "ARG" and "=" in a
    )  # global ARGs before the first FROM
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.1[1-9][.\d]*-slim(-\w+)?", image), image


def test_final_stage_is_non_root_without_build_tools() -> None:
    final = stages()[-1]
    users = [a for kind, a in final if kind == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    runs = " ".join(a for kind, a in final if kind == "RUN")
    for tool in ("gcc", "build-essential", "pip install", "apt-get install", "make "):
        assert tool not in runs, tool
    copies = [a for kind, a in final if kind == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), copies


def test_entrypoint_runs_the_connector() -> None:
    final = dict(stages()[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["semarize-connector"]
    assert json.loads(final["CMD"])[0] == "run"


def test_the_chart_runs_as_the_image_user() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
    assert values["podSecurityContext"]["runAsGroup"] == 10001


def test_dockerignore_lets_in_only_the_sources() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "connector"}
    for kind, args in instructions():
        if kind == "COPY" and not args.startswith("--from="):
            for source in args.split()[:-1]:
                assert source.rstrip("*") in allowed, source
