"""Knowledge documents and facts, kept in state_svc: context_svc's system of record.

context_svc keeps only an index of them (a cache); every write goes to state_svc first, which
announces it on its feed, and every replica then fetches the current version. These are
platform calls (scope state.knowledge) naming the caller's tenant.

state_svc's answers are mapped to the errors a context_svc caller understands: a bad page
token or a limit is INVALID_ARGUMENT naming the field, an unreachable state_svc UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.context_svc import wire
from voiceagent_backbone.context_svc.model import NewDocument, NewFact, StoredDocument, StoredFact
from voiceagent_backbone.servicekit.errors import DomainError, InvalidArgument, Unavailable

TIMEOUT_S = 10.0


def _mapped(error: grpc.aio.AioRpcError, field: str) -> DomainError:
    """What a caller of context_svc is told when state_svc refused or failed a call."""
    code, details = error.code(), error.details() or ""
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return InvalidArgument.single(field, details)
    return Unavailable(f"state_svc, which keeps knowledge and facts, failed: {code.name} {details}")


class KnowledgeRecords:
    def __init__(self, stub: state_pb2_grpc.StateServiceStub) -> None:
        self._stub = stub

    async def _call(self, method: str, request: Message, field: str) -> Any:
        """state_svc's answer to `request` (None for NOT_FOUND); its refusal or failure
        as a context_svc error naming `field`."""
        try:
            return await getattr(self._stub, method)(request, timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _mapped(error, field) from error

    async def put_document(self, tenant_id: str, new: NewDocument) -> StoredDocument:
        request = pb.PutDocumentRequest(tenant_id=tenant_id, document=wire.state_document_pb(new))
        reply = await self._call("PutDocument", request, "document")
        # The text is not echoed back: the caller's is the stored one.
        stored = wire.stored_document(tenant_id, reply.document)
        return StoredDocument(
            tenant_id, new.document_id, new.title, new.text, new.metadata, stored.stored_at_us
        )

    async def get_document(self, tenant_id: str, document_id: str) -> StoredDocument | None:
        request = pb.GetDocumentRequest(tenant_id=tenant_id, document_id=document_id)
        reply = await self._call("GetDocument", request, "document_id")
        return None if reply is None else wire.stored_document(tenant_id, reply.document)

    async def list_documents(
        self, tenant_id: str, page_token: str, page_size: int
    ) -> tuple[list[StoredDocument], str]:
        """A page of documents (without their text) and the token of the next one."""
        request = pb.ListDocumentsRequest(
            tenant_id=tenant_id, page_token=page_token, page_size=page_size
        )
        reply = await self._call("ListDocuments", request, "page_token")
        documents = [wire.stored_document(tenant_id, d) for d in reply.documents]
        return documents, str(reply.next_page_token)

    async def delete_document(self, tenant_id: str, document_id: str) -> bool:
        request = pb.DeleteDocumentRequest(tenant_id=tenant_id, document_id=document_id)
        return bool((await self._call("DeleteDocument", request, "document_id")).deleted)

    async def put_facts(
        self,
        tenant_id: str,
        user_id: str,
        facts: Sequence[tuple[NewFact, str, bytes]],
    ) -> list[StoredFact]:
        """Stores (fact, model, vector) triples; returns them as stored."""
        request = pb.PutFactsRequest(
            tenant_id=tenant_id,
            user_id=user_id,
            facts=[wire.state_fact_pb(f, model, vector) for f, model, vector in facts],
        )
        reply = await self._call("PutFacts", request, "facts")
        return [wire.stored_fact(f) for f in reply.facts]

    async def list_facts(self, tenant_id: str, user_id: str) -> list[StoredFact]:
        request = pb.ListFactsRequest(tenant_id=tenant_id, user_id=user_id)
        reply = await self._call("ListFacts", request, "user_id")
        return [wire.stored_fact(f) for f in reply.facts]

    async def delete_fact(self, tenant_id: str, user_id: str, fact_id: str) -> bool:
        request = pb.DeleteFactRequest(tenant_id=tenant_id, user_id=user_id, fact_id=fact_id)
        return bool((await self._call("DeleteFact", request, "fact_id")).deleted)
