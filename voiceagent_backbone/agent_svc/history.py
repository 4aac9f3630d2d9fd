"""The in-memory layer: a bounded window of the conversation's recent turns.

It is what a snapshot saves and what a resumed session starts from; the hooks and handlers
keep it current. The full record lives in state_svc, so dropping old turns loses nothing.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from voiceagent_backbone.api.state.v1 import state_pb2

ROLE_TO_PROTO = {
    "user": state_pb2.ROLE_USER,
    "assistant": state_pb2.ROLE_AGENT,
    "system": state_pb2.ROLE_SYSTEM,
}
PROTO_TO_ROLE = {v: k for k, v in ROLE_TO_PROTO.items()}


@dataclass
class Turn:
    item_id: str
    role: str  # "user" | "assistant"
    text: str
    created_at: float
    interrupted: bool = False

    def to_proto(self) -> state_pb2.ChatItem:
        created = Timestamp()
        created.FromNanoseconds(int(self.created_at * 1e9))
        return state_pb2.ChatItem(
            item_id=self.item_id,
            role=ROLE_TO_PROTO.get(self.role, state_pb2.ROLE_SYSTEM),
            text=self.text,
            created_at=created,
            interrupted=self.interrupted,
        )

    @classmethod
    def from_proto(cls, item: state_pb2.ChatItem) -> Turn:
        return cls(
            item_id=item.item_id,
            role=PROTO_TO_ROLE.get(item.role, "system"),
            text=item.text,
            created_at=item.created_at.ToNanoseconds() / 1e9,
            interrupted=item.interrupted,
        )

    @classmethod
    def from_event(cls, event: state_pb2.Event) -> Turn:
        role = "user" if event.type == state_pb2.EVENT_TYPE_USER_MESSAGE else "assistant"
        created = event.client_time if event.HasField("client_time") else event.server_time
        # The chat item's id (what a snapshot keys the same turn by), else the event's.
        recorded = event.payload.fields.get("item_id")
        item_id = recorded.string_value if recorded is not None else ""
        return cls(
            item_id=item_id or event.event_id,
            role=role,
            text=event.text,
            created_at=created.ToNanoseconds() / 1e9,
            interrupted=bool(event.payload.fields["interrupted"].bool_value)
            if "interrupted" in event.payload.fields
            else False,
        )


class HistoryWindow:
    def __init__(self, size: int) -> None:
        self._turns: collections.deque[Turn] = collections.deque(maxlen=size)
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._turns)

    def __iter__(self) -> Iterator[Turn]:
        return iter(self._turns)

    def add(self, turn: Turn) -> bool:
        """Add a turn once (hooks and handlers may both see it); False if already there."""
        if not turn.text.strip() or turn.item_id in self._ids:
            return False
        if len(self._turns) == self._turns.maxlen:
            self._ids.discard(self._turns[0].item_id)
        self._turns.append(turn)
        self._ids.add(turn.item_id)
        return True

    def add_text(self, item_id: str, role: str, text: str, interrupted: bool = False) -> bool:
        return self.add(Turn(item_id, role, text, time.time(), interrupted))

    def extend(self, turns: Iterable[Turn]) -> None:
        for turn in sorted(turns, key=lambda t: t.created_at):
            self.add(turn)

    def last(self, role: str) -> Turn | None:
        for turn in reversed(self._turns):
            if turn.role == role:
                return turn
        return None

    def to_proto(self) -> list[state_pb2.ChatItem]:
        return [t.to_proto() for t in self._turns]
