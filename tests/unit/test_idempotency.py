"""The Idempotency-Key (DESIGN.md, "Idempotency key")."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from connector.config import InputMapping
from connector.idempotency import (
    KEY_LENGTH,
    KEY_PREFIX,
    MAX_KEY_LENGTH,
    canonical_request_digest,
    idempotency_key,
)
from connector.records import REDRIVE_GENERATION_HEADER, Decoder, RunRequest, SourceRecord

KEY_RE = re.compile(r"^smzc1-[0-9a-f]{64}$")


def decoder(**overrides: Any) -> Decoder:
    options: dict[str, Any] = {
        "mapping": InputMapping(),
        "kit_code": "A1B2C3D4",
        "kit_version_id": None,
        "run_type": "api",
        "mode": "async",
        "salt": "",
        "max_bytes": 65536,
    }
    options.update(overrides)
    return Decoder(**options)


def key_of(value: bytes, *, headers: Any = None, **overrides: Any) -> str:
    source = SourceRecord("t", 0, 0, None, b"key", value, headers)
    request = decoder(**overrides).decode(source)
    assert isinstance(request, RunRequest), request
    return request.idempotency_key


def expected_key(
    *,
    salt: str,
    event_id: str,
    kit_code: str | None,
    kit_version_id: str | None,
    run_input: Any,
    run_type: str,
    generation: int,
) -> str:
    """DESIGN.md's definition, written out independently of connector.idempotency.

    The canonical JSON has sorted keys and no white space; the inner SHA-256 enters the key
    as lowercase hex; the effective Kit is the version when pinned (it overrides the code,
    semarize-api.md section 2), else the code.
    """
    canonical = json.dumps(
        {
            "kit_code": kit_code,
            "kit_version_id": kit_version_id,
            "input": run_input,
            "type": run_type,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    inner = hashlib.sha256(canonical).hexdigest()
    effective_kit = kit_version_id if kit_version_id else (kit_code or "")
    fields = [salt, event_id, effective_kit, inner, str(generation)]
    material = b"\x00".join(f.encode("utf-8") for f in fields)
    return "smzc1-" + hashlib.sha256(material).hexdigest()


def test_key_matches_the_design_definition() -> None:
    run_input = {"transcript": "Rep: Hi — ça va?", "account_id": "acc_1", "n": [1, 2.5, None]}
    value = json.dumps(
        {
            "event_id": "call-123",
            "input": {k: run_input[k] for k in ("account_id", "n")},
            "transcript": run_input["transcript"],
        }
    ).encode()
    key = key_of(
        value,
        headers=[(REDRIVE_GENERATION_HEADER, b"3")],
        salt="pepper",
        kit_code="A1B2C3D4",
        kit_version_id="kv_42",
    )
    assert key == expected_key(
        salt="pepper",
        event_id="call-123",
        kit_code="A1B2C3D4",
        kit_version_id="kv_42",
        run_input=run_input,
        run_type="api",
        generation=3,
    )


def test_key_matches_the_design_definition_with_a_kit_code_only() -> None:
    direct = idempotency_key(
        salt="",
        event_id="e1",
        kit_code="A1B2C3D4",
        kit_version_id=None,
        request_digest=canonical_request_digest("A1B2C3D4", None, {"transcript": "x"}, "sandbox"),
        redrive_generation=0,
    )
    assert direct == expected_key(
        salt="",
        event_id="e1",
        kit_code="A1B2C3D4",
        kit_version_id=None,
        run_input={"transcript": "x"},
        run_type="sandbox",
        generation=0,
    )


def test_key_is_70_characters_with_the_prefix() -> None:
    key = key_of(b'{"transcript": "hi"}')
    assert KEY_PREFIX == "smzc1-"
    assert len(key) == 70 == KEY_LENGTH
    assert KEY_RE.match(key)
    assert KEY_LENGTH <= MAX_KEY_LENGTH


def test_key_length_does_not_depend_on_input_size() -> None:
    long_key = key_of(
        json.dumps({"event_id": "e" * 1024, "transcript": "word " * 5000}).encode(),
        salt="s" * 500,
    )
    assert len(long_key) == 70
    assert KEY_RE.match(long_key)


def test_same_event_replayed_gives_the_same_key() -> None:
    value = b'{"event_id": "e1", "transcript": "hi", "metadata": {"m": 1}}'
    assert key_of(value) == key_of(value)
    assert key_of(value) == key_of(value, salt="")


def test_key_is_stable_across_key_order_and_white_space_of_the_input_json() -> None:
    a = b'{"event_id":"e1","input":{"a":1,"b":{"c":2,"d":[{"x":1,"y":2}]}},"transcript":"hi"}'
    b = (
        b'{\n  "transcript": "hi",\n  "input": {"b": {"d": [{"y": 2, "x": 1}], "c": 2},'
        b' "a": 1},\n  "event_id": "e1"\n}'
    )
    assert key_of(a) == key_of(b)


def test_canonical_digest_ignores_dict_insertion_order() -> None:
    one = canonical_request_digest("K", None, {"a": 1, "b": {"x": 1, "y": 2}}, "api")
    two = canonical_request_digest("K", None, {"b": {"y": 2, "x": 1}, "a": 1}, "api")
    assert one == two
    assert len(one) == 32


def test_metadata_and_unrelated_fields_do_not_change_the_key() -> None:
    base = key_of(b'{"event_id": "e1", "transcript": "hi"}')
    assert key_of(b'{"event_id": "e1", "transcript": "hi", "metadata": {"m": 2}}') == base
    assert key_of(b'{"event_id": "e1", "transcript": "hi", "extra": true}') == base


def test_key_changes_with_the_transcript() -> None:
    assert key_of(b'{"event_id": "e1", "transcript": "hi"}') != key_of(
        b'{"event_id": "e1", "transcript": "hi!"}'
    )


def test_key_changes_with_context_fields_of_the_input() -> None:
    assert key_of(b'{"event_id": "e1", "input": {"transcript": "hi", "stage": "a"}}') != key_of(
        b'{"event_id": "e1", "input": {"transcript": "hi", "stage": "b"}}'
    )


def test_key_changes_with_the_event_id() -> None:
    assert key_of(b'{"event_id": "e1", "transcript": "hi"}') != key_of(
        b'{"event_id": "e2", "transcript": "hi"}'
    )


def test_key_changes_with_the_kit() -> None:
    value = b'{"event_id": "e1", "transcript": "hi"}'
    by_code = key_of(value, kit_code="A1B2C3D4")
    assert key_of(value, kit_code="Z9Y8X7W6") != by_code
    assert key_of(value, kit_code="A1B2C3D4", kit_version_id="kv_1") != by_code
    assert key_of(value, kit_code="A1B2C3D4", kit_version_id="kv_2") != key_of(
        value, kit_code="A1B2C3D4", kit_version_id="kv_1"
    )


def test_key_changes_with_the_run_type() -> None:
    value = b'{"event_id": "e1", "transcript": "hi"}'
    assert key_of(value, run_type="api") != key_of(value, run_type="sandbox")


def test_key_changes_with_the_salt() -> None:
    value = b'{"event_id": "e1", "transcript": "hi"}'
    assert key_of(value, salt="") != key_of(value, salt="tenant-a")
    assert key_of(value, salt="tenant-a") != key_of(value, salt="tenant-b")


def test_key_changes_with_the_redrive_generation() -> None:
    value = b'{"event_id": "e1", "transcript": "hi"}'
    keys = {key_of(value, headers=[(REDRIVE_GENERATION_HEADER, str(g).encode())]) for g in range(5)}
    assert len(keys) == 5
    assert key_of(value) in keys  # no header is generation 0


def test_key_does_not_change_with_the_mode() -> None:
    value = b'{"event_id": "e1", "transcript": "hi"}'
    source = SourceRecord("t", 0, 0, None, None, value, None)
    as_async = decoder(mode="async").decode(source)
    as_sync = decoder(mode="sync").decode(source)
    assert isinstance(as_async, RunRequest) and isinstance(as_sync, RunRequest)
    assert as_async.body != as_sync.body  # the mode is sent...
    assert as_async.idempotency_key == as_sync.idempotency_key  # ...but not part of the key


def test_fields_are_separated() -> None:
    """Moving a character from one field to the next must give another key."""
    digest = canonical_request_digest("K", None, {"transcript": "x"}, "api")
    common = {"kit_code": "K", "kit_version_id": None, "request_digest": digest}
    one = idempotency_key(salt="ab", event_id="c", redrive_generation=0, **common)
    two = idempotency_key(salt="a", event_id="bc", redrive_generation=0, **common)
    assert one != two
