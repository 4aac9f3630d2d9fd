"""Opaque page tokens and cursors: base64url JSON with an HMAC, checked when read back.

A token is `<payload>.<mac>`: the payload names its kind and carries the position; the
mac is HMAC-SHA256 over kind and payload with a key every replica of the service shares
(state_svc keeps it in its database). A client can hold a token and hand it back, never
make one: a forged or edited token fails the mac before any of its values is read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

# 128 bits of mac: forging by guessing is out of reach, and the token stays short.
_MAC_BYTES = 16
MAX_TOKEN_CHARS = 1024
KEY_BYTES = 32


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Makes and checks the tokens of one service with its shared key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"the page token key must be at least {KEY_BYTES} bytes")
        self._key = key

    def _mac(self, kind: str, payload: str) -> bytes:
        message = f"{kind}\n{payload}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, kind: str, fields: dict[str, Any]) -> str:
        payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._mac(kind, payload))}"

    def decode(self, kind: str, token: str, max_chars: int = MAX_TOKEN_CHARS) -> dict[str, Any]:
        """The token's fields; ValueError when this service did not make it for `kind`
        (or it is longer than `max_chars`: a kind whose positions are long raises it)."""
        if len(token) > max_chars:
            raise ValueError("token too long")
        payload, dot, mac = token.partition(".")
        try:
            if not dot or not hmac.compare_digest(_unb64(mac), self._mac(kind, payload)):
                raise ValueError("not a valid token")
            fields = json.loads(_unb64(payload))
        except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
            raise ValueError("not a valid token") from exc
        if not isinstance(fields, dict):
            raise ValueError("not a valid token")
        return fields


def legacy_fields(kind: str, token: str) -> dict[str, Any] | None:
    """The fields of an unsigned token from before tokens were signed, or None.

    Only for callers that may read everything the token could point at anyway (a
    platform feed reader resuming from a cursor it persisted before the upgrade).
    """
    if "." in token or len(token) > 512:
        return None
    try:
        fields = json.loads(_unb64(token))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(fields, dict) or fields.pop("k", None) != kind:
        return None
    for value in fields.values():
        # Numbers the stores can take (a forged 100-digit one must not reach them).
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            return None
    return fields
