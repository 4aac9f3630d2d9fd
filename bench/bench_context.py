"""`make bench-context`: context_svc's retrieval quality and latency, through the real path.

Mode `locomo` (DATASET=path/to/locomo-format.json):
1. start the database (FerretDB, MONGODB_URI, or state_svc's SQLite), state_svc and
   context_svc as processes;
2. store every session of every sample as a conversation through state_svc's API
   (speaker_a is the user, speaker_b the agent, the session date is the time of its turns,
   image captions are added to the text);
3. wait until context_svc has indexed every turn from the change feed;
4. call Enrich over gRPC for every question of categories 1-4, for that sample's user;
5. score evidence recall@k against the dia_ids of the returned memory items;
6. ask every adversarial question (category 5) and 40 unrelated ones ("What is the weather
   on Mars?") for each user, and count those answered with no context at all;
7. for choosing CONTEXT_MIN_RELEVANCE: replay the questions in this process through
   context_svc's own index without the floor, and report recall@10 and the unrelated
   questions answered empty at each candidate floor, with the relevance of the evidence
   found and of the unrelated questions' best candidates.

Mode `generated`: --turns generated turns over --users users, then Enrich latency for
--queries questions (with the machine's load average), and the index's memory (vector bytes
and process RSS). Then a second context_svc replica with an empty index file starts against
the stored turns: its time until it serves and until it has caught up with the feed (ready;
the limit is 60 s), and the embeddings both replicas computed per stored turn (1.0 when each
turn is embedded once for the deployment).

Mode `ingest`: context_svc alone ingests two documents of the largest size allowed
(512 KiB), one paragraph repeated and one of distinct generated prose, while another client
calls Enrich and the health check in a loop until every chunk is embedded. For each: the
time until IngestDocument answers and how many chunks were embedded by then, whether the
last passage is found right after the reply (by keyword: the rest is embedded in the
background), and the time until every chunk is embedded (GetIndexStatus.pending_chunks is
0), when the last passage is asked for again.

Prints JSON lines; the last one is the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.servers import context_service, free_port, mongodb, state_service
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2 as spb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.context_svc.embedding import Embedder, Vectors
from voiceagent_backbone.context_svc.index import Entry, Hit, Index, Source
from voiceagent_backbone.context_svc.lexical import analyze
from voiceagent_backbone.context_svc.render import date_label
from voiceagent_backbone.context_svc.service import make_embedder
from voiceagent_backbone.servicekit.auth import mint_token
from voiceagent_backbone.servicekit.client import create_channel
from voiceagent_backbone.servicekit.ids import uuid7

TENANT = "bench"
ENRICH_DEADLINE_S = 5.0


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timestamp(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def user_id_for(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:@+\-]", "_", ":".join(parts))[:128]


class Clients:
    def __init__(self, state_port: int, context_port: int, key: str) -> None:
        token = mint_token(
            key,
            tenant=TENANT,
            scopes=["state.write", "state.read", "context.read", "context.write"],
            ttl_s=24 * 3600,
        )
        self.state_channel = create_channel(f"127.0.0.1:{state_port}", token=lambda: token)
        self.context_channel = create_channel(f"127.0.0.1:{context_port}", token=lambda: token)
        self.state = state_pb2_grpc.StateServiceStub(self.state_channel)  # type: ignore[no-untyped-call]
        self.context = context_pb2_grpc.ContextServiceStub(self.context_channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self.state_channel.close(None)
        await self.context_channel.close(None)


# -- ingest -------------------------------------------------------------------------------


async def store_conversation(
    clients: Clients, user_id: str, room: str, turns: list[tuple[str, bool, str, datetime]]
) -> tuple[str, list[str]]:
    """turns: (speaker, is_user, text, time). Returns (conversation id, event ids)."""
    created = await clients.state.CreateConversation(
        spb.CreateConversationRequest(
            conversation_id=str(uuid.uuid4()),
            room_name=room,
            user_ids=[user_id],
            participant_identities=sorted({t[0] for t in turns}),
        )
    )
    conversation_id = created.conversation.conversation_id
    event_ids: list[str] = []
    for start in range(0, len(turns), 200):
        events = []
        for speaker, is_user, text, at in turns[start : start + 200]:
            event_id = uuid7()
            event_ids.append(event_id)
            events.append(
                spb.Event(
                    event_id=event_id,
                    type=spb.EVENT_TYPE_USER_MESSAGE if is_user else spb.EVENT_TYPE_AGENT_MESSAGE,
                    role=spb.ROLE_USER if is_user else spb.ROLE_AGENT,
                    text=text,
                    participant_identity=speaker,
                    client_time=timestamp(at),
                )
            )
        await clients.state.AppendEvents(
            spb.AppendEventsRequest(conversation_id=conversation_id, events=events)
        )
    await clients.state.EndConversation(
        spb.EndConversationRequest(conversation_id=conversation_id, reason="bench")
    )
    return conversation_id, event_ids


async def wait_indexed(clients: Clients, expected: int, timeout_s: float) -> float:
    started = time.monotonic()
    last_report = started
    while True:
        status = await clients.context.GetIndexStatus(cpb.GetIndexStatusRequest())
        if status.indexed_turns >= expected and status.lag_events == 0:
            return time.monotonic()
        now = time.monotonic()
        if now - started > timeout_s:
            raise SystemExit(
                f"context_svc indexed {status.indexed_turns} of {expected} turns "
                f"within {timeout_s}s"
            )
        if now - last_report > 30:
            emit(
                {
                    "progress": "indexing",
                    "indexed_turns": status.indexed_turns,
                    "expected": expected,
                    "lag_events": status.lag_events,
                }
            )
            last_report = now
        await asyncio.sleep(0.2)


def session_time(text: str) -> datetime:
    return datetime.strptime(text, "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


async def run_locomo(clients: Clients, samples: list[dict[str, Any]]) -> dict[str, Any]:
    dia_of_event: dict[str, str] = {}
    users: list[str] = []
    last_conversation: list[str] = []
    total = 0
    started = time.monotonic()
    for sample in samples:
        conv = sample["conversation"]
        user = user_id_for(TENANT, sample.get("sample_id", str(len(users))), conv["speaker_a"])
        users.append(user)
        conversation_id = ""
        for n in session_numbers(conv):
            turns = session_turns(conv, n)
            conversation_id, event_ids = await store_conversation(
                clients, user, f"{user}-session-{n}", turns
            )
            for turn, event_id in zip(conv[f"session_{n}"], event_ids, strict=True):
                dia_of_event[event_id] = turn["dia_id"]
            total += len(turns)
        last_conversation.append(conversation_id)
    ingested = time.monotonic()
    emit({"phase": "ingest", "turns": total, "seconds": round(ingested - started, 2)})
    indexed = await wait_indexed(clients, total, 1800)
    index_build_s = indexed - started

    ks = (5, 10, 20)
    recalls: dict[int, list[float]] = {k: [] for k in ks}
    latencies: list[float] = []
    load_before = os.getloadavg()[0]
    for sample, user, conversation_id in zip(samples, users, last_conversation, strict=True):
        for qa in sample["qa"]:
            if qa.get("category") not in (1, 2, 3, 4) or not qa.get("evidence"):
                continue
            t0 = time.perf_counter()
            reply = await clients.context.Enrich(
                cpb.EnrichRequest(
                    user_id=user,
                    conversation_id=conversation_id,
                    text=qa["question"],
                    max_items=max(ks),
                    token_budget=32000,
                    sources=[cpb.SOURCE_KIND_MEMORY],
                ),
                timeout=ENRICH_DEADLINE_S,
            )
            latencies.append((time.perf_counter() - t0) * 1000)
            found = [dia_of_event.get(item.event_id, "") for item in reply.items]
            evidence = set(qa["evidence"])
            for k in ks:
                recalls[k].append(len(evidence & set(found[:k])) / len(evidence))
    summary: dict[str, Any] = {
        "bench": "context",
        "questions": len(latencies),
        "recall_at_5": round(sum(recalls[5]) / len(recalls[5]), 4),
        "recall_at_10": round(sum(recalls[10]) / len(recalls[10]), 4),
        "recall_at_20": round(sum(recalls[20]) / len(recalls[20]), 4),
        "enrich_p50_ms": round(percentile(latencies, 0.50), 2),
        "enrich_p95_ms": round(percentile(latencies, 0.95), 2),
        "enrich_p99_ms": round(percentile(latencies, 0.99), 2),
        "enrich_p95_limit_ms": 15,
        # The machine's 1-minute load average when the queries began and ended (2 cores).
        "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "indexed_turns": total,
        "index_build_s": round(index_build_s, 2),
    }
    summary.update(await answered_empty(clients, samples, users, last_conversation))
    summary.update(await asyncio.to_thread(floor_table, samples, summary["recall_at_10"]))
    return summary


def session_turns(conv: dict[str, Any], n: int) -> list[tuple[str, bool, str, datetime]]:
    """(speaker, is the user, text, time) of session n: speaker_a is the user, the session
    date is the time of its turns (a second apart), image captions are added to the text."""
    at = session_time(conv[f"session_{n}_date_time"])
    turns = []
    for i, turn in enumerate(conv[f"session_{n}"]):
        text = turn["text"]
        if turn.get("blip_caption"):
            text = f"{text} [shares a photo: {turn['blip_caption']}]"
        turns.append(
            (turn["speaker"], turn["speaker"] == conv["speaker_a"], text, at + timedelta(seconds=i))
        )
    return turns


def session_numbers(conv: dict[str, Any]) -> list[int]:
    return sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k) and conv[k])


# Questions no LoCoMo conversation answers, asked of every user. Written before measuring;
# the first 20 chose index.COVERAGE_SHARE, the other 20 were held out and agreed.
UNRELATED_QUESTIONS = [
    "What is the weather on Mars?",
    "What is the capital of Australia?",
    "How do I reset my wifi router?",
    "What is seventeen times twenty-three?",
    "Who won the football world cup in 1998?",
    "How far is the moon from the earth?",
    "What is the boiling point of mercury?",
    "How do I file my quarterly VAT return?",
    "Which programming language is best for microcontrollers?",
    "What is the population of Tokyo?",
    "How many bones are in the human body?",
    "What does a mortgage broker charge?",
    "When does the next bus to the airport leave?",
    "How do I convert Celsius to Fahrenheit?",
    "What is the speed of light in a vacuum?",
    "Can you explain how a blockchain works?",
    "What is the chemical formula of table salt?",
    "How do I change a flat tyre on a truck?",
    "Who wrote the theory of general relativity?",
    "What time does the pharmacy close today?",
    "How tall is Mount Everest?",
    "What is the exchange rate of the yen to the euro?",
    "Which planet has the most moons?",
    "How do I unclog a kitchen sink?",
    "What is the square root of 144?",
    "Who invented the telephone?",
    "What is the atomic number of carbon?",
    "How long should I boil an egg?",
    "What is the best way to learn Python decorators?",
    "When was the Eiffel Tower built?",
    "How many players are on a rugby team?",
    "What is the current interest rate on savings bonds?",
    "Where is the nearest petrol station?",
    "How do I renew a driving licence?",
    "What causes the northern lights?",
    "Translate good morning into Japanese.",
    "What is the difference between TCP and UDP?",
    "How much does a kilo of copper cost?",
    "Which ocean is the deepest?",
    "What is the half-life of uranium-238?",
]
# Candidate floors in the summary's table.
FLOORS = [round(0.15 + 0.01 * i, 2) for i in range(18)]


async def answered_empty(
    clients: Clients, samples: list[dict[str, Any]], users: list[str], conversations: list[str]
) -> dict[str, Any]:
    """Through context_svc, with its floor: the share of unrelated and of adversarial
    (category 5) questions answered with no item and no context block."""
    empty = {"unrelated": [0, 0], "adversarial": [0, 0]}
    for sample, user, conversation_id in zip(samples, users, conversations, strict=True):
        asked = [("unrelated", q) for q in UNRELATED_QUESTIONS] + [
            ("adversarial", qa["question"]) for qa in sample["qa"] if qa.get("category") == 5
        ]
        for kind, question in asked:
            reply = await clients.context.Enrich(
                cpb.EnrichRequest(
                    user_id=user,
                    conversation_id=conversation_id,
                    text=question,
                    max_items=10,
                    sources=[cpb.SOURCE_KIND_MEMORY],
                ),
                timeout=ENRICH_DEADLINE_S,
            )
            empty[kind][0] += not reply.items and not reply.context_block
            empty[kind][1] += 1
    return {
        f"{kind}_answered_empty": round(n / total, 4) if total else None
        for kind, (n, total) in empty.items()
    }


def floor_table(samples: list[dict[str, Any]], recall_at_10: float) -> dict[str, Any]:
    """The questions replayed in this process through context_svc's index without a floor:
    recall@10 without it, and for each candidate floor recall@10 and the share of unrelated
    and adversarial questions left with nothing (the floor is applied before the ten best
    are taken, as Index.search does, so a floor can also let evidence from further down in).
    The index is built as context_svc builds it from the feed (domain.apply_feed: BM25 over
    date, turn before and turn; the model over "[date] speaker: text"), with the service's
    settings from the environment; `recall_at_10_replayed_with_floor` should equal the
    service's own `recall_at_10` (if not, this replay no longer mirrors the service)."""
    settings = ContextSettings()
    embedder = make_embedder(settings)
    evidence: list[tuple[set[str], list[Hit]]] = []
    unrelated: list[list[Hit]] = []
    adversarial: list[list[Hit]] = []
    for number, sample in enumerate(samples):
        conv = sample["conversation"]
        key = (TENANT, Source.MEMORY, f"user-{number}")
        entries: list[tuple[Entry, list[str], str]] = []
        for n in session_numbers(conv):
            previous = ""
            for turn, (speaker, _, text, at) in zip(
                conv[f"session_{n}"], session_turns(conv, n), strict=True
            ):
                at_us = int(at.timestamp() * 1_000_000)
                date = date_label(at_us)
                entry = Entry(
                    key=turn["dia_id"], source=Source.MEMORY, text=text, occurred_at_us=at_us
                )
                terms = analyze(f"{date} {previous} {speaker}: {text}")
                entries.append((entry, terms, f"[{date}] {speaker}: {text}"))
                previous = text
        vectors = embed_all(embedder, [embed_text for _, _, embed_text in entries])
        index = Index(embedder.dim)
        for (entry, terms, _), vector in zip(entries, vectors, strict=True):
            index.add(key, entry, terms, vector)
        asked = [(qa, qa["question"]) for qa in sample["qa"]]
        asked += [(None, question) for question in UNRELATED_QUESTIONS]
        query_vectors = embed_all(embedder, [question for _, question in asked])
        for (qa, question), vector in zip(asked, query_vectors, strict=True):
            hits = index.search([key], analyze(question), vector, 10_000, settings.lexical_weight)
            if qa is None:
                unrelated.append(hits)
            elif qa.get("category") == 5:
                adversarial.append(hits)
            elif qa.get("category") in (1, 2, 3, 4) and qa.get("evidence"):
                evidence.append((set(qa["evidence"]), hits))

    def kept(hits: list[Hit], floor: float) -> list[Hit]:
        # As Index.search: a floor of 0 is none (a relevance may be below 0).
        return [h for h in hits if h.relevance >= floor] if floor > 0 else hits

    def recall(floor: float) -> float:
        shares = []
        for wanted, hits in evidence:
            top = {h.entry.key for h in kept(hits, floor)[:10]}
            shares.append(len(wanted & top) / len(wanted))
        return round(sum(shares) / len(shares), 4)

    def left_empty(questions: list[list[Hit]], floor: float) -> float:
        empty = sum(1 for hits in questions if not kept(hits, floor))
        return round(empty / len(questions), 4) if questions else 0.0

    def best(questions: list[list[Hit]]) -> list[float]:
        return [max((h.relevance for h in hits), default=0.0) for hits in questions]

    def pcts(values: list[float], qs: tuple[float, ...]) -> list[float]:
        return [round(percentile(values, q), 3) for q in qs] if values else []

    found_relevance = [
        h.relevance for wanted, hits in evidence for h in hits[:10] if h.entry.key in wanted
    ]
    floor = settings.min_relevance
    return {
        "min_relevance": floor,
        "recall_at_10_no_floor": recall(0.0),
        "recall_at_10_replayed_with_floor": recall(floor),
        # The floor must not cost recall: the service's recall@10 with it against none.
        "recall_at_10_kept": recall_at_10 >= recall(0.0),
        # floor: [recall@10, unrelated answered empty, adversarial answered empty]
        "floors": {
            f"{f:.2f}": [recall(f), left_empty(unrelated, f), left_empty(adversarial, f)]
            for f in FLOORS
        },
        "evidence_relevance_p1_p5_p50": pcts(found_relevance, (0.01, 0.05, 0.5)),
        "unrelated_best_relevance_p50_p95_max": pcts(best(unrelated), (0.5, 0.95, 1.0)),
        "adversarial_best_relevance_p5_p50": pcts(best(adversarial), (0.05, 0.5)),
    }


def embed_all(embedder: Embedder, texts: list[str]) -> Vectors:
    """Rows in the order of `texts`, embedded in batches of similar length (as the service)."""
    out = np.zeros((len(texts), embedder.dim), np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), 16):
        rows = order[start : start + 16]
        out[rows] = embedder.embed([texts[i] for i in rows])
    return out


# -- generated ------------------------------------------------------------------------------

SUBJECTS = [
    "my sister",
    "my manager",
    "the dentist",
    "our landlord",
    "my son",
    "the bank",
    "my doctor",
    "the airline",
    "my neighbour",
    "the school",
    "my trainer",
    "the vet",
]
VERBS = [
    "moved",
    "cancelled",
    "booked",
    "changed",
    "asked about",
    "paid for",
    "forgot",
    "rescheduled",
    "complained about",
    "signed up for",
    "picked up",
    "sent back",
]
OBJECTS = [
    "the appointment",
    "a flight to Lisbon",
    "the yoga class",
    "my insurance claim",
    "the birthday dinner",
    "a new laptop",
    "the car repair",
    "the piano lessons",
    "the hotel in Kyoto",
    "my passport renewal",
    "the concert tickets",
    "a hiking trip",
    "the electricity bill",
    "the gym membership",
    "a vegetarian cooking course",
]
WHEN = [
    "yesterday",
    "last Tuesday",
    "this morning",
    "next week",
    "on Friday",
    "in March",
    "after lunch",
    "two days ago",
    "before the holidays",
    "tomorrow evening",
]
REPLIES = [
    "That sounds stressful, do you want me to set a reminder?",
    "Got it. I noted that for you.",
    "Would you like me to check the times again?",
    "I can help you draft a message about that.",
    "Okay, anything else I should know?",
]


def generated_turn(rng: random.Random) -> tuple[str, str]:
    user = (
        f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
        f"{rng.choice(WHEN)}, and I need to sort it out."
    )
    return user, rng.choice(REPLIES)


async def run_generated(
    clients: Clients,
    turns: int,
    users: int,
    queries: int,
    context_pid: int,
    metrics_port: int,
    per_conversation: int = 100,
) -> dict[str, Any]:
    baseline_kib = rss_of(context_pid)  # the model loaded, the index empty
    rng = random.Random(7)
    user_ids = [user_id_for(TENANT, "user", str(i)) for i in range(users)]
    conversations = max(1, turns // per_conversation)
    started = time.monotonic()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    semaphore = asyncio.Semaphore(8)
    last: dict[str, str] = {}

    async def one(i: int) -> None:
        user = user_ids[i % users]
        pairs = [generated_turn(rng) for _ in range(per_conversation // 2)]
        at = base + timedelta(days=i % 300)
        rows = []
        for j, (said, reply) in enumerate(pairs):
            rows.append(("User", True, said, at + timedelta(seconds=2 * j)))
            rows.append(("Agent", False, reply, at + timedelta(seconds=2 * j + 1)))
        async with semaphore:
            conversation_id, _ = await store_conversation(clients, user, f"gen-{i}", rows)
        last[user] = conversation_id

    await asyncio.gather(*(one(i) for i in range(conversations)))
    total = conversations * per_conversation
    emit({"phase": "ingest", "turns": total, "seconds": round(time.monotonic() - started, 2)})
    indexed = await wait_indexed(clients, total, 3 * 3600)
    index_build_s = indexed - started
    await asyncio.sleep(1)
    latencies: list[float] = []
    load_before = os.getloadavg()[0]
    for _ in range(queries):
        user = rng.choice(user_ids)
        question = f"When did {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}?"
        t0 = time.perf_counter()
        await clients.context.Enrich(
            cpb.EnrichRequest(
                user_id=user,
                conversation_id=last.get(user, ""),
                text=question,
                max_items=8,
                token_budget=512,
            ),
            timeout=ENRICH_DEADLINE_S,
        )
        latencies.append((time.perf_counter() - t0) * 1000)
    rss_kib = rss_of(context_pid)
    vector_bytes = scrape_gauge(metrics_port, "context_index_vector_bytes")
    return {
        "bench": "context_generated",
        "queries": len(latencies),
        "users": users,
        "enrich_p50_ms": round(percentile(latencies, 0.50), 2),
        "enrich_p95_ms": round(percentile(latencies, 0.95), 2),
        "enrich_p99_ms": round(percentile(latencies, 0.99), 2),
        "enrich_p95_limit_ms": 15,
        # The machine's 1-minute load average when the queries began and ended (2 cores).
        "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "indexed_turns": total,
        "index_build_s": round(index_build_s, 2),
        "index_arrays_mib": round(vector_bytes / 2**20, 1),
        "context_svc_rss_empty_mib": round(baseline_kib / 1024, 1),
        "context_svc_rss_mib": round(rss_kib / 1024, 1),
    }


# -- mode ingest ------------------------------------------------------------------------

DOCUMENT_BYTES = 512 * 1024  # context_svc's default CONTEXT_MAX_DOCUMENT_BYTES
FILLER = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat."
)
LAST_PASSAGE = (
    "Lost badges. A lost staff badge is replaced at the security desk on level minus two, "
    "for a fee of fifteen euros, on weekdays between nine and eleven."
)
LAST_QUESTION = "where do I get a new staff badge after losing mine?"
PROBE_INTERVAL_S = 0.05


def document_of(paragraph: Callable[[], str]) -> str:
    """Paragraphs up to DOCUMENT_BYTES, the last one LAST_PASSAGE."""
    parts: list[str] = []
    size = len(LAST_PASSAGE.encode())
    while True:
        text = paragraph()
        if size + len(text.encode()) + 2 > DOCUMENT_BYTES:
            break
        parts.append(text)
        size += len(text.encode()) + 2
    return "\n\n".join([*parts, LAST_PASSAGE])


def distinct_paragraph(rng: random.Random) -> str:
    """Generated prose whose chunks all differ (each must be embedded)."""
    sentences = []
    for _ in range(rng.randint(3, 8)):
        user, _ = generated_turn(rng)
        sentences.append(f"{user} Case {rng.randint(1000, 99999)} is {rng.choice(WHEN)}.")
    return " ".join(sentences)


@dataclass
class Probes:
    """What a client sees of context_svc while something else runs: Enrich and health-check
    latencies (ms), and the process's memory (not its peak since start: building the
    model's graph at start-up is that)."""

    pid: int
    enrich_ms: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    partial: int = 0
    rss_kib: list[int] = field(default_factory=list)


async def probe_until(stub: Any, health: Any, done: asyncio.Event, probes: Probes) -> None:
    while not done.is_set():
        probes.rss_kib.append(rss_of(probes.pid))
        t0 = time.perf_counter()
        reply = await stub.Enrich(
            cpb.EnrichRequest(text="opening hours of the clinic", user_id="probe"),
            timeout=ENRICH_DEADLINE_S,
        )
        probes.enrich_ms.append((time.perf_counter() - t0) * 1000)
        probes.partial += reply.partial
        t0 = time.perf_counter()
        await health.Check(health_pb2.HealthCheckRequest(), timeout=ENRICH_DEADLINE_S)
        probes.health_ms.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(PROBE_INTERVAL_S)


async def last_passage_rank(stub: Any, name: str) -> int | None:
    found = await stub.Enrich(
        cpb.EnrichRequest(text=LAST_QUESTION, user_id="reader", max_items=10),
        timeout=ENRICH_DEADLINE_S,
    )
    return next(
        (
            i + 1
            for i, item in enumerate(found.items)
            if item.document_id == name and "security desk" in item.text
        ),
        None,
    )


async def ingest_one(
    stub: Any, health: Any, name: str, text: str, probes: Probes
) -> dict[str, Any]:
    done = asyncio.Event()
    prober = asyncio.create_task(probe_until(stub, health, done, probes))
    started = time.perf_counter()
    try:
        reply = await stub.IngestDocument(
            cpb.IngestDocumentRequest(document=cpb.Document(document_id=name, text=text)),
            timeout=3600,
        )
        reply_s = time.perf_counter() - started
        rank_at_reply = await last_passage_rank(stub, name)
        while True:
            status = await stub.GetIndexStatus(cpb.GetIndexStatusRequest())
            if status.pending_chunks == 0:
                break
            await asyncio.sleep(0.1)
        embedded_s = time.perf_counter() - started
    finally:
        done.set()
        await prober
    record = {
        "document": name,
        "bytes": len(text.encode()),
        "chunks": reply.document.chunk_count,
        "embedded_at_reply": reply.document.embedded_chunks,
        "reply_s": round(reply_s, 2),
        "embedded_s": round(embedded_s, 2),
        "last_passage_rank_at_reply": rank_at_reply,
        "last_passage_rank": await last_passage_rank(stub, name),
    }
    emit(record)
    return record


async def run_ingest(context_port: int, key: str, context_pid: int) -> dict[str, Any]:
    token = mint_token(key, tenant=TENANT, scopes=["context.read", "context.write"])
    channel = create_channel(
        f"127.0.0.1:{context_port}", token=lambda: token, max_message_bytes=DOCUMENT_BYTES * 2
    )
    stub = context_pb2_grpc.ContextServiceStub(channel)  # type: ignore[no-untyped-call]
    health = health_pb2_grpc.HealthStub(channel)
    try:
        await stub.IngestDocument(
            cpb.IngestDocumentRequest(
                document=cpb.Document(document_id="hours", text="The clinic opens at 8am.")
            )
        )
        baseline_kib = rss_of(context_pid)
        rng = random.Random(11)
        probes = Probes(context_pid)
        repeated = await ingest_one(stub, health, "repeated", document_of(lambda: FILLER), probes)
        distinct = await ingest_one(
            stub, health, "distinct", document_of(lambda: distinct_paragraph(rng)), probes
        )
    finally:
        await channel.close(None)
    return {
        "bench": "context_ingest",
        "document_bytes": DOCUMENT_BYTES,
        "repeated_reply_s": repeated["reply_s"],
        "repeated_embedded_s": repeated["embedded_s"],
        "repeated_chunks": repeated["chunks"],
        "distinct_reply_s": distinct["reply_s"],
        "distinct_embedded_at_reply": distinct["embedded_at_reply"],
        "distinct_embedded_s": distinct["embedded_s"],
        "distinct_chunks": distinct["chunks"],
        "distinct_ms_per_chunk": round(1000 * distinct["embedded_s"] / distinct["chunks"], 1),
        "last_passage_found_at_reply": bool(
            repeated["last_passage_rank_at_reply"] and distinct["last_passage_rank_at_reply"]
        ),
        "last_passage_found": bool(repeated["last_passage_rank"] and distinct["last_passage_rank"]),
        "enrich_during_ingest_p50_ms": round(percentile(probes.enrich_ms, 0.50), 1),
        "enrich_during_ingest_p99_ms": round(percentile(probes.enrich_ms, 0.99), 1),
        "enrich_during_ingest_partial": probes.partial,
        "health_during_ingest_max_ms": round(max(probes.health_ms), 1),
        "context_svc_rss_before_mib": round(baseline_kib / 1024, 1),
        "context_svc_rss_during_ingest_max_mib": round(max(probes.rss_kib) / 1024, 1),
    }


def scrape_gauge(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def scrape_counter(port: int, name: str, labels: str) -> float:
    """The value of one labelled sample of a Prometheus counter (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def rss_of(pid: int) -> int:
    """Resident memory of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def database(backend: str, workdir: Path) -> Iterator[tuple[str | None, str]]:
    if backend == "sqlite":
        yield None, "sqlite"
        return
    with mongodb(workdir) as (uri, kind):
        yield uri, kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["locomo", "generated", "ingest"], default="locomo")
    parser.add_argument(
        "--dataset", type=Path, default=Path("../shared/datasets/locomo-dev/locomo-dev.json")
    )
    parser.add_argument(
        "--backend",
        choices=["ferretdb", "sqlite"],
        default="ferretdb",
        help="state_svc's store (ferretdb means MONGODB_URI when that is set)",
    )
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    if args.mode == "locomo" and not args.dataset.exists():
        raise SystemExit(f"dataset not found: {args.dataset} (pass DATASET=path)")
    if args.mode == "ingest":
        bench_ingest()
    else:
        bench_with_state(args)


def bench_ingest() -> None:
    """context_svc alone: knowledge needs no state_svc (the feed is off)."""
    key = secrets.token_urlsafe(32)
    with (
        tempfile.TemporaryDirectory(prefix="bench-context-") as tmp,
        context_service(Path(tmp), key, free_port(), {"CONTEXT_FOLLOW_FEED": "false"}) as (
            context_port,
            proc,
        ),
    ):
        emit({"phase": "start", "mode": "ingest"})

        async def run() -> dict[str, Any]:
            try:
                return await run_ingest(context_port, key, proc.pid)
            except grpc.aio.AioRpcError as exc:
                raise SystemExit(f"{exc.code().name}: {exc.details()}") from exc

        emit(asyncio.run(run()))


def bench_with_state(args: argparse.Namespace) -> None:
    key = secrets.token_urlsafe(32)
    metrics_port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-context-") as tmp:
        workdir = Path(tmp)
        with (
            database(args.backend, workdir) as (uri, kind),
            state_service(workdir, key, uri, f"bench_{uuid.uuid4().hex[:8]}", kind) as state_port,
            context_service(
                workdir, key, state_port, {"CONTEXT_METRICS_PORT": str(metrics_port)}
            ) as (context_port, proc),
        ):
            emit({"phase": "start", "mode": args.mode, "backend": kind})

            async def run() -> dict[str, Any]:
                clients = Clients(state_port, context_port, key)
                try:
                    if args.mode == "locomo":
                        return await run_locomo(clients, json.loads(args.dataset.read_text()))
                    return await run_generated(
                        clients, args.turns, args.users, args.queries, proc.pid, metrics_port
                    )
                except grpc.aio.AioRpcError as exc:
                    raise SystemExit(f"{exc.code().name}: {exc.details()}") from exc
                finally:
                    await clients.close()

            summary = asyncio.run(run())
            if args.mode == "generated":
                summary.update(second_replica(workdir, key, state_port, metrics_port, summary))
            emit(summary)


def second_replica(
    workdir: Path, key: str, state_port: int, first_metrics_port: int, first: dict[str, Any]
) -> dict[str, Any]:
    """A new context_svc replica (an empty index file) started against the stored turns:
    the time until it has caught up with the feed, and the embeddings both replicas
    computed per stored turn (1.0: every turn embedded once for the deployment)."""
    turns = int(first["indexed_turns"])
    metrics_port = free_port()
    replica_dir = workdir / "replica-2"
    replica_dir.mkdir()
    started = time.monotonic()
    with context_service(
        replica_dir, key, state_port, {"CONTEXT_METRICS_PORT": str(metrics_port)}
    ) as (port, _proc):
        serving_s = time.monotonic() - started

        async def caught_up() -> float:
            clients = Clients(state_port, port, key)
            try:
                return await wait_indexed(clients, turns, 600) - started
            finally:
                await clients.close()

        ready_s = asyncio.run(caught_up())
        computed = sum(
            scrape_counter(m, "context_shared_vectors_total", 'outcome="computed"')
            for m in (first_metrics_port, metrics_port)
        )
        loaded = scrape_counter(metrics_port, "context_shared_vectors_total", 'outcome="loaded"')
        second_embedded = scrape_counter(metrics_port, "context_embeddings_total", 'path="index"')
    return {
        "new_replica_serving_s": round(serving_s, 2),
        "new_replica_ready_s": round(ready_s, 2),
        "new_replica_ready_limit_s": 60,
        "new_replica_vectors_loaded": int(loaded),
        "new_replica_texts_embedded": int(second_embedded),
        "embeddings_per_turn_2_replicas": round(computed / turns, 4) if turns else None,
    }


if __name__ == "__main__":
    main()
