"""The proto contracts and the scope tables that guard them."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import ServiceDescriptor

from voiceagent_backbone.context_svc import service as context_service
from voiceagent_backbone.servicekit.scopes import method_scopes
from voiceagent_backbone.state_svc import service as state_service


@pytest.mark.parametrize("module", [state_service, context_service])
def test_every_rpc_has_a_scope(module: object) -> None:
    service: ServiceDescriptor = module.SERVICE  # type: ignore[attr-defined]
    scopes: dict[str, str] = module.SCOPES  # type: ignore[attr-defined]
    assert sorted(scopes) == sorted(f"/{service.full_name}/{m.name}" for m in service.methods)


def test_scope_table_out_of_date_fails_loudly() -> None:
    with pytest.raises(ValueError, match="missing"):
        method_scopes(state_service.SERVICE, {"GetConversation": "state.read"})


def test_admin_operations_need_the_admin_scope() -> None:
    prefix = f"/{state_service.SERVICE.full_name}/"
    for method in ("ExportUserData", "DeleteUserData", "SetRetentionPolicy"):
        assert state_service.SCOPES[prefix + method] == "state.admin"


def test_embeddings_need_the_platform_index_scope() -> None:
    from voiceagent_backbone.servicekit.auth import Principal

    prefix = f"/{state_service.SERVICE.full_name}/"
    tenant_admin = Principal("tenant-a", "", frozenset({"state.admin"}))
    for method in ("ClaimEmbeddings", "PutEmbeddings", "GetEmbeddings", "ListEmbeddings"):
        assert state_service.SCOPES[prefix + method] == "state.index"
    # Every tenant's vectors: a tenant's own admin does not reach them.
    assert not tenant_admin.allows("state.index")


def test_knowledge_needs_the_platform_knowledge_scope() -> None:
    from voiceagent_backbone.servicekit.auth import Principal

    prefix = f"/{state_service.SERVICE.full_name}/"
    methods = [
        m.name
        for m in state_service.SERVICE.methods
        if m.name.endswith(("Document", "Documents", "Facts", "Fact"))
    ]
    assert sorted(methods) == sorted(
        [
            "PutDocument",
            "GetDocument",
            "ListDocuments",
            "DeleteDocument",
            "PutFacts",
            "ListFacts",
            "DeleteFact",
        ]
    )
    for method in methods:
        assert state_service.SCOPES[prefix + method] == "state.knowledge"
    # The tenant is named in the request: a tenant's own admin must not reach the others.
    tenant_admin = Principal("tenant-a", "", frozenset({"state.admin"}))
    assert not tenant_admin.allows("state.knowledge")
