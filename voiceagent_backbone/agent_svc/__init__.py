"""Durable state for your own LiveKit agent: the public API.

    from voiceagent_backbone.agent_svc import StateLayer

See `StateLayer` (layer.py) for the ten lines, and examples/ for a whole agent. Importing
these names needs the `agent` extra (livekit-agents).

The names are imported on first use: `python -m voiceagent_backbone.agent_svc` must set up
Prometheus' multiprocess folder before any metric exists, and this file runs first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voiceagent_backbone.agent_svc.config import AgentSettings as AgentSettings
    from voiceagent_backbone.agent_svc.history import Turn as Turn
    from voiceagent_backbone.agent_svc.layer import Conversation as Conversation
    from voiceagent_backbone.agent_svc.layer import StateLayer as StateLayer
    from voiceagent_backbone.agent_svc.metadata import UserProfile as UserProfile
    from voiceagent_backbone.agent_svc.session import FileRoomMetadata as FileRoomMetadata
    from voiceagent_backbone.agent_svc.session import RoomMetadata as RoomMetadata

_MODULES = {
    "AgentSettings": "config",
    "Conversation": "layer",
    "FileRoomMetadata": "session",
    "RoomMetadata": "session",
    "StateLayer": "layer",
    "Turn": "history",
    "UserProfile": "metadata",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
