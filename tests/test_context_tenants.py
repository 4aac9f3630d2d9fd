"""context_svc keeps two tenants' conversations of one id apart: state_svc's conversation
ids are per tenant, and the feed names each change's tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from tests.support.context import ContextHandle, context_settings, indexed, running_context, say
from tests.support.state import StateHandle, running_state, state_settings
from voiceagent_backbone.api.state.v1 import state_pb2 as spb
from voiceagent_backbone.servicekit.ids import uuid7
from voiceagent_backbone.state_svc.domain import utcnow

A, B = "tenant-ctx-a", "tenant-ctx-b"
DOG = ("user", "My dog Biscuit is a golden retriever and he loves swimming in the lake.")
JOB = ("user", "I started a new job as a nurse at the children's hospital in March.")


@pytest.fixture
async def state(tmp_path: Path, jwt_key: str) -> AsyncIterator[StateHandle]:
    settings = state_settings("sqlite", tmp_path, jwt_key, None)
    async with running_state(settings, jwt_key) as handle:
        yield handle


@pytest.fixture
async def ctx(tmp_path: Path, jwt_key: str, state: StateHandle) -> AsyncIterator[ContextHandle]:
    settings = context_settings(tmp_path, jwt_key, state.port)
    async with running_context(settings, jwt_key) as handle:
        yield handle


async def test_two_tenants_conversations_of_one_id_stay_apart(
    ctx: ContextHandle, state: StateHandle
) -> None:
    cid = uuid7()
    for tenant, turn in ((A, DOG), (B, JOB)):
        # Without users, a conversation's turns are a memory of its own, named by its id.
        await state.stub().CreateConversation(
            spb.CreateConversationRequest(conversation_id=cid, room_name="room"),
            metadata=state.metadata(tenant),
        )
        await say(state, cid, [turn], tenant)
    await indexed(ctx, A, 1)
    await indexed(ctx, B, 1)

    async def remembered(tenant: str) -> list[str]:
        reply = await ctx.enrich("dog retriever job nurse", "", tenant, conversation_id=cid)
        return [item.text for item in reply.items]

    assert await remembered(A) == [DOG[1]]
    assert await remembered(B) == [JOB[1]]

    # Retention removes tenant A's conversation from the index, not B's of that id.
    await state.stub().SetRetentionPolicy(
        spb.SetRetentionPolicyRequest(retention=duration_pb2.Duration(seconds=60)),
        metadata=state.metadata(A),
    )
    assert await state.domain.sweep_retention(now=utcnow() + timedelta(seconds=120)) == 1
    await indexed(ctx, A, 0)
    assert await remembered(A) == []
    assert await remembered(B) == [JOB[1]]
