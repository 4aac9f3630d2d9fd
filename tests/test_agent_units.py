"""agent_svc's small parts: metadata layers, the history window, the breaker, the spool
file format, the offline responder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from livekit.agents import llm

from tests.support.agent import sample
from voiceagent_backbone.agent_svc.backend import BackendClient
from voiceagent_backbone.agent_svc.breaker import CircuitBreaker
from voiceagent_backbone.agent_svc.conversation import MEMORY_KEY, ConversationState
from voiceagent_backbone.agent_svc.history import HistoryWindow, Turn
from voiceagent_backbone.agent_svc.metadata import (
    conversation_id_of,
    merged_room_metadata,
    parse_participant_metadata,
    parse_room_metadata,
)
from voiceagent_backbone.agent_svc.providers import OFFLINE_LABEL, offline_reply
from voiceagent_backbone.agent_svc.spool import EventSpool, claim_orphans, encode_record
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.servicekit.ids import uuid7


def _invalid(kind: str) -> float:
    return sample("agent_metadata_invalid_total", kind=kind)


def test_room_metadata_merge_keeps_other_keys() -> None:
    cid = uuid7()
    merged = json.loads(merged_room_metadata('{"app": "x", "nested": {"a": 1}}', cid))
    assert merged == {"app": "x", "nested": {"a": 1}, "conversation_id": cid}
    assert conversation_id_of(merged) == cid


def test_malformed_room_metadata_is_counted_and_ignored() -> None:
    before = _invalid("room")
    assert parse_room_metadata("{not json") == {}
    assert parse_room_metadata("[1, 2]") == {}
    assert conversation_id_of({"conversation_id": "not-a-uuid"}) is None
    assert _invalid("room") == before + 3
    # Writing the id into malformed metadata replaces it with a valid object.
    assert json.loads(merged_room_metadata("{oops", "c"))["conversation_id"] == "c"


def test_participant_metadata_parsed_into_a_profile() -> None:
    raw = json.dumps(
        {
            "user_id": "u-1",
            "name": "Ana",
            "preferences": {"language": "de", "tone": "casual", "nested": {"x": 1}},
        }
    )
    profile = parse_participant_metadata(raw, "identity-1")
    assert profile.user_id == "u-1"
    assert profile.display_name == "Ana"
    assert profile.language == "de"
    assert profile.tone == "casual"
    assert "nested" not in profile.preferences  # only scalar preferences are kept
    top_level = parse_participant_metadata('{"language": "fr"}', "identity-2")
    assert top_level.user_id == "identity-2"
    assert top_level.language == "fr"


def test_malformed_participant_metadata_falls_back_to_identity() -> None:
    before = _invalid("participant")
    for raw in (
        "{bad",
        '"a string"',
        '{"user_id": 5}',
        '{"preferences": []}',
        json.dumps({"display_name": "x" * 500}),
    ):
        profile = parse_participant_metadata(raw, "identity-9")
        assert profile.user_id == "identity-9"
        assert profile.display_name == ""
    assert _invalid("participant") == before + 5
    assert parse_participant_metadata("", "identity-9").user_id == "identity-9"


def test_history_window_is_bounded_and_deduplicated() -> None:
    window = HistoryWindow(3)
    for i in range(5):
        assert window.add_text(f"id-{i}", "user", f"turn {i}")
    assert not window.add_text("id-4", "user", "turn 4")  # the hook and the handler both saw it
    assert not window.add_text("id-9", "user", "   ")
    assert [t.text for t in window] == ["turn 2", "turn 3", "turn 4"]
    assert window.add_text("id-0", "assistant", "an id that left the window may come again")
    restored = [Turn.from_proto(item) for item in window.to_proto()]
    assert [(t.item_id, t.role) for t in restored] == [(t.item_id, t.role) for t in window]


class _Writer:
    def __init__(self) -> None:
        self.events: list[pb.Event] = []

    def append_event(self, conversation_id: str, event: pb.Event) -> None:
        self.events.append(event)


def test_an_agent_text_excluded_from_memory_is_stored_flagged_once() -> None:
    writer = _Writer()
    backend = cast(BackendClient, SimpleNamespace(writer=writer))
    state = ConversationState("c-1", False, "room", "agent", backend, HistoryWindow(10))
    state.exclude_from_memory("Hello, Ana! How can I help you today?")
    state.exclude_from_memory("Goodbye, Ana, talk to you soon.")

    state.record_message("user", "Hello, Ana! How can I help you today?", "u-1", False)
    # What the session commits may differ in case and punctuation; an interrupted one
    # carries what was said before the interruption.
    state.record_message("assistant", "hello ana  how can I help you today", "a-1", False)
    state.record_message("assistant", "Hello, Ana! How can I help you today?", "a-2", False)
    state.record_message("assistant", "Goodbye, Ana,", "a-3", True)
    state.record_message("assistant", "Goodbye, Ana, talk to you soon.", "a-4", False)

    memory = [
        (e.payload.fields["item_id"].string_value, e.payload.fields.get(MEMORY_KEY))
        for e in writer.events
    ]
    # Every message is stored; only the first agent message with each text is flagged.
    assert [item for item, _ in memory] == ["u-1", "a-1", "a-2", "a-3", "a-4"]
    flagged = [item for item, flag in memory if flag is not None and not flag.bool_value]
    assert flagged == ["a-1", "a-3"]
    assert not state.not_memory


def test_breaker_opens_then_probes_once_then_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker("context", failures=2, open_s=5, clock=lambda: now[0])
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert not breaker.allow()
    now[0] = 5.1
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record_failure()
    assert not breaker.allow()  # open again for another pause
    now[0] = 10.3
    assert breaker.allow()
    breaker.record_success()
    assert breaker.allow()
    assert breaker.allow()


def test_spool_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path)
    for i in range(3):
        spool.append(encode_record("event", "c", f"m{i}".encode()))
    spool.ack(1)
    spool.write(b'{"op":"event","c":"c","m":"tor')  # killed in the middle of a write
    spool.close(remove=False)  # the lock goes with the process
    (orphan,) = claim_orphans(tmp_path)
    assert [r.message for r in orphan.pending_records] == [b"m1", b"m2"]
    orphan.close(remove=True)
    assert claim_orphans(tmp_path) == []


def test_a_live_process_spool_is_never_claimed(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path)
    spool.append(encode_record("event", "c", b"x"))
    assert claim_orphans(tmp_path) == []
    spool.close(remove=False)
    assert len(claim_orphans(tmp_path)) == 1


def test_offline_reply_quotes_enrichment_but_not_the_question_itself() -> None:
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Where does my sister live?")
    ctx.add_message(
        role="system",
        content="Context that may help with the user's last turn (most relevant first):\n"
        "- [1 May 2026] user: Where does my sister live?\n"
        "- [1 May 2026] user: My sister Maria lives in Porto.",
    )
    reply = offline_reply(ctx)
    assert reply.startswith(OFFLINE_LABEL)
    assert "My sister Maria lives in Porto." in reply
