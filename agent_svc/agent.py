"""StatefulAgent: the voice agent whose lifecycle hooks keep the four state layers current."""

from __future__ import annotations

import asyncio
import logging
import time

from livekit.agents import Agent, llm

from agent_svc import metrics
from agent_svc.config import AgentSettings
from agent_svc.conversation import ConversationState
from agent_svc.history import Turn
from agent_svc.metadata import UserProfile

log = logging.getLogger(__name__)

BASE_INSTRUCTIONS = (
    "You are a helpful voice assistant. Keep answers short and conversational: they are "
    "spoken aloud. When context from earlier conversations is given, use it naturally and "
    "do not mention where it came from."
)

# Greetings and farewells are spoken with session.say: fixed text, no LLM round trip, so
# the first words come as fast as TTS allows. Unknown languages fall back to English and
# the LLM is told which language to use for everything else.
_GREETINGS = {
    "en": (
        "Hello{name}! How can I help you today?",
        "Welcome back{name}! Shall we pick up where we left off?",
    ),
    "de": (
        "Hallo{name}! Wie kann ich helfen?",
        "Willkommen zurück{name}! Machen wir da weiter, wo wir aufgehört haben?",
    ),
    "fr": (
        "Bonjour{name} ! Comment puis-je vous aider ?",
        "Bon retour{name} ! On reprend là où on s'était arrêtés ?",
    ),
    "es": (
        "¡Hola{name}! ¿En qué puedo ayudarte?",
        "¡Bienvenido de nuevo{name}! ¿Seguimos donde lo dejamos?",
    ),
}
_FAREWELLS = {
    "en": "Goodbye{name}, talk to you soon.",
    "de": "Auf Wiedersehen{name}, bis bald.",
    "fr": "Au revoir{name}, à bientôt.",
    "es": "Adiós{name}, hasta pronto.",
}


def _lang(profile: UserProfile, default: str) -> str:
    return (profile.language or default).split("-")[0].lower()


def greeting(profile: UserProfile, resumed: bool, default_language: str = "en") -> str:
    fresh, again = _GREETINGS.get(_lang(profile, default_language), _GREETINGS["en"])
    name = f", {profile.display_name}" if profile.display_name else ""
    return (again if resumed else fresh).format(name=name)


def farewell(profile: UserProfile, default_language: str = "en") -> str:
    text = _FAREWELLS.get(_lang(profile, default_language), _FAREWELLS["en"])
    return text.format(name=f", {profile.display_name}" if profile.display_name else "")


def instructions_for(profile: UserProfile, resumed: bool, default_language: str = "en") -> str:
    parts = [BASE_INSTRUCTIONS]
    if profile.display_name:
        parts.append(f"The user's name is {profile.display_name}.")
    parts.append(f"Always answer in the language with code '{_lang(profile, default_language)}'.")
    if profile.tone:
        parts.append(f"Use a {profile.tone} tone.")
    if resumed:
        parts.append(
            "This conversation continues an earlier session with the same user; the earlier "
            "turns are in the chat history."
        )
    return " ".join(parts)


class StatefulAgent(Agent):
    def __init__(self, state: ConversationState, settings: AgentSettings) -> None:
        super().__init__(
            instructions=instructions_for(state.profile, state.resumed, settings.default_language)
        )
        self.state = state
        self._settings = settings

    # -- lifecycle hooks ------------------------------------------------------------

    async def on_enter(self) -> None:
        """Restore (on resume) the history into memory and the chat context, then greet."""
        state = self.state
        if state.resumed:
            await self._restore()
        self.session.say(
            greeting(state.profile, state.resumed, self._settings.default_language),
            allow_interruptions=True,
        )

    async def _restore(self) -> None:
        state = self.state
        snapshot, events = await asyncio.gather(
            state.backend.latest_snapshot(state.conversation_id),
            state.backend.history(state.conversation_id, self._settings.resume_turns),
        )
        if snapshot is not None:
            state.snapshot = snapshot
            state.history.extend(Turn.from_proto(item) for item in snapshot.history)
        if events:
            state.load_history(events)
        if events is None and snapshot is None:
            log.warning("resuming without history: state_svc did not answer in time")
        ctx = self.chat_ctx.copy()
        for turn in state.history:
            if turn.role in ("user", "assistant"):
                ctx.add_message(
                    role=turn.role,  # type: ignore[arg-type]
                    content=turn.text,
                    id=f"restored-{turn.item_id}",
                    created_at=turn.created_at,
                )
        await self.update_chat_ctx(ctx)
        log.info(
            "resumed conversation",
            extra={"conversation_id": state.conversation_id, "turns": len(state.history)},
        )

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        """Remember the turn, then add context from context_svc for this reply only.

        Enrichment is bounded by the budget and fails open: on timeout, error or an open
        breaker the reply goes ahead without it (counted in the agent's metrics)."""
        started = time.perf_counter()
        metrics.TURNS.inc()
        state = self.state
        text = new_message.text_content or ""
        state.history.add_text(new_message.id, "user", text)
        if text.strip():
            enriched = await state.backend.enrich(
                state.conversation_id, state.profile.user_id, text
            )
            if enriched is not None and enriched.context_block:
                # turn_ctx is this reply's copy of the chat context: nothing added here is
                # kept in the agent's chat context, so context never piles up turn after turn.
                # The block starts with its own header line saying what it is.
                turn_ctx.add_message(role="system", content=enriched.context_block)
        metrics.TURN_HOOK_SECONDS.observe(time.perf_counter() - started)

    async def on_exit(self) -> None:
        """Say goodbye if the user is still there, save the final snapshot, end the
        conversation. Writes are queued: nothing here waits on state_svc."""
        state = self.state
        if not state.user_left:
            try:
                handle = self.session.say(
                    farewell(state.profile, self._settings.default_language),
                    allow_interruptions=False,
                )
                await asyncio.wait_for(handle.wait_for_playout(), 5.0)
            except Exception:  # the session may already be unable to speak
                log.info("no farewell: the session could not speak any more", exc_info=True)
        state.save_snapshot(current_agent=type(self).__name__)
        state.end(state.end_reason or ("participant_left" if state.user_left else "session_closed"))

    async def update_profile(self, profile: UserProfile) -> None:
        """The participant's metadata changed: new profile, saved, and new instructions."""
        self.state.profile = profile
        self.state.save_profile()
        await self.update_instructions(
            instructions_for(profile, self.state.resumed, self._settings.default_language)
        )
