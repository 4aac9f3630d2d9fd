"""Vectors computed once for the whole deployment, kept in state_svc.

Every replica follows the same feed and needs a vector for every turn and every passage of
a knowledge document. Before it embeds a
batch it claims the batch's keys in state_svc (ClaimEmbeddings): a key whose vector is
stored comes back with it; a key nobody holds becomes this replica's to compute and put
(PutEmbeddings); a key another replica holds is waited for, and taken over if that
replica's lease runs out (it died). So N replicas cost one embedding per turn, a new replica
loads the vectors instead of computing them, and all replicas hold bit-identical vectors,
hence give the same answers. The vectors are deleted with their conversations and documents.

If state_svc does not offer the RPCs, or the token lacks the scope `state.index`, this
replica embeds alone (logged once): an older state_svc must not stop the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.context_svc import metrics
from voiceagent_backbone.context_svc.embedding import Vectors

log = logging.getLogger(__name__)

# A dead replica's keys wait this long before another takes them over; a live one renews
# its claims every third of it while it embeds (256 turns take 2 s on two quiet cores, over
# 15 s on a loaded machine).
LEASE_MS = 15_000
_BATCH = 500
_POLL_S = 0.05
_NOT_OFFERED = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED)


@dataclass(frozen=True, slots=True)
class VectorKey:
    """One item's vector: a conversation's turn, or a knowledge document's passage."""

    tenant_id: str
    owner: int  # pb.EmbeddingOwner
    owner_id: str
    item_id: str

    @classmethod
    def turn(cls, tenant_id: str, conversation_id: str, event_id: str) -> VectorKey:
        return cls(tenant_id, pb.EMBEDDING_OWNER_CONVERSATION, conversation_id, event_id)

    @classmethod
    def passage(cls, tenant_id: str, document_id: str, embed_text: str) -> VectorKey:
        # By content: identical passages (boilerplate, a document ingested again) share one.
        digest = hashlib.sha256(embed_text.encode()).hexdigest()[:32]
        return cls(tenant_id, pb.EMBEDDING_OWNER_DOCUMENT, document_id, digest)

    def pb(self) -> pb.EmbeddingKey:
        return pb.EmbeddingKey(
            tenant_id=self.tenant_id,
            owner=pb.EmbeddingOwner.Name(self.owner),
            owner_id=self.owner_id,
            item_id=self.item_id,
        )


Embed = Callable[[Sequence[str]], Awaitable[Vectors]]


class SharedVectors:
    def __init__(
        self, stub: state_pb2_grpc.StateServiceStub, model: str, dim: int, holder: str
    ) -> None:
        self._stub = stub
        self._model = model
        self._dim = dim
        # The same after a restart of the replica, so that it takes its own claims back at
        # once instead of waiting for their lease to run out.
        self.holder = holder
        self.offered = True

    async def vectors(
        self, keys: Sequence[VectorKey], texts: Sequence[str], embed: Embed
    ) -> Vectors:
        """One vector per key: stored ones loaded, the ones this replica claims computed
        (with `embed`) and stored, the ones another replica holds waited for."""
        out = np.zeros((len(keys), self._dim), dtype=np.float32)
        if not self.offered:
            out[:] = await embed(texts)
            return out
        for start in range(0, len(keys), _BATCH):
            rows = list(range(start, min(start + _BATCH, len(keys))))
            try:
                await self._fill(out, rows, keys, texts, embed)
            except grpc.aio.AioRpcError as error:
                if error.code() not in _NOT_OFFERED:
                    raise  # the feed batch fails and is tried again
                log.warning(
                    "state_svc does not share embeddings with this replica (%s): embedding "
                    "alone; give context_svc's token the scope state.index",
                    error.code().name,
                )
                self.offered = False
                remaining = list(range(start, len(keys)))
                out[remaining] = await embed([texts[r] for r in remaining])
                return out
        return out

    async def put(self, keys: Sequence[VectorKey], vectors: Vectors) -> None:
        """Stores vectors this replica has without computing them (a message that reused
        its transcription's vector), so that other replicas do not compute them either."""
        if not self.offered or not keys:
            return
        for start in range(0, len(keys), _BATCH):
            await self._put(keys[start : start + _BATCH], vectors[start : start + _BATCH])

    async def _fill(
        self,
        out: Vectors,
        rows: list[int],
        keys: Sequence[VectorKey],
        texts: Sequence[str],
        embed: Embed,
    ) -> None:
        waiting = rows
        while waiting:
            reply = await self._stub.ClaimEmbeddings(
                pb.ClaimEmbeddingsRequest(
                    model=self._model,
                    keys=[keys[r].pb() for r in waiting],
                    holder=self.holder,
                    lease_ms=LEASE_MS,
                ),
                timeout=10,
            )
            owned: list[int] = []
            held: list[int] = []
            # Gone: its conversation or document was deleted (this replica is behind the
            # feed, which brings the deletion next). Embedded for this batch, never put.
            gone: list[int] = []
            for row, claim in zip(waiting, reply.claims, strict=True):
                if claim.vector:
                    out[row] = np.frombuffer(claim.vector, dtype="<f4")
                elif claim.gone:
                    gone.append(row)
                elif claim.owned:
                    owned.append(row)
                else:
                    held.append(row)
            metrics.SHARED_VECTORS.labels(outcome="loaded").inc(
                len(waiting) - len(owned) - len(held) - len(gone)
            )
            if owned or gone:
                async with self._renewing([keys[r] for r in owned]):
                    computed = await embed([texts[r] for r in owned + gone])
                out[owned + gone] = computed
                if owned:
                    await self._put([keys[r] for r in owned], computed[: len(owned)])
                metrics.SHARED_VECTORS.labels(outcome="computed").inc(len(owned) + len(gone))
            if held:
                metrics.SHARED_VECTORS.labels(outcome="waited").inc(len(held))
                await asyncio.sleep(_POLL_S)
            waiting = held

    @contextlib.asynccontextmanager
    async def _renewing(self, keys: Sequence[VectorKey]) -> AsyncIterator[None]:
        """Keeps this replica's claims on `keys` while it computes their vectors: a batch
        that takes longer than the lease (a busy machine) must not be taken over and
        computed twice. Claiming again as the same holder extends the lease."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(LEASE_MS / 3000)
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self._stub.ClaimEmbeddings(
                        pb.ClaimEmbeddingsRequest(
                            model=self._model,
                            keys=[k.pb() for k in keys],
                            holder=self.holder,
                            lease_ms=LEASE_MS,
                        ),
                        timeout=10,
                    )

        task = asyncio.create_task(renew()) if keys else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _put(self, keys: Sequence[VectorKey], vectors: Vectors) -> None:
        little = np.asarray(vectors, dtype="<f4")
        await self._stub.PutEmbeddings(
            pb.PutEmbeddingsRequest(
                model=self._model,
                holder=self.holder,
                embeddings=[
                    pb.Embedding(key=k.pb(), vector=v.tobytes())
                    for k, v in zip(keys, little, strict=True)
                ],
            ),
            timeout=10,
        )
