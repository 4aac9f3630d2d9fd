"""The durable side of context_svc's index: an embedded SQLite file (WAL).

It keeps every indexed turn with its vector and analysed terms, knowledge chunks, facts,
and the change-feed cursor. A batch of feed changes and the cursor after it commit in one
transaction, so after a crash the index resumes exactly where its stored state ends:
nothing is applied twice or skipped, and nothing already embedded is embedded again.

A knowledge chunk is stored before it is embedded when its document's ingest ran out of
time: its vector is then an empty blob (the column stays NOT NULL, so files written before
need no migration), and the background embedding fills it in; at start-up such chunks are
queued again.

The file is derived data, a cache: everything in it comes from state_svc (turns and
knowledge changes from its feed, documents and facts from its records, vectors from its
shared embeddings), so losing it costs a rebuild from the feed and nothing else.
All calls run on one worker thread that owns the connection.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from voiceagent_backbone.context_svc.embedding import Vectors
from voiceagent_backbone.context_svc.model import (
    AddTurn,
    BatchResult,
    Chunk,
    Document,
    DropConversations,
    Fact,
    FeedOp,
    RemovedTurn,
    Turn,
)

T = TypeVar("T")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS turns (
  tenant_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  conversation_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  kind TEXT NOT NULL,
  role TEXT NOT NULL,
  speaker TEXT NOT NULL,
  text TEXT NOT NULL,
  embed_text TEXT NOT NULL,
  terms TEXT NOT NULL,
  occurred_at_us INTEGER NOT NULL,
  owners TEXT NOT NULL,
  vector BLOB NOT NULL,
  PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (tenant_id, conversation_id, seq);
CREATE TABLE IF NOT EXISTS documents (
  tenant_id TEXT NOT NULL,
  document_id TEXT NOT NULL,
  title TEXT NOT NULL,
  text TEXT NOT NULL,
  metadata TEXT NOT NULL,
  ingested_at_us INTEGER NOT NULL,
  chunk_count INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, document_id)
);
CREATE TABLE IF NOT EXISTS chunks (
  tenant_id TEXT NOT NULL,
  document_id TEXT NOT NULL,
  chunk_index INTEGER NOT NULL,
  text TEXT NOT NULL,
  terms TEXT NOT NULL,
  vector BLOB NOT NULL,  -- empty until embedded
  PRIMARY KEY (tenant_id, document_id, chunk_index)
);
CREATE TABLE IF NOT EXISTS facts (
  tenant_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  fact_id TEXT NOT NULL,
  text TEXT NOT NULL,
  terms TEXT NOT NULL,
  updated_at_us INTEGER NOT NULL,
  vector BLOB NOT NULL,
  PRIMARY KEY (tenant_id, user_id, fact_id)
);
"""


def _blob(vector: Vectors) -> bytes:
    return np.ascontiguousarray(vector, np.float32).tobytes()


def _chunk_blob(vector: Vectors | None) -> bytes:
    return b"" if vector is None else _blob(vector)


def _vector(blob: bytes) -> Vectors:
    return np.frombuffer(blob, np.float32)


class IndexStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="context-store")
        self._conn: sqlite3.Connection | None = None

    # -- plumbing ----------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            assert self._conn is not None
            return fn(self._conn)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)

    # -- meta --------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._run(
            lambda c: c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        )
        return None if row is None else str(row["value"])

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(
            lambda c: c.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))
        )

    # -- loading (start-up) ------------------------------------------------------------

    async def load_turns(self) -> list[Turn]:
        def load(c: sqlite3.Connection) -> list[Turn]:
            rows = c.execute("SELECT * FROM turns ORDER BY rowid").fetchall()
            return [_turn(r) for r in rows]

        return await self._run(load)

    async def load_chunks(self) -> list[Chunk]:
        def load(c: sqlite3.Connection) -> list[Chunk]:
            rows = c.execute(
                "SELECT c.*, d.title, d.ingested_at_us FROM chunks c JOIN documents d"
                " USING (tenant_id, document_id) ORDER BY c.rowid"
            ).fetchall()
            return [_chunk(r) for r in rows]

        return await self._run(load)

    async def load_facts(self) -> list[Fact]:
        def load(c: sqlite3.Connection) -> list[Fact]:
            return [_fact(r) for r in c.execute("SELECT * FROM facts ORDER BY rowid")]

        return await self._run(load)

    async def replace_vectors(
        self, table: str, keys: list[tuple[str, ...]], vectors: Vectors
    ) -> None:
        """After an embedding model change: store the re-embedded vectors."""
        where = {
            "turns": "tenant_id=? AND event_id=?",
            "chunks": "tenant_id=? AND document_id=? AND chunk_index=?",
            "facts": "tenant_id=? AND user_id=? AND fact_id=?",
        }[table]

        def write(c: sqlite3.Connection) -> None:
            with _transaction(c):
                c.executemany(
                    f"UPDATE {table} SET vector=? WHERE {where}",
                    [(_blob(v), *k) for k, v in zip(keys, vectors, strict=True)],
                )

        await self._run(write)

    # -- memory (from the feed) ---------------------------------------------------------

    async def previous_turn_text(self, tenant_id: str, conversation_id: str, seq: int) -> str:
        row = await self._run(
            lambda c: c.execute(
                "SELECT text FROM turns WHERE tenant_id=? AND conversation_id=? AND seq<?"
                " ORDER BY seq DESC LIMIT 1",
                (tenant_id, conversation_id, seq),
            ).fetchone()
        )
        return "" if row is None else str(row["text"])

    async def apply_feed_batch(self, ops: list[FeedOp], cursor: str) -> BatchResult:
        def apply(c: sqlite3.Connection) -> BatchResult:
            result = BatchResult([], [], [])
            with _transaction(c):
                for op in ops:
                    if isinstance(op, AddTurn):
                        _add_turn(c, op.turn, result)
                    else:
                        _drop_conversations(c, op, result)
                c.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (cursor,))
            return result

        return await self._run(apply)

    async def count_turns(self) -> int:
        row = await self._run(lambda c: c.execute("SELECT COUNT(*) AS n FROM turns").fetchone())
        return int(row["n"])

    # -- knowledge ---------------------------------------------------------------------

    async def replace_document(self, document: Document, chunks: list[Chunk]) -> int:
        """Stores a document and its chunks; returns the old document's chunk count."""

        def write(c: sqlite3.Connection) -> int:
            with _transaction(c):
                old = c.execute(
                    "SELECT chunk_count FROM documents WHERE tenant_id=? AND document_id=?",
                    (document.tenant_id, document.document_id),
                ).fetchone()
                c.execute(
                    "DELETE FROM chunks WHERE tenant_id=? AND document_id=?",
                    (document.tenant_id, document.document_id),
                )
                c.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?,?,?,?,?,?,?)",
                    (
                        document.tenant_id,
                        document.document_id,
                        document.title,
                        document.text,
                        json.dumps(document.metadata),
                        document.ingested_at_us,
                        document.chunk_count,
                    ),
                )
                c.executemany(
                    "INSERT INTO chunks VALUES (?,?,?,?,?,?)",
                    [
                        (
                            ch.tenant_id,
                            ch.document_id,
                            ch.chunk_index,
                            ch.text,
                            " ".join(ch.terms),
                            _chunk_blob(ch.vector),
                        )
                        for ch in chunks
                    ],
                )
            return 0 if old is None else int(old["chunk_count"])

        return await self._run(write)

    async def set_chunk_vectors(
        self, tenant_id: str, document_id: str, vectors: dict[int, Vectors]
    ) -> None:
        """Stores the vectors of chunks (by index) that were stored without one."""
        rows = [(_blob(v), tenant_id, document_id, i) for i, v in vectors.items()]

        def write(c: sqlite3.Connection) -> None:
            with _transaction(c):
                c.executemany(
                    "UPDATE chunks SET vector=? WHERE tenant_id=? AND document_id=?"
                    " AND chunk_index=?",
                    rows,
                )

        await self._run(write)

    async def delete_document(self, tenant_id: str, document_id: str) -> int | None:
        """Deletes a document; returns its chunk count, None when there was none."""

        def write(c: sqlite3.Connection) -> int | None:
            with _transaction(c):
                old = c.execute(
                    "SELECT chunk_count FROM documents WHERE tenant_id=? AND document_id=?",
                    (tenant_id, document_id),
                ).fetchone()
                if old is None:
                    return None
                c.execute(
                    "DELETE FROM chunks WHERE tenant_id=? AND document_id=?",
                    (tenant_id, document_id),
                )
                c.execute(
                    "DELETE FROM documents WHERE tenant_id=? AND document_id=?",
                    (tenant_id, document_id),
                )
                return int(old["chunk_count"])

        return await self._run(write)

    async def document_versions(
        self, tenant_id: str, document_ids: list[str]
    ) -> dict[str, tuple[int, int]]:
        """Of the given documents, those indexed here: id -> (version, chunk count)."""

        def read(c: sqlite3.Connection) -> dict[str, tuple[int, int]]:
            marks = ",".join("?" * len(document_ids))
            rows = c.execute(
                "SELECT document_id, ingested_at_us, chunk_count FROM documents"
                f" WHERE tenant_id=? AND document_id IN ({marks})",
                (tenant_id, *document_ids),
            ).fetchall()
            return {r["document_id"]: (r["ingested_at_us"], r["chunk_count"]) for r in rows}

        return await self._run(read) if document_ids else {}

    async def get_document(self, tenant_id: str, document_id: str) -> Document | None:
        def read(c: sqlite3.Connection) -> Document | None:
            row = c.execute(
                "SELECT * FROM documents WHERE tenant_id=? AND document_id=?",
                (tenant_id, document_id),
            ).fetchone()
            return None if row is None else _document(row)

        return await self._run(read)

    # -- facts -------------------------------------------------------------------------

    async def replace_facts(self, tenant_id: str, user_id: str, facts: list[Fact]) -> list[str]:
        """Makes `facts` the user's facts; returns the ids of the facts no longer there."""

        def write(c: sqlite3.Connection) -> list[str]:
            with _transaction(c):
                old = {
                    r["fact_id"]
                    for r in c.execute(
                        "SELECT fact_id FROM facts WHERE tenant_id=? AND user_id=?",
                        (tenant_id, user_id),
                    )
                }
                c.execute("DELETE FROM facts WHERE tenant_id=? AND user_id=?", (tenant_id, user_id))
                c.executemany(
                    "INSERT INTO facts VALUES (?,?,?,?,?,?,?)",
                    [
                        (
                            f.tenant_id,
                            f.user_id,
                            f.fact_id,
                            f.text,
                            " ".join(f.terms),
                            f.updated_at_us,
                            _blob(f.vector),
                        )
                        for f in facts
                    ],
                )
            return sorted(old - {f.fact_id for f in facts})

        return await self._run(write)

    async def fact_ids(self, tenant_id: str, user_id: str) -> set[str]:
        """The ids of the user's facts indexed here."""

        def read(c: sqlite3.Connection) -> set[str]:
            return {
                r["fact_id"]
                for r in c.execute(
                    "SELECT fact_id FROM facts WHERE tenant_id=? AND user_id=?",
                    (tenant_id, user_id),
                )
            }

        return await self._run(read)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _add_turn(c: sqlite3.Connection, turn: Turn, result: BatchResult) -> None:
    if turn.kind == "message":
        # The transcriptions this message supersedes: same role, after the previous message
        # of either side (a reply ends a turn; a transcription before it that never became
        # a message stays).
        (previous,) = c.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM turns WHERE tenant_id=? AND conversation_id=?"
            " AND kind='message' AND seq<?",
            (turn.tenant_id, turn.conversation_id, turn.seq),
        ).fetchone()
        for row in c.execute(
            "DELETE FROM turns WHERE tenant_id=? AND conversation_id=? AND kind='transcription'"
            " AND role=? AND seq>? AND seq<? RETURNING event_id, owners",
            (turn.tenant_id, turn.conversation_id, turn.role, previous, turn.seq),
        ).fetchall():
            _removed(result, turn.tenant_id, row)
    cur = c.execute(
        "INSERT OR IGNORE INTO turns VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            turn.tenant_id,
            turn.event_id,
            turn.conversation_id,
            turn.seq,
            turn.kind,
            turn.role,
            turn.speaker,
            turn.text,
            turn.embed_text,
            " ".join(turn.terms),
            turn.occurred_at_us,
            json.dumps(turn.owners),
            _blob(turn.vector),
        ),
    )
    if cur.rowcount:
        result.added.append(turn)


def _removed(result: BatchResult, tenant_id: str, row: sqlite3.Row) -> None:
    """Records a removed turn; one added earlier in the same batch is simply not added."""
    for i, added in enumerate(result.added):
        if added.tenant_id == tenant_id and added.event_id == row["event_id"]:
            del result.added[i]
            return
    result.removed.append(RemovedTurn(tenant_id, row["event_id"], json.loads(row["owners"])))


def _drop_conversations(c: sqlite3.Connection, op: DropConversations, result: BatchResult) -> None:
    for conversation_id in op.conversation_ids:
        for row in c.execute(
            "DELETE FROM turns WHERE tenant_id=? AND conversation_id=? RETURNING event_id, owners",
            (op.tenant_id, conversation_id),
        ).fetchall():
            _removed(result, op.tenant_id, row)
    if op.user_id:
        for row in c.execute(
            "DELETE FROM facts WHERE tenant_id=? AND user_id=? RETURNING fact_id",
            (op.tenant_id, op.user_id),
        ).fetchall():
            result.removed_facts.append((op.tenant_id, op.user_id, row["fact_id"]))


def _turn(r: sqlite3.Row) -> Turn:
    return Turn(
        tenant_id=r["tenant_id"],
        event_id=r["event_id"],
        conversation_id=r["conversation_id"],
        seq=r["seq"],
        kind=r["kind"],
        role=r["role"],
        speaker=r["speaker"],
        text=r["text"],
        embed_text=r["embed_text"],
        terms=r["terms"].split(),
        occurred_at_us=r["occurred_at_us"],
        owners=json.loads(r["owners"]),
        vector=_vector(r["vector"]),
    )


def _chunk(r: sqlite3.Row) -> Chunk:
    return Chunk(
        tenant_id=r["tenant_id"],
        document_id=r["document_id"],
        title=r["title"],
        chunk_index=r["chunk_index"],
        text=r["text"],
        terms=r["terms"].split(),
        ingested_at_us=r["ingested_at_us"],
        vector=_vector(r["vector"]) if r["vector"] else None,
    )


def _fact(r: sqlite3.Row) -> Fact:
    return Fact(
        tenant_id=r["tenant_id"],
        user_id=r["user_id"],
        fact_id=r["fact_id"],
        text=r["text"],
        terms=r["terms"].split(),
        updated_at_us=r["updated_at_us"],
        vector=_vector(r["vector"]),
    )


def _document(r: sqlite3.Row) -> Document:
    return Document(
        tenant_id=r["tenant_id"],
        document_id=r["document_id"],
        title=r["title"],
        text=r["text"],
        metadata=json.loads(r["metadata"]),
        ingested_at_us=r["ingested_at_us"],
        chunk_count=r["chunk_count"],
    )
