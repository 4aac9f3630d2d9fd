"""livekit-server's webhooks (POST, JSON, signed with the API key): a fast hint that an
agent left a room. Only a hint: every decision is checked again through the server API, so
a forged webhook is refused by its signature and a replayed one changes nothing."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from aiohttp import web
from livekit import api

from voiceagent_backbone.recovery_svc import metrics
from voiceagent_backbone.recovery_svc.domain import RecoveryDomain

log = logging.getLogger(__name__)

PATH = "/livekit/webhook"
_AGENT_GONE = ("participant_left", "participant_connection_aborted")
_MAX_BODY = 1024 * 1024


class WebhookReceiver:
    def __init__(
        self, domain: RecoveryDomain, api_key: str, api_secret: str, max_age_s: float
    ) -> None:
        self.domain = domain
        self._receiver = api.WebhookReceiver(api.TokenVerifier(api_key, api_secret))
        self._max_age_s = max_age_s
        # Event ids seen within the accepted age, with when they were seen.
        self._seen: dict[str, float] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            event = self._receiver.receive(body, request.headers.get("Authorization", ""))
        except Exception:
            metrics.WEBHOOKS.labels("bad_signature").inc()
            log.warning("refused a webhook: bad or missing signature")
            return web.Response(status=401, text="bad signature\n")
        now = time.time()
        if not event.id:
            metrics.WEBHOOKS.labels("malformed").inc()
            return web.Response(status=400, text="webhook without an id\n")
        if abs(now - event.created_at) > self._max_age_s:
            metrics.WEBHOOKS.labels("stale").inc()
            return web.Response(status=400, text="webhook too old\n")
        self._forget_before(now - self._max_age_s)
        if event.id in self._seen:
            metrics.WEBHOOKS.labels("replayed").inc()
            return web.Response(text="already seen\n")
        self._seen[event.id] = now
        metrics.WEBHOOKS.labels("accepted").inc()
        if event.event in _AGENT_GONE and event.participant.kind == api.ParticipantInfo.AGENT:
            left_at = datetime.fromtimestamp(event.created_at, UTC)
            self.domain.agent_left(event.room.name, event.room.metadata, left_at)
        return web.Response(text="ok\n")

    def _forget_before(self, cutoff: float) -> None:
        # Insertion order is arrival order: the oldest come first.
        for event_id, seen_at in list(self._seen.items()):
            if seen_at >= cutoff:
                break
            del self._seen[event_id]


async def start_webhooks(receiver: WebhookReceiver, host: str, port: int) -> web.AppRunner:
    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_post(PATH, receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
