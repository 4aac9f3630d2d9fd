"""The project's own agent: instructions, greetings and farewells in four languages."""

from __future__ import annotations

import asyncio
import logging

from livekit.agents import Agent

from voiceagent_backbone.agent_svc.layer import Conversation
from voiceagent_backbone.agent_svc.metadata import UserProfile

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


class Assistant(Agent):
    """The project's own agent (`python -m voiceagent_backbone.agent_svc`, the terminal
    chat): a plain LiveKit Agent on the state layer, like yours would be. Its instructions
    follow the user's profile; it greets and says goodbye in the user's language."""

    def __init__(self, conversation: Conversation, default_language: str = "en") -> None:
        super().__init__(
            instructions=instructions_for(
                conversation.profile, conversation.resumed, default_language
            )
        )
        self._conversation = conversation
        self._default_language = default_language
        conversation.on_profile_changed(self._follow_profile)

    async def _follow_profile(self, profile: UserProfile) -> None:
        await self.update_instructions(
            instructions_for(profile, self._conversation.resumed, self._default_language)
        )

    async def on_enter(self) -> None:
        conversation = self._conversation
        text = greeting(conversation.profile, conversation.resumed, self._default_language)
        # Said to everyone: stored, but not something to remember about this user.
        conversation.exclude_from_memory(text)
        self.session.say(text, allow_interruptions=True)

    async def on_exit(self) -> None:
        """Say goodbye when the user is still there (the session is closing)."""
        if self._conversation.user_left:
            return
        text = farewell(self._conversation.profile, self._default_language)
        self._conversation.exclude_from_memory(text)
        try:
            handle = self.session.say(text, allow_interruptions=False)
            await asyncio.wait_for(handle.wait_for_playout(), 5.0)
        except Exception:  # the session may already be unable to speak
            log.info("no farewell: the session could not speak any more", exc_info=True)
