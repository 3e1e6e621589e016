"""Which Kits exist, and the identity of each (code <-> version id), for runs and the schema.

A Kit is known when it is well-formed and, if the configuration lists Kits, listed. The
simulator has no catalogue of versions: a code's current version id and a version id's code
are derived from each other by a fixed hash, so both stay stable across restarts.
"""

from __future__ import annotations

import hashlib

from connector.simulator.bricks import CATALOGUE, OUTPUT_FIELDS
from connector.simulator.errors import ApiError
from connector.simulator.options import KIT_CODE_RE, KIT_VERSION_RE, SimConfig


def version_for_code(kit_code: str) -> str:
    return f"kv_{kit_code.lower()}_v1"


def code_for_version(kit_version_id: str) -> str:
    return hashlib.sha256(kit_version_id.encode()).hexdigest()[:8].upper()


def _known_code(config: SimConfig, kit_code: str) -> bool:
    if not KIT_CODE_RE.fullmatch(kit_code):
        return False
    return config.kits is None or kit_code in config.kits


def _known_version(config: SimConfig, kit_version_id: str) -> bool:
    if not KIT_VERSION_RE.fullmatch(kit_version_id):
        return False
    return config.kit_versions is None or kit_version_id in config.kit_versions


def resolve(config: SimConfig, kit_code: object, kit_version_id: object) -> tuple[str, str]:
    """`(kit_code, kit_version_id)` of the Kit a request names; `kit_version_id` wins.

    Raises ApiError: 400 when neither is a non-empty string, 404 when the Kit is unknown.
    """
    code = kit_code if isinstance(kit_code, str) and kit_code else None
    version = kit_version_id if isinstance(kit_version_id, str) and kit_version_id else None
    if version is not None:
        if not _known_version(config, version):
            raise ApiError(404, "kit_not_found", f"Kit version {version!r} was not found")
        if code is None or not KIT_CODE_RE.fullmatch(code):
            code = code_for_version(version)
        return code, version
    if code is not None:
        if not _known_code(config, code):
            raise ApiError(404, "kit_not_found", f"Kit {code!r} was not found")
        return code, version_for_code(code)
    raise ApiError(
        400,
        "kit_code_or_kit_version_id_required",
        "Provide kit_code or kit_version_id as a non-empty string",
    )


def schema(kit_code: str, kit_version_id: str) -> dict[str, object]:
    """The body of `GET /v1/kits/schema`."""
    return {
        "kit_code": kit_code,
        "kit_version_id": kit_version_id,
        "bricks": [{"key": b.key, "type": b.type, "description": b.description} for b in CATALOGUE],
        "output_fields": list(OUTPUT_FIELDS),
    }
