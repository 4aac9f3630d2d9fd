"""The two LiveKit metadata layers: room metadata (the conversation) and participant metadata
(who the user is).

Both are JSON strings other parties write too, so parsing never raises: malformed input is
logged, counted and ignored, and unknown keys are kept when we write room metadata back.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from voiceagent_backbone.agent_svc import metrics
from voiceagent_backbone.servicekit.ids import is_uuid
from voiceagent_backbone.servicekit.wellknown import valid_key

log = logging.getLogger(__name__)

CONVERSATION_KEY = "conversation_id"
_MAX_TEXT = 200
_PREFERENCE_KEYS = ("language", "tone", "formality", "speaking_rate", "topics")


def parse_room_metadata(raw: str | None) -> dict[str, Any]:
    """The room's metadata as a dict; {} (counted) when it is not a JSON object."""
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        metrics.METADATA_INVALID.labels("room").inc()
        log.warning("room metadata is not a JSON object; ignored", extra={"length": len(raw)})
        return {}
    return parsed


def conversation_id_of(room_metadata: dict[str, Any]) -> str | None:
    value = room_metadata.get(CONVERSATION_KEY)
    if isinstance(value, str) and is_uuid(value):
        return value
    if value is not None:
        metrics.METADATA_INVALID.labels("room").inc()
        log.warning("room metadata has an invalid conversation_id; starting a new conversation")
    return None


def merged_room_metadata(current: str | None, conversation_id: str) -> str:
    """`current` with the conversation id set; every other key is kept as it was."""
    merged = parse_room_metadata(current)
    merged[CONVERSATION_KEY] = conversation_id
    return json.dumps(merged, separators=(",", ":"))


@dataclass(frozen=True)
class UserProfile:
    """What participant metadata says about the user; empty fields mean "not given"."""

    user_id: str = ""
    display_name: str = ""
    preferences: dict[str, Any] = field(default_factory=dict)

    @property
    def language(self) -> str:
        value = self.preferences.get("language")
        return value if isinstance(value, str) else ""

    @property
    def tone(self) -> str:
        value = self.preferences.get("tone")
        return value if isinstance(value, str) else ""


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    text: str = value.strip()
    if len(text) > _MAX_TEXT:
        raise ValueError(f"{name} is longer than {_MAX_TEXT} characters")
    return text


def parse_participant_metadata(raw: str | None, identity: str) -> UserProfile:
    """The user's profile from participant metadata.

    Accepted shape: {"user_id": str, "display_name" | "name": str,
    "preferences": {"language": "de", "tone": "casual", ...}}; top-level "language"/"tone"
    are read as preferences too. The participant identity is the user id when none is given.
    Malformed metadata is counted and ignored: the call goes on with the identity alone.
    """
    fallback = UserProfile(user_id=identity[:_MAX_TEXT])
    if not raw:
        return fallback
    try:
        parsed = json.loads(raw)
        if not isinstance(parsed, dict):
            raise ValueError("metadata is not a JSON object")
        user_id = _text(parsed.get("user_id"), "user_id") or identity[:_MAX_TEXT]
        display_name = _text(parsed.get("display_name", parsed.get("name")), "display_name")
        prefs_raw = parsed.get("preferences", {})
        if not isinstance(prefs_raw, dict):
            raise ValueError("preferences must be an object")
        preferences: dict[str, Any] = {}
        for key, value in prefs_raw.items():
            name = str(key)[:64]
            # What state_svc would refuse (servicekit.wellknown) is left out here, so one
            # odd preference never costs the whole profile write.
            if not valid_key(name):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            if isinstance(value, str | int | float | bool) and len(str(value)) <= _MAX_TEXT:
                preferences[name] = value
        for key in _PREFERENCE_KEYS:
            if key in parsed and key not in preferences:
                preferences[key] = _text(parsed[key], key)
        return UserProfile(user_id=user_id, display_name=display_name, preferences=preferences)
    except ValueError as exc:
        metrics.METADATA_INVALID.labels("participant").inc()
        log.warning(
            "participant metadata ignored",
            extra={"participant": identity, "reason": str(exc)},
        )
        return fallback
