"""The optional OpenAI embedding backend, against a fake that speaks the embeddings API on
loopback (the real API needs the internet)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from pydantic import SecretStr, ValidationError

from tests.support.context import context_settings, running_context, sqlite_state
from tests.support.state import StateHandle
from voiceagent_backbone.api.context.v1 import context_pb2 as pb
from voiceagent_backbone.context_svc.config import ContextSettings

DIMS = 64


def bag_of_words(text: str) -> list[float]:
    vector = np.zeros(DIMS, np.float32)
    for word in text.lower().replace(".", " ").replace("?", " ").split():
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMS] += 1.0
    return [float(x) for x in vector]


class FakeEmbeddings:
    """POST /v1/embeddings as OpenAI answers it; records requests; can be made to fail."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(
                    {"path": self.path, "auth": self.headers["Authorization"], **body}
                )
                if fake.fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                answer = {
                    "object": "list",
                    "model": body["model"],
                    "data": [
                        {"object": "embedding", "index": i, "embedding": bag_of_words(text)}
                        for i, text in enumerate(body["input"])
                    ],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
                raw = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def fake_openai() -> Iterator[FakeEmbeddings]:
    fake = FakeEmbeddings()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        thread.join(5)


@pytest.fixture
async def state(tmp_path: Path, jwt_key: str) -> AsyncIterator[StateHandle]:
    async with sqlite_state(tmp_path / "state", jwt_key) as handle:
        yield handle


async def test_openai_backend_embeds_and_fails_open(
    tmp_path: Path, jwt_key: str, fake_openai: FakeEmbeddings, state: StateHandle
) -> None:
    settings = context_settings(
        tmp_path,
        jwt_key,
        state.port,
        follow_feed=False,
        embedding_backend="openai",
        openai_base_url=fake_openai.url,
        openai_api_key=SecretStr("sk-test"),
        openai_embedding_dimensions=DIMS,
        openai_timeout_s=2,
    )
    async with running_context(settings, jwt_key) as ctx:
        stub, md = ctx.stub(), ctx.metadata()
        await stub.UpsertFacts(
            pb.UpsertFactsRequest(
                user_id="ana",
                facts=[
                    pb.Fact(fact_id="diet", text="Ana is vegetarian."),
                    pb.Fact(fact_id="call", text="Ana prefers calls in the evening."),
                ],
            ),
            metadata=md,
        )
        first = fake_openai.requests[0]
        assert first["path"] == "/v1/embeddings"
        assert first["auth"] == "Bearer sk-test"
        assert first["model"] == "text-embedding-3-small"
        assert first["dimensions"] == DIMS
        assert sorted(first["input"]) == ["Ana is vegetarian.", "Ana prefers calls in the evening."]

        reply = await ctx.enrich("is ana vegetarian?", "ana")
        assert reply.items[0].fact_id == "diet"
        assert not reply.partial
        assert fake_openai.requests[-1]["input"] == ["is ana vegetarian?"]

        fake_openai.fail = True
        degraded = await ctx.enrich("is ana vegetarian?", "ana")
        assert degraded.partial  # lexical ranking only, still an answer
        assert degraded.items[0].fact_id == "diet"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpsertFacts(
                pb.UpsertFactsRequest(user_id="ana", facts=[pb.Fact(text="Ana has a cat.")]),
                metadata=md,
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        listed = await stub.ListFacts(pb.ListFactsRequest(user_id="ana"), metadata=md)
        assert len(listed.facts) == 2


def test_openai_backend_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CONTEXT_OPENAI_API_KEY"):
        ContextSettings(embedding_backend="openai", index_path=tmp_path / "x.sqlite3")
