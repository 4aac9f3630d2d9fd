"""`make bench-state`: state_svc's append path against the raw database limit.

In one run, against the same MongoDB-wire server (FerretDB here, or MONGODB_URI):
- raw: PyMongo insert_many of the same documents, batch 50, CLIENTS concurrent writers;
- service: AppendEvents over gRPC to a state_svc process, batch 50, CLIENTS concurrent
  clients, each on its own conversation;
- latency: AppendEvents with batch 1 and batch 50 from a single client.
Prints JSON lines; the last one is the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern

from bench.servers import mongodb, state_service
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit.auth import mint_token
from voiceagent_backbone.servicekit.client import create_channel
from voiceagent_backbone.servicekit.ids import uuid7

TEXT = "I would like to move my appointment to Thursday afternoon if that works."


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def raw_doc(position: int, conversation: str, seq: int) -> dict[str, Any]:
    """The document state_svc stores for one event (same fields and sizes)."""
    now = datetime.now(UTC)
    return {
        "_id": f"{position:016d}",
        "tenant_id": "bench",
        "event_id": uuid7(),
        "conversation_id": conversation,
        "seq": seq,
        "type": "user_message",
        "role": "user",
        "text": TEXT,
        "payload": {},
        "client_time": now,
        "server_time": now,
        "participant_identity": "caller",
        "detail_kind": "",
        "detail": {},
        "user_ids": ["bench-user"],
    }


async def raw_inserts(uri: str, database: str, kind: str, clients: int, batches: int) -> float:
    w: int | str = 1 if kind == "ferretdb" else "majority"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    collection = client.get_database(database, write_concern=WriteConcern(w=w))["raw_events"]
    await collection.create_index([("tenant_id", 1), ("event_id", 1)], unique=True)
    await collection.create_index([("conversation_id", 1), ("seq", 1)], unique=True)
    counter = iter(range(1, 10**9))

    async def writer(index: int) -> None:
        conversation = f"raw-{index}"
        for b in range(batches):
            await collection.insert_many(
                [raw_doc(next(counter), conversation, b * 50 + i + 1) for i in range(50)]
            )

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(clients)))
    elapsed = time.perf_counter() - start
    await client.close()
    return clients * batches * 50 / elapsed


def batch(size: int) -> list[pb.Event]:
    return [
        pb.Event(
            event_id=uuid7(),
            type=pb.EVENT_TYPE_USER_MESSAGE,
            role=pb.ROLE_USER,
            text=TEXT,
            participant_identity="caller",
        )
        for _ in range(size)
    ]


async def service_appends(stub: Any, clients: int, batches: int) -> tuple[float, list[float]]:
    conversations = [
        (
            await stub.CreateConversation(
                pb.CreateConversationRequest(room_name=f"bench-{i}", user_ids=["bench-user"])
            )
        ).conversation.conversation_id
        for i in range(clients)
    ]
    latencies: list[float] = []

    async def writer(conversation: str) -> None:
        for _ in range(batches):
            t = time.perf_counter()
            await stub.AppendEvents(
                pb.AppendEventsRequest(conversation_id=conversation, events=batch(50))
            )
            latencies.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(writer(c) for c in conversations))
    elapsed = time.perf_counter() - start
    return clients * batches * 50 / elapsed, latencies


async def single_client_latency(stub: Any, size: int, calls: int) -> list[float]:
    conversation = (
        await stub.CreateConversation(pb.CreateConversationRequest(room_name=f"lat-{size}"))
    ).conversation.conversation_id
    latencies = []
    for _ in range(calls):
        t = time.perf_counter()
        await stub.AppendEvents(
            pb.AppendEventsRequest(conversation_id=conversation, events=batch(size))
        )
        latencies.append((time.perf_counter() - t) * 1000)
    return latencies


async def main(args: argparse.Namespace) -> None:
    key = secrets.token_urlsafe(32)
    token = mint_token(key, tenant="bench", scopes=["state.read", "state.write"], ttl_s=7200)
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        workdir = Path(tmp)
        with mongodb(workdir) as (uri, kind):
            database = f"bench_{uuid.uuid4().hex[:8]}"
            raw_eps = await raw_inserts(uri, database, kind, args.clients, args.batches)
            emit(
                {
                    "bench": "state",
                    "phase": "raw",
                    "backend": kind,
                    "raw_insert_eps": round(raw_eps),
                }
            )
            with state_service(workdir, key, uri, database, kind) as port:
                async with create_channel(f"127.0.0.1:{port}", token=lambda: token) as channel:
                    stub = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
                    await single_client_latency(stub, 1, 20)  # warm-up
                    service_eps, batch50_concurrent = await service_appends(
                        stub, args.clients, args.batches
                    )
                    emit(
                        {
                            "bench": "state",
                            "phase": "service",
                            "service_append_eps": round(service_eps),
                            "append_p50_ms_batch50_concurrent": round(
                                percentile(batch50_concurrent, 0.5), 2
                            ),
                        }
                    )
                    batch1 = await single_client_latency(stub, 1, args.latency_calls)
                    batch50 = await single_client_latency(
                        stub, 50, max(20, args.latency_calls // 5)
                    )
                    emit(
                        {
                            "bench": "state",
                            "phase": "latency",
                            "batch1_p50_ms": round(percentile(batch1, 0.5), 2),
                            "batch1_p99_ms": round(percentile(batch1, 0.99), 2),
                            "batch50_p99_ms": round(percentile(batch50, 0.99), 2),
                        }
                    )
            emit(
                {
                    "bench": "state",
                    "backend": kind,
                    "raw_insert_eps": round(raw_eps),
                    "service_append_eps": round(service_eps),
                    "ratio_service_vs_raw": round(service_eps / raw_eps, 3),
                    "append_p50_ms_batch1": round(percentile(batch1, 0.5), 2),
                    "append_p99_ms_batch1": round(percentile(batch1, 0.99), 2),
                    "append_p99_ms_batch50": round(percentile(batch50, 0.99), 2),
                    "clients": args.clients,
                }
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40, help="batches of 50 per client")
    parser.add_argument("--latency-calls", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
