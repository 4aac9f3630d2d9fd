"""BackendClient: the agent's single gateway to state_svc and context_svc.

Two halves that behave differently and are used apart:

- `writer` (writer.py): the durable write path. Writes return in microseconds and are
  never lost: spooled, sent in order by a background sender, retried until acknowledged,
  replayed by the next process if this one dies.
- `reader` (reader.py): the reads. Each has a deadline and a circuit breaker and fails
  open: None, and the call goes on.
"""

from __future__ import annotations

from pathlib import Path

from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.reader import FailOpenReader
from voiceagent_backbone.agent_svc.writer import DurableWriter
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit.auth import RenewingToken, TokenFile
from voiceagent_backbone.servicekit.client import TokenProvider, create_channel

STATE_SCOPES = ("state.read", "state.write")
CONTEXT_SCOPES = ("context.read",)


def agent_token(settings: AgentSettings, scopes: tuple[str, ...]) -> TokenProvider | None:
    """The agent's bearer token: from its token file, or minted from the shared HS256 key
    (one machine); none when the services run without authentication."""
    if settings.auth_token_file is not None:
        return TokenFile(settings.auth_token_file)
    key = settings.jwt_key()
    if key is None:
        return None
    return RenewingToken(
        key,
        tenant=settings.tenant,
        scopes=scopes,
        subject=f"agent:{settings.name}",
        issuer=settings.auth_jwt_issuer,
        audience=settings.auth_jwt_audience,
    )


class BackendClient:
    def __init__(self, settings: AgentSettings, spool_dir: Path | None = None) -> None:
        self.settings = settings
        self._state_channel = create_channel(
            settings.state_target, token=agent_token(settings, STATE_SCOPES)
        )
        self._context_channel = create_channel(
            settings.context_target,
            token=agent_token(settings, CONTEXT_SCOPES),
            # The turn path has no time for retries: one attempt within the budget.
            retry=False,
        )
        state = state_pb2_grpc.StateServiceStub(self._state_channel)  # type: ignore[no-untyped-call]
        context = context_pb2_grpc.ContextServiceStub(self._context_channel)  # type: ignore[no-untyped-call]
        self.writer = DurableWriter(settings, state, spool_dir or settings.spool_dir)
        self.reader = FailOpenReader(settings, state, context)

    async def start(self) -> None:
        """Open this process's spool, claim spools of dead processes, start the sender."""
        await self.writer.start()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every write so far is acknowledged; False on timeout."""
        return await self.writer.flush(timeout_s)

    async def aclose(self, timeout_s: float | None = None) -> bool:
        """Flush (bounded), stop the sender, close the channels. Unsent writes stay in the
        spool file for the next process."""
        flushed = await self.writer.aclose(timeout_s)
        await self._state_channel.close(None)
        await self._context_channel.close(None)
        return flushed
