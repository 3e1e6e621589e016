"""The Idempotency-Key of a record's run (DESIGN.md, "Idempotency key").

`smzc1-` + hex SHA-256 over, joined by 0x00: the salt, the event id, the effective Kit
identifier, the SHA-256 of the canonical JSON of {kit_code, kit_version_id, input, type}, and
the redrive generation. The same event replayed gives the same key (so the provider returns
the original run); a changed transcript or Kit, or a deliberate redrive, gives a new one.
`mode` is deliberately not part of it: switching async/sync must not pay twice.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

KEY_PREFIX = "smzc1-"
KEY_LENGTH = len(KEY_PREFIX) + 64
MAX_KEY_LENGTH = 254  # the provider's limit


def canonical_request_digest(
    kit_code: str | None, kit_version_id: str | None, run_input: Any, run_type: str
) -> bytes:
    """SHA-256 of the canonical JSON (sorted keys, no white space) of what the run computes."""
    canonical = orjson.dumps(
        {
            "input": run_input,
            "kit_code": kit_code,
            "kit_version_id": kit_version_id,
            "type": run_type,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).digest()


def idempotency_key(
    *,
    salt: str,
    event_id: str,
    kit_code: str | None,
    kit_version_id: str | None,
    request_digest: bytes,
    redrive_generation: int,
) -> str:
    effective_kit = kit_version_id or kit_code or ""
    material = b"\x00".join(
        (
            salt.encode(),
            event_id.encode(),
            effective_kit.encode(),
            request_digest.hex().encode(),
            str(redrive_generation).encode(),
        )
    )
    return KEY_PREFIX + hashlib.sha256(material).hexdigest()
