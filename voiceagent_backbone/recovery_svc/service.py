"""Wires recovery_svc together: livekit-server's API, state_svc, the domain, the Attend
servicer, the webhook listener and the reconcile loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from aiohttp import web

from voiceagent_backbone.api.recovery.v1 import recovery_pb2, recovery_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.recovery_svc.config import RecoverySettings
from voiceagent_backbone.recovery_svc.domain import RecoveryDomain
from voiceagent_backbone.recovery_svc.ledger import StateLedger
from voiceagent_backbone.recovery_svc.rooms import LiveKitRooms
from voiceagent_backbone.recovery_svc.servicer import RecoveryServicer
from voiceagent_backbone.recovery_svc.webhooks import WebhookReceiver, start_webhooks
from voiceagent_backbone.servicekit.auth import service_token
from voiceagent_backbone.servicekit.client import TokenProvider, create_channel
from voiceagent_backbone.servicekit.config import ServiceSettings
from voiceagent_backbone.servicekit.ports import listen_error
from voiceagent_backbone.servicekit.scopes import method_scopes
from voiceagent_backbone.servicekit.server import ServiceDefinition

log = logging.getLogger(__name__)

SERVICE = recovery_pb2.DESCRIPTOR.services_by_name["RecoveryService"]
# A job may announce itself for the tenant whose state it writes.
SCOPES = method_scopes(SERVICE, {"Attend": "state.write"})
STATE_SCOPES = ("state.read", "state.write")


def state_token(settings: RecoverySettings) -> TokenProvider | None:
    return service_token(
        settings,
        settings.state_token_file,
        tenant=settings.tenant,
        scopes=STATE_SCOPES,
        subject="recovery_svc",
    )


@contextlib.asynccontextmanager
async def build(settings: ServiceSettings) -> AsyncIterator[ServiceDefinition]:
    assert isinstance(settings, RecoverySettings)
    channel = create_channel(settings.state_target, token=state_token(settings))
    stub = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
    rooms = LiveKitRooms(
        settings.livekit_http_url(),
        settings.livekit_api_key,
        settings.livekit_api_secret.get_secret_value(),
    )
    domain = RecoveryDomain(settings, rooms, StateLedger(stub))
    servicer = RecoveryServicer(domain)
    webhooks: web.AppRunner | None = None
    closed = False

    async def stop() -> None:
        # Run by the server after its last call, and again on the way out (a start that
        # failed never ran the server's hooks): the clients close once.
        nonlocal closed
        if closed:
            return
        closed = True
        if webhooks is not None:
            await webhooks.cleanup()
        await rooms.aclose()
        await channel.close(None)

    if settings.webhook_port >= 0:
        receiver = WebhookReceiver(
            domain,
            settings.livekit_api_key,
            settings.livekit_api_secret.get_secret_value(),
            settings.webhook_max_age_s,
        )
        try:
            webhooks = await start_webhooks(receiver, settings.webhook_host, settings.webhook_port)
        except OSError as exc:
            await stop()
            raise listen_error(settings, "webhook_host", "webhook_port", exc) from exc
    reconciler = asyncio.create_task(domain.reconcile_forever(), name="reconcile")

    def register(server: grpc.aio.Server) -> None:
        recovery_pb2_grpc.add_RecoveryServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    async def stopping() -> None:
        reconciler.cancel()
        await domain.aclose()

    definition = ServiceDefinition(
        name="recovery_svc",
        service_names=[SERVICE.full_name],
        method_scopes=SCOPES,
        register=register,
        untraced_methods=[f"/{SERVICE.full_name}/Attend"],
    )
    definition.on_stopping.append(stopping)
    definition.on_stop.append(stop)
    try:
        yield definition
    finally:
        reconciler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reconciler
        await stop()
