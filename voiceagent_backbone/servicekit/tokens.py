"""Opaque page tokens and cursors: versioned, base64url JSON, checked when read back."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


def encode(kind: str, fields: dict[str, Any]) -> str:
    raw = json.dumps({"k": kind, **fields}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(kind: str, token: str) -> dict[str, Any]:
    """The token's fields; ValueError when it is not a token of this kind."""
    if len(token) > 512:
        raise ValueError("token too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a valid token") from exc
    if not isinstance(fields, dict) or fields.pop("k", None) != kind:
        raise ValueError("not a valid token")
    # A forged token must not carry values the stores cannot take (a 100-digit number).
    for value in fields.values():
        if isinstance(value, bool) or not (
            (isinstance(value, int) and 0 <= value < 2**63)
            or (isinstance(value, str) and len(value) <= 512)
        ):
            raise ValueError("not a valid token")
    return fields
