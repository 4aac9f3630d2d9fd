"""The embedded store: SQLite in WAL mode, the default for `make run` and single-node use.

One writer connection on one thread (writes are serialized and grouped: one transaction
and one fsync for all appends that arrive together), one reader connection on another
(WAL lets reads run beside the writer). Sequence numbers and feed positions are assigned
inside the write transaction, so they are gapless and ordered by construction.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from voiceagent_backbone.servicekit.ids import uuid7
from voiceagent_backbone.state_svc.model import (
    AppendResult,
    Change,
    Conversation,
    ConversationStatus,
    Deletion,
    EmbeddingClaim,
    EmbeddingKey,
    EmbeddingOwner,
    Event,
    EventType,
    FactLimits,
    KnowledgeChange,
    KnowledgeDocument,
    PutOutcome,
    Snapshot,
    StoredEmbedding,
    UserFact,
    UserProfile,
)
from voiceagent_backbone.state_svc.store import codec
from voiceagent_backbone.state_svc.store import sqlite_knowledge as knowledge
from voiceagent_backbone.state_svc.store.base import (
    SCHEMA_VERSION,
    AppendRequest,
    ConversationMissing,
    EventIdConflict,
    GroupCommitter,
    StoreError,
)

T = TypeVar("T")
# Feed markers: rows of the events table that are not events.
DELETION = "deletion"
KNOWLEDGE = "knowledge"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
  conversation_id TEXT NOT NULL,
  tenant_id TEXT NOT NULL,
  room_name TEXT NOT NULL,
  participant_identities TEXT NOT NULL,
  user_ids TEXT NOT NULL,
  status TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  ended_at INTEGER,
  end_reason TEXT NOT NULL DEFAULT '',
  last_seq INTEGER NOT NULL DEFAULT 0,
  agent_name TEXT NOT NULL DEFAULT '',
  metadata TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY (tenant_id, conversation_id)
);
CREATE INDEX IF NOT EXISTS conversations_room
  ON conversations (tenant_id, room_name, status, started_at);
CREATE INDEX IF NOT EXISTS conversations_activity ON conversations (tenant_id, updated_at);
CREATE TABLE IF NOT EXISTS conversation_users (
  tenant_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  conversation_id TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id, conversation_id)
);
CREATE INDEX IF NOT EXISTS conversation_users_list
  ON conversation_users (tenant_id, user_id, started_at DESC, conversation_id DESC);
-- AUTOINCREMENT: feed positions are never reused, even after the newest row is deleted.
CREATE TABLE IF NOT EXISTS events (
  feed_seq INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  conversation_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  type TEXT NOT NULL,
  role TEXT NOT NULL,
  text TEXT NOT NULL,
  payload TEXT NOT NULL,
  client_time INTEGER,
  server_time INTEGER NOT NULL,
  participant_identity TEXT NOT NULL,
  detail_kind TEXT NOT NULL,
  detail TEXT NOT NULL,
  user_ids TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (tenant_id, event_id);
CREATE UNIQUE INDEX IF NOT EXISTS events_tenant_conversation_seq
  ON events (tenant_id, conversation_id, seq);
CREATE INDEX IF NOT EXISTS events_tenant_feed ON events (tenant_id, feed_seq);
CREATE TABLE IF NOT EXISTS snapshots (
  conversation_id TEXT NOT NULL,
  tenant_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (tenant_id, conversation_id)
);
CREATE TABLE IF NOT EXISTS users (
  tenant_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  display_name TEXT NOT NULL,
  preferences TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id)
);
CREATE TABLE IF NOT EXISTS tenants (tenant_id TEXT PRIMARY KEY, retention_s INTEGER NOT NULL);
-- One row per (model, key): a claim (holder, claimed_until) until the vector is stored.
CREATE TABLE IF NOT EXISTS embeddings (
  model TEXT NOT NULL,
  tenant_id TEXT NOT NULL,
  owner TEXT NOT NULL,
  owner_id TEXT NOT NULL,
  item_id TEXT NOT NULL,
  vector BLOB,
  holder TEXT,
  claimed_until INTEGER,
  stored_at INTEGER,
  PRIMARY KEY (model, tenant_id, owner, owner_id, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS embeddings_owner ON embeddings (tenant_id, owner, owner_id);
"""


def _create_schema(conn: sqlite3.Connection) -> None:
    """_SCHEMA statement by statement: executescript would first commit the transaction
    that the migration runs in. Also what schema 2 lacks (3 only added tables)."""
    statement = ""
    for line in (_SCHEMA + knowledge.SCHEMA).splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""


def _stored_version(conn: sqlite3.Connection) -> int:
    """The database's schema version; 0 for a new database."""
    if (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='conversations'"
        ).fetchone()
        is None
    ):
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    # Version 1 stored its version after creating its tables, outside their transaction.
    return int(row["value"]) if row is not None else 1


def _upgrade_from_1(conn: sqlite3.Connection) -> None:
    """Version 1 had one conversation id keyspace for every tenant: conversations and
    snapshots keyed by conversation id alone, events' seqs unique per conversation id.
    Both tables are rebuilt keyed by (tenant, conversation) with their rows; events keep
    their rows and rowids (the feed positions), only their unique index changes."""
    for table in ("conversations", "snapshots"):
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
    # A renamed table keeps its indexes, whose names the new tables need.
    for index in ("conversations_room", "conversations_activity", "events_conversation_seq"):
        conn.execute(f"DROP INDEX {index}")
    _create_schema(conn)
    for table in ("conversations", "snapshots"):
        columns = ", ".join(r["name"] for r in conn.execute(f"PRAGMA table_info({table}_v1)"))
        conn.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_v1")
        conn.execute(f"DROP TABLE {table}_v1")


def _conversation(row: sqlite3.Row) -> Conversation:
    return codec.conversation_from(
        {
            **dict(row),
            "participant_identities": json.loads(row["participant_identities"]),
            "user_ids": json.loads(row["user_ids"]),
            "started_at": codec.from_us(row["started_at"]),
            "updated_at": codec.from_us(row["updated_at"]),
            "ended_at": codec.from_us(row["ended_at"]),
            "metadata": json.loads(row["metadata"]),
        }
    )


def _change(row: sqlite3.Row) -> Change:
    if row["type"] == DELETION:
        deletion = codec.deletion_from(row["tenant_id"], json.loads(row["payload"]))
        return Change(feed_seq=row["feed_seq"], deletion=deletion)
    if row["type"] == KNOWLEDGE:
        change = codec.knowledge_from(row["tenant_id"], json.loads(row["payload"]))
        return Change(feed_seq=row["feed_seq"], knowledge=change)
    return Change(feed_seq=row["feed_seq"], event=_event(row))


def _insert_marker(
    conn: sqlite3.Connection, tenant_id: str, kind: str, payload: dict[str, Any], now: datetime
) -> int:
    """A feed entry that is not an event (a deletion, a knowledge change); its position."""
    cursor = conn.execute(
        "INSERT INTO events (tenant_id, event_id, conversation_id, seq, type, role, text,"
        " payload, client_time, server_time, participant_identity, detail_kind, detail,"
        " user_ids) VALUES (?,?,'',0,?,'','',?,NULL,?,'','','{}','[]')",
        (tenant_id, uuid7(), kind, json.dumps(payload), codec.to_us(now)),
    )
    feed_seq = int(cursor.lastrowid or 0)
    # Markers have no conversation: each gets a unique seq of its own, -feed_seq. Inserted
    # with seq 0, which nothing keeps (events count from 1, markers go negative): a first
    # marker at feed_seq 1 keeps -1, so -1 cannot be the placeholder.
    conn.execute("UPDATE events SET seq=? WHERE feed_seq=?", (-feed_seq, feed_seq))
    return feed_seq


def _announce(conn: sqlite3.Connection, change: KnowledgeChange, now: datetime) -> int:
    return _insert_marker(conn, change.tenant_id, KNOWLEDGE, codec.knowledge_fields(change), now)


def _event(row: sqlite3.Row) -> Event:
    return codec.event_from(
        {
            **dict(row),
            "payload": json.loads(row["payload"]),
            "detail": json.loads(row["detail"]),
            "user_ids": json.loads(row["user_ids"]),
            "client_time": codec.from_us(row["client_time"]),
            "server_time": codec.from_us(row["server_time"]),
        }
    )


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self._path = path
        self._synchronous = synchronous
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._appends: GroupCommitter[AppendRequest, list[AppendResult]] = GroupCommitter(
            self._append_batch
        )

    # -- plumbing ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            assert self._wconn is not None
            conn = self._wconn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(self._writer, run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            assert self._rconn is not None
            return fn(self._rconn)

        return await self._run(self._reader, run)

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._wconn = await loop.run_in_executor(self._writer, self._connect)
        self._rconn = await loop.run_in_executor(self._reader, self._connect)

        # One write transaction: another process opening the file at the same time waits,
        # then finds the schema current.
        def migrate(conn: sqlite3.Connection) -> None:
            version = _stored_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema {version} is newer than this build "
                    f"({SCHEMA_VERSION}); upgrade state_svc"
                )
            if version == 1:
                _upgrade_from_1(conn)
            else:
                _create_schema(conn)
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(SCHEMA_VERSION),),
            )

        await self._write(migrate)
        self._appends.start()

    async def shared_secret(self, name: str, size: int) -> bytes:
        key = f"secret:{name}"

        def get_or_make(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                (key, secrets.token_hex(size)),
            )
            return str(conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

        return bytes.fromhex(await self._write(get_or_make))

    async def close(self) -> None:
        await self._appends.stop()
        for executor, conn in ((self._writer, self._wconn), (self._reader, self._rconn)):
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            executor.shutdown(wait=True)
        self._wconn = self._rconn = None

    # -- conversations ----------------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> tuple[Conversation, bool]:
        c = conversation

        def create(conn: sqlite3.Connection) -> tuple[Conversation, bool]:
            row = conn.execute(
                "SELECT * FROM conversations WHERE conversation_id=? AND tenant_id=?",
                (c.conversation_id, c.tenant_id),
            ).fetchone()
            if row is not None:
                return _conversation(row), False
            conn.execute(
                "INSERT INTO conversations (conversation_id, tenant_id, room_name,"
                " participant_identities, user_ids, status, started_at, updated_at,"
                " agent_name, metadata) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    c.conversation_id,
                    c.tenant_id,
                    c.room_name,
                    json.dumps(c.participant_identities),
                    json.dumps(c.user_ids),
                    c.status.value,
                    codec.to_us(c.started_at),
                    codec.to_us(c.updated_at),
                    c.agent_name,
                    json.dumps(c.metadata),
                ),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO conversation_users VALUES (?,?,?,?)",
                [
                    (c.tenant_id, u, c.conversation_id, codec.to_us(c.started_at))
                    for u in c.user_ids
                ],
            )
            return c, True

        return await self._write(create)

    async def get_conversation(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT * FROM conversations WHERE conversation_id=? AND tenant_id=?",
                (conversation_id, tenant_id),
            ).fetchone()
        )
        return _conversation(row) if row is not None else None

    async def find_open_conversation(self, tenant_id: str, room_name: str) -> Conversation | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT * FROM conversations WHERE tenant_id=? AND room_name=? AND status=?"
                " ORDER BY started_at DESC, conversation_id DESC LIMIT 1",
                (tenant_id, room_name, ConversationStatus.OPEN.value),
            ).fetchone()
        )
        return _conversation(row) if row is not None else None

    async def list_conversations(
        self, tenant_id: str, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Conversation]:
        query = (
            "SELECT c.* FROM conversation_users u JOIN conversations c"
            " ON c.tenant_id = u.tenant_id AND c.conversation_id = u.conversation_id"
            " WHERE u.tenant_id=? AND u.user_id=?"
        )
        params: list[Any] = [tenant_id, user_id]
        if after is not None:
            query += " AND (u.started_at < ? OR (u.started_at = ? AND u.conversation_id < ?))"
            at = codec.to_us(after[0])
            params += [at, at, after[1]]
        query += " ORDER BY u.started_at DESC, u.conversation_id DESC LIMIT ?"
        params.append(limit)
        rows = await self._read(lambda conn: conn.execute(query, params).fetchall())
        return [_conversation(r) for r in rows]

    async def end_conversation(
        self, tenant_id: str, conversation_id: str, reason: str, now: datetime
    ) -> Conversation | None:
        def end(conn: sqlite3.Connection) -> Conversation | None:
            conn.execute(
                "UPDATE conversations SET status=?, ended_at=?, end_reason=?, updated_at=?"
                " WHERE conversation_id=? AND tenant_id=? AND status=?",
                (
                    ConversationStatus.ENDED.value,
                    codec.to_us(now),
                    reason,
                    codec.to_us(now),
                    conversation_id,
                    tenant_id,
                    ConversationStatus.OPEN.value,
                ),
            )
            row = conn.execute(
                "SELECT * FROM conversations WHERE conversation_id=? AND tenant_id=?",
                (conversation_id, tenant_id),
            ).fetchone()
            return _conversation(row) if row is not None else None

        return await self._write(end)

    # -- events -----------------------------------------------------------------------

    async def append_events(self, request: AppendRequest) -> list[AppendResult]:
        return await self._appends.submit(request)

    async def _append_batch(
        self, requests: list[AppendRequest]
    ) -> list[list[AppendResult] | BaseException]:
        def run(conn: sqlite3.Connection) -> list[list[AppendResult] | BaseException]:
            out: list[list[AppendResult] | BaseException] = []
            for request in requests:
                conn.execute("SAVEPOINT one")
                try:
                    out.append(self._append_one(conn, request))
                    conn.execute("RELEASE one")
                except (ConversationMissing, EventIdConflict) as exc:
                    conn.execute("ROLLBACK TO one")
                    conn.execute("RELEASE one")
                    out.append(exc)
            return out

        return await self._write(run)

    @staticmethod
    def _append_one(conn: sqlite3.Connection, request: AppendRequest) -> list[AppendResult]:
        conv = conn.execute(
            "SELECT last_seq, user_ids FROM conversations WHERE conversation_id=? AND tenant_id=?",
            (request.conversation_id, request.tenant_id),
        ).fetchone()
        if conv is None:
            raise ConversationMissing(request.conversation_id)
        last_seq = int(conv["last_seq"])
        ids = [e.event_id for e in request.events]
        marks = ",".join("?" * len(ids))
        existing = {
            row["event_id"]: row
            for row in conn.execute(
                f"SELECT event_id, conversation_id, seq FROM events"
                f" WHERE tenant_id=? AND event_id IN ({marks})",
                [request.tenant_id, *ids],
            )
        }
        results: list[AppendResult] = []
        now_us = codec.to_us(request.now)
        for event in request.events:
            found = existing.get(event.event_id)
            if found is not None:
                if found["conversation_id"] != request.conversation_id:
                    raise EventIdConflict(event.event_id)
                results.append(AppendResult(event.event_id, int(found["seq"]), True))
                continue
            last_seq += 1
            conn.execute(
                "INSERT INTO events (tenant_id, event_id, conversation_id, seq, type, role,"
                " text, payload, client_time, server_time, participant_identity, detail_kind,"
                " detail, user_ids) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    request.tenant_id,
                    event.event_id,
                    request.conversation_id,
                    last_seq,
                    event.type.value,
                    event.role.value,
                    event.text,
                    json.dumps(event.payload),
                    codec.to_us(event.client_time),
                    now_us,
                    event.participant_identity,
                    event.detail_kind,
                    json.dumps(event.detail),
                    conv["user_ids"],
                ),
            )
            results.append(AppendResult(event.event_id, last_seq, False))
            existing[event.event_id] = {"conversation_id": request.conversation_id, "seq": last_seq}
        conn.execute(
            "UPDATE conversations SET last_seq=?, updated_at=?"
            " WHERE conversation_id=? AND tenant_id=?",
            (last_seq, now_us, request.conversation_id, request.tenant_id),
        )
        return results

    async def get_history(
        self,
        tenant_id: str,
        conversation_id: str,
        types: Sequence[EventType],
        *,
        last_n: int = 0,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[Event]:
        query = "SELECT * FROM events WHERE conversation_id=? AND tenant_id=?"
        params: list[Any] = [conversation_id, tenant_id]
        if types:
            query += f" AND type IN ({','.join('?' * len(types))})"
            params += [t.value for t in types]
        if last_n > 0:
            query += " ORDER BY seq DESC LIMIT ?"
            params.append(last_n)
        else:
            query += " AND seq > ? ORDER BY seq ASC LIMIT ?"
            params += [after_seq, limit]
        rows = await self._read(lambda conn: conn.execute(query, params).fetchall())
        events = [_event(r) for r in rows]
        return events[::-1] if last_n > 0 else events

    # -- snapshots and users ----------------------------------------------------------

    async def save_snapshot(self, tenant_id: str, snapshot: Snapshot, now: datetime) -> Snapshot:
        body = json.dumps(codec.snapshot_body(snapshot))

        def save(conn: sqlite3.Connection) -> Snapshot:
            conn.execute(
                "INSERT INTO snapshots (conversation_id, tenant_id, version, created_at, body)"
                " VALUES (?,?,1,?,?) ON CONFLICT(tenant_id, conversation_id) DO UPDATE SET"
                " version=version+1, created_at=excluded.created_at, body=excluded.body",
                (snapshot.conversation_id, tenant_id, codec.to_us(now), body),
            )
            row = conn.execute(
                "SELECT version FROM snapshots WHERE conversation_id=? AND tenant_id=?",
                (snapshot.conversation_id, tenant_id),
            ).fetchone()
            return codec.snapshot_from(
                snapshot.conversation_id, int(row["version"]), now, json.loads(body)
            )

        return await self._write(save)

    async def get_latest_snapshot(self, tenant_id: str, conversation_id: str) -> Snapshot | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT * FROM snapshots WHERE conversation_id=? AND tenant_id=?",
                (conversation_id, tenant_id),
            ).fetchone()
        )
        if row is None:
            return None
        return codec.snapshot_from(
            conversation_id,
            int(row["version"]),
            codec.from_us(row["created_at"]),
            json.loads(row["body"]),
        )

    async def upsert_user(
        self, tenant_id: str, profile: UserProfile, now: datetime
    ) -> tuple[UserProfile, bool]:
        def upsert(conn: sqlite3.Connection) -> tuple[UserProfile, bool]:
            row = conn.execute(
                "SELECT * FROM users WHERE tenant_id=? AND user_id=?", (tenant_id, profile.user_id)
            ).fetchone()
            now_us = codec.to_us(now)
            if row is None:
                conn.execute(
                    "INSERT INTO users VALUES (?,?,?,?,?,?)",
                    (
                        tenant_id,
                        profile.user_id,
                        profile.display_name,
                        json.dumps(profile.preferences),
                        now_us,
                        now_us,
                    ),
                )
                return UserProfile(
                    profile.user_id, profile.display_name, dict(profile.preferences), now, now
                ), True
            preferences = {**json.loads(row["preferences"]), **profile.preferences}
            name = profile.display_name or row["display_name"]
            conn.execute(
                "UPDATE users SET display_name=?, preferences=?, updated_at=?"
                " WHERE tenant_id=? AND user_id=?",
                (name, json.dumps(preferences), now_us, tenant_id, profile.user_id),
            )
            created = codec.from_us(row["created_at"])
            return UserProfile(profile.user_id, name, preferences, created, now), False

        return await self._write(upsert)

    async def get_user(self, tenant_id: str, user_id: str) -> UserProfile | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT * FROM users WHERE tenant_id=? AND user_id=?", (tenant_id, user_id)
            ).fetchone()
        )
        if row is None:
            return None
        return UserProfile(
            row["user_id"],
            row["display_name"],
            json.loads(row["preferences"]),
            codec.from_us(row["created_at"]),
            codec.from_us(row["updated_at"]),
        )

    # -- feed -------------------------------------------------------------------------

    async def read_feed(self, after: int, limit: int, tenant_id: str | None) -> list[Change]:
        params: list[Any] = [after]
        query = "SELECT * FROM events WHERE feed_seq > ?"
        if tenant_id is not None:
            query += " AND tenant_id=?"
            params.append(tenant_id)
        query += " ORDER BY feed_seq LIMIT ?"
        rows = await self._read(lambda conn: conn.execute(query, [*params, limit]).fetchall())
        return [_change(r) for r in rows]

    async def feed_head(self, tenant_id: str | None) -> int:
        if tenant_id is None:
            row = await self._read(
                lambda conn: conn.execute("SELECT MAX(feed_seq) AS m FROM events").fetchone()
            )
        else:
            row = await self._read(
                lambda conn: conn.execute(
                    "SELECT MAX(feed_seq) AS m FROM events WHERE tenant_id=?", (tenant_id,)
                ).fetchone()
            )
        return int(row["m"] or 0)

    async def feed_head_estimate(self) -> int:
        return await self.feed_head(None)

    # -- retention and deletion -------------------------------------------------------

    async def set_retention(self, tenant_id: str, seconds: int) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO tenants VALUES (?,?) ON CONFLICT(tenant_id)"
                " DO UPDATE SET retention_s=excluded.retention_s",
                (tenant_id, seconds),
            )
        )

    async def get_retention(self, tenant_id: str) -> int | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT retention_s FROM tenants WHERE tenant_id=?", (tenant_id,)
            ).fetchone()
        )
        return int(row["retention_s"]) if row is not None else None

    async def tenants(self) -> list[str]:
        rows = await self._read(
            lambda conn: conn.execute("SELECT DISTINCT tenant_id FROM conversations").fetchall()
        )
        return [r["tenant_id"] for r in rows]

    async def expired_conversations(
        self, tenant_id: str, before: datetime, limit: int
    ) -> list[str]:
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT conversation_id FROM conversations WHERE tenant_id=? AND updated_at < ?"
                " ORDER BY updated_at LIMIT ?",
                (tenant_id, codec.to_us(before), limit),
            ).fetchall()
        )
        return [r["conversation_id"] for r in rows]

    async def user_conversation_ids(self, tenant_id: str, user_id: str) -> list[str]:
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT conversation_id FROM conversation_users WHERE tenant_id=? AND user_id=?"
                " ORDER BY started_at, conversation_id",
                (tenant_id, user_id),
            ).fetchall()
        )
        return [r["conversation_id"] for r in rows]

    async def record_deletion(self, deletion: Deletion, now: datetime) -> int:
        fields = codec.deletion_fields(deletion)
        return await self._write(
            lambda conn: _insert_marker(conn, deletion.tenant_id, DELETION, fields, now)
        )

    async def delete_conversations(
        self, tenant_id: str, conversation_ids: Sequence[str]
    ) -> tuple[int, int, int, int]:
        ids = list(conversation_ids)
        if not ids:
            return 0, 0, 0, 0
        marks = ",".join("?" * len(ids))

        def delete(conn: sqlite3.Connection) -> tuple[int, int, int, int]:
            params = [tenant_id, *ids]
            events = conn.execute(
                f"DELETE FROM events WHERE tenant_id=? AND conversation_id IN ({marks})", params
            ).rowcount
            snapshots = conn.execute(
                f"DELETE FROM snapshots WHERE tenant_id=? AND conversation_id IN ({marks})", params
            ).rowcount
            conn.execute(
                "DELETE FROM conversation_users"
                f" WHERE tenant_id=? AND conversation_id IN ({marks})",
                params,
            )
            conversations = conn.execute(
                f"DELETE FROM conversations WHERE tenant_id=? AND conversation_id IN ({marks})",
                params,
            ).rowcount
            vectors = _delete_embeddings(conn, tenant_id, EmbeddingOwner.CONVERSATION, ids)
            return conversations, events, snapshots, vectors

        return await self._write(delete)

    async def delete_user_profile(self, tenant_id: str, user_id: str) -> bool:
        count = await self._write(
            lambda conn: (
                conn.execute(
                    "DELETE FROM users WHERE tenant_id=? AND user_id=?", (tenant_id, user_id)
                ).rowcount
            )
        )
        return bool(count)

    # -- embeddings -------------------------------------------------------------------

    async def claim_embeddings(
        self,
        model: str,
        keys: Sequence[EmbeddingKey],
        holder: str,
        now: datetime,
        until: datetime,
    ) -> list[EmbeddingClaim]:
        now_us, until_us = codec.to_us(now), codec.to_us(until)
        assert now_us is not None
        assert until_us is not None

        # In the write transaction: BEGIN IMMEDIATE serializes claimers, also of other
        # processes on the same file, and deletions of the owners looked up.
        def claim(conn: sqlite3.Connection) -> list[EmbeddingClaim]:
            out: list[EmbeddingClaim] = []
            gone = knowledge.gone_owners(conn, keys)
            for key in keys:
                if (key.tenant_id, key.owner, key.owner_id) in gone:
                    out.append(EmbeddingClaim(key, gone=True))
                    continue
                row = conn.execute(
                    f"SELECT vector, holder, claimed_until FROM embeddings WHERE {_KEY_WHERE}",
                    _key_params(model, key),
                ).fetchone()
                if row is not None and row["vector"] is not None:
                    out.append(EmbeddingClaim(key, vector=bytes(row["vector"])))
                    continue
                if (
                    row is not None
                    and row["holder"] != holder
                    and (row["claimed_until"] or 0) > now_us
                ):
                    out.append(EmbeddingClaim(key, held_until=codec.from_us(row["claimed_until"])))
                    continue
                conn.execute(
                    "INSERT INTO embeddings (model, tenant_id, owner, owner_id, item_id, holder,"
                    " claimed_until) VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT(model, tenant_id, owner, owner_id, item_id) DO UPDATE SET"
                    " holder=excluded.holder, claimed_until=excluded.claimed_until",
                    (*_key_params(model, key), holder, until_us),
                )
                out.append(EmbeddingClaim(key, owned=True, held_until=until))
            return out

        return await self._write(claim)

    async def put_embeddings(
        self, model: str, embeddings: Sequence[StoredEmbedding], holder: str, now: datetime
    ) -> list[PutOutcome]:
        now_us = codec.to_us(now)

        # The owners are looked up in the write transaction: a deletion either came first
        # (the vector is dropped) or comes after (and deletes it).
        def put(conn: sqlite3.Connection) -> list[PutOutcome]:
            outcomes: list[PutOutcome] = []
            gone = knowledge.gone_owners(conn, (e.key for e in embeddings))
            for embedding in embeddings:
                key = embedding.key
                if (key.tenant_id, key.owner, key.owner_id) in gone:
                    outcomes.append(PutOutcome.DROPPED)
                    continue
                params = _key_params(model, key)
                # A claim row becomes the stored vector; a stored one keeps its first vector.
                stored = conn.execute(
                    "INSERT INTO embeddings (model, tenant_id, owner, owner_id, item_id, vector,"
                    " holder, stored_at) VALUES (?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(model, tenant_id, owner, owner_id, item_id) DO UPDATE SET"
                    " vector=excluded.vector, holder=excluded.holder, claimed_until=NULL,"
                    " stored_at=excluded.stored_at WHERE vector IS NULL",
                    (*params, embedding.vector, holder, now_us),
                ).rowcount
                outcomes.append(PutOutcome.DUPLICATE if stored == 0 else PutOutcome.STORED)
            return outcomes

        return await self._write(put)

    async def get_embeddings(
        self, model: str, keys: Sequence[EmbeddingKey]
    ) -> dict[EmbeddingKey, bytes]:
        def get(conn: sqlite3.Connection) -> dict[EmbeddingKey, bytes]:
            found: dict[EmbeddingKey, bytes] = {}
            for key in keys:
                row = conn.execute(
                    f"SELECT vector FROM embeddings WHERE {_KEY_WHERE} AND vector IS NOT NULL",
                    _key_params(model, key),
                ).fetchone()
                if row is not None:
                    found[key] = bytes(row["vector"])
            return found

        return await self._read(get)

    async def list_embeddings(
        self, model: str, after: EmbeddingKey | None, page_size: int
    ) -> AsyncIterator[list[StoredEmbedding]]:
        # Page by page on the primary key (each page an index range), so that a slow
        # consumer holds no read transaction open.
        while True:
            query = (
                "SELECT tenant_id, owner, owner_id, item_id, vector FROM embeddings"
                " WHERE model=? AND vector IS NOT NULL"
            )
            params: list[Any] = [model]
            if after is not None:
                query += " AND (tenant_id, owner, owner_id, item_id) > (?,?,?,?)"
                params += [after.tenant_id, after.owner.value, after.owner_id, after.item_id]
            query += " ORDER BY tenant_id, owner, owner_id, item_id LIMIT ?"
            params.append(page_size)
            rows = await self._read(_fetch_all(query, params))
            page = [
                StoredEmbedding(
                    EmbeddingKey(
                        r["tenant_id"], EmbeddingOwner(r["owner"]), r["owner_id"], r["item_id"]
                    ),
                    bytes(r["vector"]),
                )
                for r in rows
            ]
            if page:
                yield page
            if len(page) < page_size:
                return
            after = page[-1].key

    async def delete_embeddings(
        self, tenant_id: str, owner: EmbeddingOwner, owner_ids: Sequence[str]
    ) -> int:
        ids = list(owner_ids)
        return await self._write(lambda conn: _delete_embeddings(conn, tenant_id, owner, ids))

    # -- knowledge (sqlite_knowledge.py): each write and its announcement, one transaction

    async def put_document(
        self, tenant_id: str, document: KnowledgeDocument, now: datetime
    ) -> KnowledgeDocument:
        change = KnowledgeChange(tenant_id, document_id=document.document_id)

        def put(conn: sqlite3.Connection) -> KnowledgeDocument:
            stored = knowledge.put_document(conn, tenant_id, document, now)
            _announce(conn, change, now)
            return stored

        return await self._write(put)

    async def get_document(self, tenant_id: str, document_id: str) -> KnowledgeDocument | None:
        return await self._read(lambda conn: knowledge.get_document(conn, tenant_id, document_id))

    async def list_documents(
        self, tenant_id: str, after: str, limit: int
    ) -> list[KnowledgeDocument]:
        return await self._read(
            lambda conn: knowledge.list_documents(conn, tenant_id, after, limit)
        )

    async def delete_document(
        self, tenant_id: str, document_id: str, now: datetime
    ) -> tuple[bool, int]:
        def delete(conn: sqlite3.Connection) -> tuple[bool, int]:
            existed = knowledge.delete_document(conn, tenant_id, document_id)
            # Vectors of a document that is not there are left behind by no one: remove
            # them whether or not it existed (a put that raced an earlier deletion).
            vectors = _delete_embeddings(conn, tenant_id, EmbeddingOwner.DOCUMENT, [document_id])
            if existed:
                _announce(conn, KnowledgeChange(tenant_id, document_id=document_id), now)
            return existed, vectors

        return await self._write(delete)

    async def put_facts(
        self,
        tenant_id: str,
        user_id: str,
        facts: Sequence[UserFact],
        now: datetime,
        limits: FactLimits,
    ) -> tuple[list[UserFact], bool]:
        def put(conn: sqlite3.Connection) -> tuple[list[UserFact], bool]:
            stored, changed = knowledge.put_facts(conn, tenant_id, user_id, facts, now, limits)
            if changed:
                _announce(conn, KnowledgeChange(tenant_id, user_id=user_id), now)
            return stored, changed

        return await self._write(put)

    async def list_facts(self, tenant_id: str, user_id: str) -> list[UserFact]:
        return await self._read(lambda conn: knowledge.list_facts(conn, tenant_id, user_id))

    async def delete_fact(self, tenant_id: str, user_id: str, fact_id: str, now: datetime) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            existed = knowledge.delete_fact(conn, tenant_id, user_id, fact_id)
            if existed:
                _announce(conn, KnowledgeChange(tenant_id, user_id=user_id), now)
            return existed

        return await self._write(delete)

    async def delete_user_facts(self, tenant_id: str, user_id: str) -> int:
        return await self._write(lambda conn: knowledge.delete_user_facts(conn, tenant_id, user_id))


def _fetch_all(query: str, params: list[Any]) -> Callable[[sqlite3.Connection], list[Any]]:
    return lambda conn: conn.execute(query, params).fetchall()


_KEY_WHERE = "model=? AND tenant_id=? AND owner=? AND owner_id=? AND item_id=?"


def _key_params(model: str, key: EmbeddingKey) -> tuple[str, str, str, str, str]:
    return (model, key.tenant_id, key.owner.value, key.owner_id, key.item_id)


def _delete_embeddings(
    conn: sqlite3.Connection, tenant_id: str, owner: EmbeddingOwner, owner_ids: list[str]
) -> int:
    """The vectors removed (claims without one go too, uncounted)."""
    if not owner_ids:
        return 0
    marks = ",".join("?" * len(owner_ids))
    where = f"tenant_id=? AND owner=? AND owner_id IN ({marks})"
    params = [tenant_id, owner.value, *owner_ids]
    vectors = conn.execute(
        f"SELECT COUNT(*) FROM embeddings WHERE {where} AND vector IS NOT NULL", params
    ).fetchone()[0]
    conn.execute(f"DELETE FROM embeddings WHERE {where}", params)
    return int(vectors)
