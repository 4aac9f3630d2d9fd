"""SqliteStore's knowledge documents and user facts: functions over the writer's (or the
reader's) connection, so that SqliteStore runs each with its feed announcement in one
transaction. Also which owners of embeddings still exist, read in the embeddings' write
transaction: a deletion cannot slip in between the look and the write.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime

from voiceagent_backbone.state_svc.model import (
    EmbeddingKey,
    EmbeddingOwner,
    FactLimits,
    KnowledgeDocument,
    UserFact,
    fact_bytes,
)
from voiceagent_backbone.state_svc.store import codec
from voiceagent_backbone.state_svc.store.base import plan_facts

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
  tenant_id TEXT NOT NULL,
  document_id TEXT NOT NULL,
  title TEXT NOT NULL,
  text TEXT NOT NULL,
  metadata TEXT NOT NULL,
  text_bytes INTEGER NOT NULL,
  stored_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, document_id)
);
-- size: what the fact takes in a ListFacts reply (model.fact_bytes), summed for the limit.
CREATE TABLE IF NOT EXISTS facts (
  tenant_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  fact_id TEXT NOT NULL,
  text TEXT NOT NULL,
  embedding_model TEXT NOT NULL,
  vector BLOB NOT NULL,
  size INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id, fact_id)
);
"""

# The owners whose existence a vector depends on, and where they are kept.
_OWNER_TABLES = {
    EmbeddingOwner.CONVERSATION: ("conversations", "conversation_id"),
    EmbeddingOwner.DOCUMENT: ("documents", "document_id"),
}


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _document(row: sqlite3.Row, with_text: bool) -> KnowledgeDocument:
    return KnowledgeDocument(
        document_id=row["document_id"],
        title=row["title"],
        text=row["text"] if with_text else "",
        metadata=json.loads(row["metadata"]),
        stored_at=codec.from_us(row["stored_at"]),
        text_bytes=int(row["text_bytes"]),
    )


def _fact(row: sqlite3.Row) -> UserFact:
    return UserFact(
        fact_id=row["fact_id"],
        text=row["text"],
        embedding_model=row["embedding_model"],
        vector=bytes(row["vector"]),
        updated_at=codec.from_us(row["updated_at"]),
    )


# -- documents ----------------------------------------------------------------------------


def put_document(
    conn: sqlite3.Connection, tenant_id: str, document: KnowledgeDocument, now: datetime
) -> KnowledgeDocument:
    now_us = codec.to_us(now)
    assert now_us is not None
    row = conn.execute(
        "SELECT stored_at FROM documents WHERE tenant_id=? AND document_id=?",
        (tenant_id, document.document_id),
    ).fetchone()
    # Later than the version it replaces, even within one microsecond (or a clock step back).
    stored_us = now_us if row is None else max(now_us, int(row["stored_at"]) + 1)
    text_bytes = len(document.text.encode())
    conn.execute(
        "INSERT INTO documents (tenant_id, document_id, title, text, metadata, text_bytes,"
        " stored_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(tenant_id, document_id) DO UPDATE SET"
        " title=excluded.title, text=excluded.text, metadata=excluded.metadata,"
        " text_bytes=excluded.text_bytes, stored_at=excluded.stored_at",
        (
            tenant_id,
            document.document_id,
            document.title,
            document.text,
            json.dumps(document.metadata),
            text_bytes,
            stored_us,
        ),
    )
    return document.as_stored(codec.from_us(stored_us))


def get_document(
    conn: sqlite3.Connection, tenant_id: str, document_id: str
) -> KnowledgeDocument | None:
    row = conn.execute(
        "SELECT * FROM documents WHERE tenant_id=? AND document_id=?", (tenant_id, document_id)
    ).fetchone()
    return _document(row, with_text=True) if row is not None else None


def list_documents(
    conn: sqlite3.Connection, tenant_id: str, after: str, limit: int
) -> list[KnowledgeDocument]:
    rows = conn.execute(
        "SELECT document_id, title, '' AS text, metadata, text_bytes, stored_at FROM documents"
        " WHERE tenant_id=? AND document_id > ? ORDER BY document_id LIMIT ?",
        (tenant_id, after, limit),
    ).fetchall()
    return [_document(r, with_text=False) for r in rows]


def delete_document(conn: sqlite3.Connection, tenant_id: str, document_id: str) -> bool:
    return bool(
        conn.execute(
            "DELETE FROM documents WHERE tenant_id=? AND document_id=?", (tenant_id, document_id)
        ).rowcount
    )


# -- facts --------------------------------------------------------------------------------


def put_facts(
    conn: sqlite3.Connection,
    tenant_id: str,
    user_id: str,
    facts: Sequence[UserFact],
    now: datetime,
    limits: FactLimits,
) -> tuple[list[UserFact], bool]:
    """(the facts as stored, in request order; whether any changed)."""
    count, total = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM facts WHERE tenant_id=? AND user_id=?",
        (tenant_id, user_id),
    ).fetchone()
    ids = [f.fact_id for f in facts]
    where = f"tenant_id=? AND user_id=? AND fact_id IN ({_marks(len(ids))})"
    current = {
        row["fact_id"]: _fact(row)
        for row in conn.execute(f"SELECT * FROM facts WHERE {where}", [tenant_id, user_id, *ids])
    }
    stored, changed = plan_facts(current, int(count), int(total), facts, now, limits)
    conn.executemany(
        "INSERT INTO facts (tenant_id, user_id, fact_id, text, embedding_model, vector, size,"
        " updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(tenant_id, user_id, fact_id) DO"
        " UPDATE SET text=excluded.text, embedding_model=excluded.embedding_model,"
        " vector=excluded.vector, size=excluded.size, updated_at=excluded.updated_at",
        [
            (
                tenant_id,
                user_id,
                f.fact_id,
                f.text,
                f.embedding_model,
                f.vector,
                fact_bytes(f),
                codec.to_us(f.updated_at),
            )
            for f in changed
        ],
    )
    return stored, bool(changed)


def list_facts(conn: sqlite3.Connection, tenant_id: str, user_id: str) -> list[UserFact]:
    rows = conn.execute(
        "SELECT * FROM facts WHERE tenant_id=? AND user_id=? ORDER BY fact_id",
        (tenant_id, user_id),
    ).fetchall()
    return [_fact(r) for r in rows]


def delete_fact(conn: sqlite3.Connection, tenant_id: str, user_id: str, fact_id: str) -> bool:
    return bool(
        conn.execute(
            "DELETE FROM facts WHERE tenant_id=? AND user_id=? AND fact_id=?",
            (tenant_id, user_id, fact_id),
        ).rowcount
    )


def delete_user_facts(conn: sqlite3.Connection, tenant_id: str, user_id: str) -> int:
    return int(
        conn.execute(
            "DELETE FROM facts WHERE tenant_id=? AND user_id=?", (tenant_id, user_id)
        ).rowcount
    )


# -- owners of embeddings -----------------------------------------------------------------


def gone_owners(
    conn: sqlite3.Connection, keys: Iterable[EmbeddingKey]
) -> set[tuple[str, EmbeddingOwner, str]]:
    """(tenant, owner, owner id) of the keys whose conversation or document does not exist;
    one query per tenant and kind of owner. A user always exists (facts come and go, the
    user's vectors go with DeleteUserData)."""
    wanted: dict[tuple[str, EmbeddingOwner], set[str]] = {}
    for key in keys:
        if key.owner in _OWNER_TABLES:
            wanted.setdefault((key.tenant_id, key.owner), set()).add(key.owner_id)
    gone: set[tuple[str, EmbeddingOwner, str]] = set()
    for (tenant_id, owner), owner_ids in wanted.items():
        table, column = _OWNER_TABLES[owner]
        ids = sorted(owner_ids)
        marks = _marks(len(ids))
        query = f"SELECT {column} FROM {table} WHERE tenant_id=? AND {column} IN ({marks})"
        found = {row[0] for row in conn.execute(query, [tenant_id, *ids])}
        gone.update((tenant_id, owner, i) for i in ids if i not in found)
    return gone
