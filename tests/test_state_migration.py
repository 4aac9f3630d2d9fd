"""Databases written by schema 1 (one conversation id keyspace for every tenant) keep working
after the upgrade to per-tenant conversation ids, also when replicas open them at once."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient

from tests.support.ferretdb import MongoTarget
from voiceagent_backbone.servicekit.ids import uuid7
from voiceagent_backbone.state_svc.domain import utcnow
from voiceagent_backbone.state_svc.model import (
    Conversation,
    ConversationStatus,
    EventType,
    NewEvent,
    Role,
    Snapshot,
)
from voiceagent_backbone.state_svc.store import codec
from voiceagent_backbone.state_svc.store.base import (
    SCHEMA_VERSION,
    AppendRequest,
    ConversationStore,
)
from voiceagent_backbone.state_svc.store.mongo import MongoStore, position_id
from voiceagent_backbone.state_svc.store.sqlite import SqliteStore

A, B = "tenant-a", "tenant-b"
CID = uuid7()
E1, E2 = uuid7(), uuid7()
STARTED = utcnow() - timedelta(hours=1)
SNAPSHOT_BODY = codec.snapshot_body(Snapshot(CID, 3, "before", [], {}, 2))

# Schema 1's SQLite tables, as its sqlite.py created them.
SQLITE_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE conversations (
  conversation_id TEXT PRIMARY KEY,
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
  metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX conversations_room ON conversations (tenant_id, room_name, status, started_at);
CREATE INDEX conversations_activity ON conversations (tenant_id, updated_at);
CREATE TABLE conversation_users (
  tenant_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  conversation_id TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id, conversation_id)
);
CREATE INDEX conversation_users_list
  ON conversation_users (tenant_id, user_id, started_at DESC, conversation_id DESC);
CREATE TABLE events (
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
CREATE UNIQUE INDEX events_event_id ON events (tenant_id, event_id);
CREATE UNIQUE INDEX events_conversation_seq ON events (conversation_id, seq);
CREATE INDEX events_tenant_feed ON events (tenant_id, feed_seq);
CREATE TABLE snapshots (
  conversation_id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE TABLE users (
  tenant_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  display_name TEXT NOT NULL,
  preferences TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id)
);
CREATE TABLE tenants (tenant_id TEXT PRIMARY KEY, retention_s INTEGER NOT NULL);
"""


def write_sqlite_v1(path: Path) -> None:
    """Tenant A's conversation CID (events 1 and 2, a snapshot at version 3), and another
    tenant's deletion marker at feed position 3, as schema 1 stored them."""
    started = codec.to_us(STARTED)
    with sqlite3.connect(path) as conn:
        conn.executescript(SQLITE_V1)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute(
            "INSERT INTO conversations VALUES (?,?,'room-a','[\"identity-ana\"]','[\"ana\"]',"
            "'open',?,?,NULL,'',2,'assistant','{}')",
            (CID, A, started, started),
        )
        conn.execute("INSERT INTO conversation_users VALUES (?,'ana',?,?)", (A, CID, started))
        for seq, event_id in enumerate((E1, E2), 1):
            conn.execute(
                "INSERT INTO events (tenant_id, event_id, conversation_id, seq, type, role, text,"
                " payload, client_time, server_time, participant_identity, detail_kind, detail,"
                " user_ids) VALUES (?,?,?,?,'user_message','user',?,'{}',NULL,?,'','','{}',"
                "'[\"ana\"]')",
                (A, event_id, CID, seq, f"old {seq}", started),
            )
        deletion = {"reason": "retention", "user_id": "", "conversation_ids": [uuid7()]}
        conn.execute(
            "INSERT INTO events (tenant_id, event_id, conversation_id, seq, type, role, text,"
            " payload, client_time, server_time, participant_identity, detail_kind, detail,"
            " user_ids) VALUES ('tenant-x',?,'',-3,'deletion','','',?,NULL,?,'','','{}','[]')",
            (uuid7(), json.dumps(deletion), started),
        )
        conn.execute(
            "INSERT INTO snapshots VALUES (?,?,3,?,?)",
            (CID, A, started, json.dumps(SNAPSHOT_BODY)),
        )


async def write_mongo_v1(target: MongoTarget, database: str) -> None:
    """The same data as write_sqlite_v1, as schema 1 stored it in MongoDB: conversations and
    snapshots under their bare conversation id, seqs unique per (conversation_id, seq)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(target.uri, tz_aware=True)
    db = client[database]
    events = db["events"]
    await events.create_index(
        [("tenant_id", ASCENDING), ("event_id", ASCENDING)], unique=True, name="tenant_event"
    )
    await events.create_index(
        [("conversation_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="conv_seq"
    )
    await events.create_index([("tenant_id", ASCENDING), ("_id", ASCENDING)], name="tenant_feed")
    await db["conversations"].insert_one(
        {
            "_id": CID,
            "tenant_id": A,
            "room_name": "room-a",
            "participant_identities": ["identity-ana"],
            "user_ids": ["ana"],
            "status": "open",
            "started_at": STARTED,
            "updated_at": STARTED,
            "ended_at": None,
            "end_reason": "",
            "last_seq": 2,
            "agent_name": "assistant",
            "metadata": {},
        }
    )
    common: dict[str, Any] = {
        "role": "user",
        "payload": {},
        "client_time": None,
        "server_time": STARTED,
    }
    await events.insert_many(
        [
            *(
                {
                    "_id": position_id(seq),
                    "tenant_id": A,
                    "event_id": event_id,
                    "conversation_id": CID,
                    "seq": seq,
                    "type": "user_message",
                    "text": f"old {seq}",
                    "participant_identity": "",
                    "detail_kind": "",
                    "detail": {},
                    "user_ids": ["ana"],
                    **common,
                }
                for seq, event_id in enumerate((E1, E2), 1)
            ),
            {
                "_id": position_id(3),
                "tenant_id": "tenant-x",
                "event_id": uuid7(),
                "conversation_id": "",
                "seq": -3,
                "type": "deletion",
                "payload": {"reason": "retention", "user_id": "", "conversation_ids": [uuid7()]},
                "server_time": STARTED,
            },
        ]
    )
    await db["event_ids"].insert_one(
        {
            "_id": f"{A}\x1f{E1}",
            "conversation_id": CID,
            "events": [{"e": E1, "s": 1, "p": 1}, {"e": E2, "s": 2, "p": 2}],
        }
    )
    await db["snapshots"].insert_one(
        {"_id": CID, "tenant_id": A, "version": 3, "created_at": STARTED, "body": SNAPSHOT_BODY}
    )
    await db["meta"].insert_many([{"_id": "schema", "version": 1}, {"_id": "feed_head", "pos": 3}])
    await client.close()


def conversation(tenant_id: str, room: str) -> Conversation:
    now = utcnow()
    return Conversation(
        CID, tenant_id, room, ["identity-ana"], ["ana"], ConversationStatus.OPEN, now, now
    )


def append(tenant_id: str, *event_ids: str) -> AppendRequest:
    events = [
        NewEvent(e, EventType.USER_MESSAGE, Role.USER, f"new {e}", {}, None) for e in event_ids
    ]
    return AppendRequest(tenant_id, CID, events, utcnow())


async def check_upgraded(one: ConversationStore, two: ConversationStore) -> None:
    """Schema 1's data reads as before, and the id is now tenant A's alone: tenant B gets
    its own conversation CID. `one` and `two` are replicas on the same database."""
    old = await one.get_conversation(A, CID)
    assert old is not None
    assert (old.room_name, old.user_ids, old.last_seq) == ("room-a", ["ana"], 2)
    history = await two.get_history(A, CID, ())
    assert [(e.seq, e.text) for e in history] == [(1, "old 1"), (2, "old 2")]
    snapshot = await one.get_latest_snapshot(A, CID)
    assert snapshot is not None
    assert (snapshot.version, snapshot.current_agent) == (3, "before")

    again, created = await two.create_conversation(conversation(A, "elsewhere"))
    assert (created, again.room_name) == (False, "room-a")
    _, created = await one.create_conversation(conversation(B, "room-b"))
    assert created

    e3 = uuid7()
    appended = await one.append_events(append(A, E1, e3))
    assert [(r.seq, r.duplicate) for r in appended] == [(1, True), (3, False)]
    appended = await two.append_events(append(B, E1, uuid7()))
    assert [(r.seq, r.duplicate) for r in appended] == [(1, False), (2, False)]
    assert [e.seq for e in await two.get_history(A, CID, ())] == [1, 2, 3]
    assert [e.seq for e in await one.get_history(B, CID, ())] == [1, 2]
    feed = await one.read_feed(0, 100, None)
    assert [c.feed_seq for c in feed] == [1, 2, 3, 4, 5, 6]

    # Tenant A's snapshot goes on from schema 1's version 3.
    for store, tenant_id, version in ((one, A, 4), (two, B, 1)):
        new = Snapshot(CID, 0, f"agent of {tenant_id}", [], {}, 0)
        assert (await store.save_snapshot(tenant_id, new, utcnow())).version == version
    for store, tenant_id, room, version in ((two, A, "room-a", 4), (one, B, "room-b", 1)):
        latest = await store.get_latest_snapshot(tenant_id, CID)
        assert latest is not None
        assert (latest.version, latest.current_agent) == (version, f"agent of {tenant_id}")
        listed = await store.list_conversations(tenant_id, "ana", 10, None)
        assert [(c.conversation_id, c.room_name) for c in listed] == [(CID, room)]

    ended = await one.end_conversation(A, CID, "done", utcnow())
    assert ended is not None
    assert ended.status == ConversationStatus.ENDED
    still = await two.get_conversation(B, CID)
    assert still is not None
    assert still.status == ConversationStatus.OPEN

    assert await one.user_conversation_ids(A, "ana") == [CID]
    assert await one.delete_conversations(A, [CID]) == (1, 3, 1, 0)
    assert await two.get_conversation(A, CID) is None
    assert await two.get_latest_snapshot(A, CID) is None
    assert [e.seq for e in await one.get_history(B, CID, ())] == [1, 2]
    # Created again, nothing of the old one is left: E1 is a new event.
    _, created = await two.create_conversation(conversation(A, "room-a"))
    assert created
    appended = await two.append_events(append(A, E1))
    assert [(r.seq, r.duplicate) for r in appended] == [(1, False)]


async def test_sqlite_database_of_schema_1_is_upgraded_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    write_sqlite_v1(path)
    one, two = SqliteStore(path), SqliteStore(path)
    await asyncio.gather(one.open(), two.open())  # two processes starting at once
    try:
        await check_upgraded(one, two)
    finally:
        await asyncio.gather(one.close(), two.close())
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(events)")}
        # table_info's last column: the column's position in the primary key (0: none).
        keys = {
            table: [
                r[1]
                for r in sorted(conn.execute(f"PRAGMA table_info({table})"), key=lambda r: r[5])
                if r[5]
            ]
            for table in ("conversations", "snapshots")
        }
    assert version == str(SCHEMA_VERSION)
    assert "events_tenant_conversation_seq" in indexes
    assert "events_conversation_seq" not in indexes
    assert keys == {t: ["tenant_id", "conversation_id"] for t in ("conversations", "snapshots")}
    # Opening the upgraded file again changes nothing.
    again = SqliteStore(path)
    await again.open()
    try:
        assert [e.seq for e in await again.get_history(B, CID, ())] == [1, 2]
    finally:
        await again.close()


async def test_mongodb_database_of_schema_1_is_upgraded_by_replicas_at_once(
    mongo: MongoTarget,
) -> None:
    database = f"{mongo.database}_{uuid.uuid4().hex[:8]}"
    await write_mongo_v1(mongo, database)
    write_concern = "1" if mongo.kind == "ferretdb" else "majority"
    replicas = [MongoStore(mongo.uri, database, write_concern=write_concern) for _ in range(3)]
    try:
        await asyncio.gather(*(r.open() for r in replicas))
        await check_upgraded(replicas[0], replicas[1])
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.uri)
        db = client[database]
        indexes = {index["name"] async for index in await db["events"].list_indexes()}
        schema = await db["meta"].find_one({"_id": "schema"})
        await client.close()
        assert "tenant_conv_seq" in indexes
        assert "conv_seq" not in indexes
        assert schema is not None
        assert schema["version"] == SCHEMA_VERSION
    finally:
        for replica in replicas:
            await replica.close()
        cleanup = MongoStore(mongo.uri, database)
        await cleanup.drop_database()
        await cleanup.close()


async def test_sqlite_database_of_schema_2_gains_the_knowledge_tables(tmp_path: Path) -> None:
    """Schema 3 only added tables: a schema 2 file keeps its data and gains them; an older
    build then refuses the file (its DeleteUserData would leave the facts behind)."""
    from voiceagent_backbone.state_svc.model import FactLimits, KnowledgeDocument, UserFact

    path = tmp_path / "state.sqlite3"
    store = SqliteStore(path)
    await store.open()
    await store.create_conversation(conversation(A, "room-a"))
    await store.close()
    with sqlite3.connect(path) as conn:  # as schema 2 left it
        conn.execute("DROP TABLE documents")
        conn.execute("DROP TABLE facts")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.get_conversation(A, CID) is not None
        now = utcnow()
        await store.put_document(A, KnowledgeDocument("d1", "", "text", {}), now)
        await store.put_facts(A, "ana", [UserFact("f1", "likes tea")], now, FactLimits(10, 10**6))
        assert [f.fact_id for f in await store.list_facts(A, "ana")] == ["f1"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert version == str(SCHEMA_VERSION) == "3"
