"""Enrichment that adds no wait to a turn.

LiveKit Agents starts a *preemptive* generation as soon as a final transcript is known,
before the end of the turn is decided, and keeps it only if `on_user_turn_completed` left
the chat context unchanged. Injecting context in that hook would therefore throw every
preemptive generation away. Instead:

- `TurnEnricher.heard` starts `Enrich` for the turn's text so far the moment a final
  transcript arrives (the session's `user_input_transcribed` event);
- `EnrichedLLM` wraps the session's LLM: each request looks up the enrichment for the text
  of its last user message (started then if it was not already), waits for it within the
  budget, and adds the context block to that request only. A preemptive and a regular
  generation take exactly the same path, and the context is always the one computed for
  the very transcript being answered.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, ClassVar

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from voiceagent_backbone.agent_svc import metrics
from voiceagent_backbone.agent_svc.backend import BackendClient
from voiceagent_backbone.agent_svc.conversation import ConversationState

log = logging.getLogger(__name__)

# Lookups kept per session: the current turn's prefixes and the one before.
_KEPT = 8


def _key(text: str) -> str:
    return " ".join(text.split())


class TurnEnricher:
    """Enrich calls for one session, keyed by the exact (whitespace-normalised) transcript."""

    def __init__(self, backend: BackendClient, state: ConversationState) -> None:
        self._backend = backend
        self._state = state
        self._lookups: collections.OrderedDict[str, asyncio.Task[str | None]] = (
            collections.OrderedDict()
        )
        self._heard = ""
        self.enabled = True

    def heard(self, transcript: str) -> None:
        """A final transcript: the turn's text so far is what LiveKit will answer (it joins
        a turn's final transcripts with spaces), so its enrichment starts now."""
        self._heard = f"{self._heard} {transcript}".strip()
        self.prefetch(self._heard)

    def turn_committed(self) -> None:
        """The user's message is in the chat context: the next final starts a new turn."""
        self._heard = ""

    def prefetch(self, text: str) -> None:
        self._lookup(text)

    def _lookup(self, text: str) -> asyncio.Task[str | None] | None:
        key = _key(text)
        if not self.enabled or not key:
            return None
        task = self._lookups.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key), name="TurnEnricher.fetch")
            self._lookups[key] = task
            while len(self._lookups) > _KEPT:
                # Dropped, not cancelled: a request may still be waiting for it, and the
                # call ends within the budget anyway.
                self._lookups.popitem(last=False)
        return task

    async def _fetch(self, text: str) -> str | None:
        state = self._state
        response = await self._backend.reader.enrich(
            state.conversation_id, state.profile.user_id, text
        )
        if response is None or not response.context_block:
            return None
        return response.context_block

    async def context_for(self, text: str) -> str | None:
        """The context block for this transcript: at most the rest of the budget away."""
        task = self._lookup(text)
        if task is None:
            return None
        started = time.perf_counter()
        try:
            # Shielded: a cancelled generation (a preemptive one that was superseded) must
            # not cancel the lookup the next generation for the same text will use.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception:  # enrich() fails open; anything else is a bug, not a lost reply
            log.exception("enrichment lookup failed; replying without context")
            return None
        finally:
            metrics.ENRICH_WAIT_SECONDS.observe(time.perf_counter() - started)


def with_context(chat_ctx: llm.ChatContext, block: str) -> llm.ChatContext:
    """A copy of `chat_ctx` with `block` as a system message right after the last user
    message (tool calls and their outputs that followed it stay after it)."""
    enriched = chat_ctx.copy()
    items = enriched.items
    last_user = max(
        (i for i, it in enumerate(items) if isinstance(it, llm.ChatMessage) and it.role == "user"),
        default=len(items) - 1,
    )
    items.insert(last_user + 1, llm.ChatMessage(role="system", content=[block]))
    return enriched


def last_user_text(chat_ctx: llm.ChatContext) -> str:
    for item in reversed(chat_ctx.items):
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            return item.text_content or ""
    return ""


class EnrichedLLM(llm.LLM[Any]):
    """An LLM that answers with the enrichment for the user's last message added.

    Everything else (model, tools, options, retries) is the wrapped LLM's: this only adds
    one system message to each request, for that request only."""

    def __init__(self, inner: llm.LLM[Any], enricher: TurnEnricher) -> None:
        super().__init__()
        self._inner = inner
        self._enricher = enricher

    @property
    def inner(self) -> llm.LLM[Any]:
        return self._inner

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _EnrichedStream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            options={
                "parallel_tool_calls": parallel_tool_calls,
                "tool_choice": tool_choice,
                "extra_kwargs": extra_kwargs,
            },
        )

    def prewarm(self, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._inner.prewarm(loop=loop)

    async def aclose(self) -> None:
        await self._inner.aclose()
        await super().aclose()


class _EnrichedStream(llm.LLMStream):
    _llm_request_span_name: ClassVar[str] = "enriched_llm"
    # The wrapped LLM's own stream has the request and attempt spans and does the retries.
    _llm_attempt_span_name: ClassVar[str | None] = None
    _genai_operation_name: ClassVar[str | None] = None

    def __init__(
        self,
        owner: EnrichedLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        options: dict[str, Any],
    ) -> None:
        # Retries happen once, in the wrapped stream, with the caller's options.
        super().__init__(
            owner,
            chat_ctx=chat_ctx,
            tools=tools,
            conn_options=APIConnectOptions(
                max_retry=0, retry_interval=0, timeout=conn_options.timeout
            ),
        )
        self._owner = owner
        self._inner_conn_options = conn_options
        self._options = options

    async def _run(self) -> None:
        owner = self._owner
        chat_ctx = self._chat_ctx
        block = await owner._enricher.context_for(last_user_text(chat_ctx))
        if block:
            chat_ctx = with_context(chat_ctx, block)
        async with owner.inner.chat(
            chat_ctx=chat_ctx,
            tools=self._tools,
            conn_options=self._inner_conn_options,
            **self._options,
        ) as stream:
            async for chunk in stream:
                self._event_ch.send_nowait(chunk)
