"""Least-privilege credentials: services verify with public keys only (a key set in a file,
re-read for rotation, or at a URL like the cluster's), and identities without tenant claims
(service-account tokens) get exactly the tenant and scopes granted to their subject."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import empty_pb2, struct_pb2

from tests.support import probe_service
from tests.support.rpc import bearer, probe_call
from voiceagent_backbone.servicekit import keygen, server, token
from voiceagent_backbone.servicekit.auth import TokenFile, mint_token
from voiceagent_backbone.servicekit.config import ConfigurationError, Grant
from voiceagent_backbone.servicekit.signing import generate_private_key, public_jwk

AGENT_SA = "system:serviceaccount:voice:agent-acme"


def new_key(tmp: Path, jwks: Path, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    """A key made with the keygen CLI; its key id."""
    assert keygen.main(["--jwks", str(jwks), "--private-key", str(tmp / name)]) == 0
    return capsys.readouterr().out.strip()


def cli_token(key: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert (
        token.main(["--tenant", "acme", "--scopes", "probe.read", "--key-file", str(key), *extra])
        == 0
    )
    return capsys.readouterr().out.strip()


@contextlib.asynccontextmanager
async def probe(**settings: Any) -> AsyncIterator[grpc.aio.Channel]:
    config = probe_service.ProbeSettings(port=0, metrics_port=-1, grace_period_s=1, **settings)
    async with (
        server.running(config, probe_service.definition()) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield channel


async def whoami(channel: grpc.aio.Channel, token_text: str) -> dict[str, Any]:
    call = probe_call(channel, "Whoami", struct_pb2.Struct)
    reply = await call(empty_pb2.Empty(), metadata=bearer(token_text))
    return {"tenant": reply["tenant"], "scopes": sorted(reply["scopes"])}


async def refused(channel: grpc.aio.Channel, token_text: str) -> str:
    call = probe_call(channel, "Whoami", struct_pb2.Struct)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(empty_pb2.Empty(), metadata=bearer(token_text))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return info.value.details() or ""


async def test_key_set_file_verifies_and_rotates_without_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = tmp_path / "jwks.json"
    first = new_key(tmp_path, jwks, "first.pem", capsys)
    async with probe(auth_jwks_file=jwks) as channel:
        old = cli_token(tmp_path / "first.pem", capsys)
        assert jwt.get_unverified_header(old)["kid"] == first
        assert await whoami(channel, old) == {"tenant": "acme", "scopes": ["probe.read"]}

        # Rotation: the new key joins the set, the running service takes it.
        second = new_key(tmp_path, jwks, "second.pem", capsys)
        new = cli_token(tmp_path / "second.pem", capsys)
        assert (await whoami(channel, new))["tenant"] == "acme"
        assert await whoami(channel, old)

        # The old key retired: its tokens are refused from then on.
        # "=": a key id may begin with "-", which argparse would read as an option.
        assert keygen.main(["--jwks", str(jwks), f"--retire={first}"]) == 0
        assert "unknown key" in await refused(channel, old)
        assert (await whoami(channel, new))["tenant"] == "acme"
        assert [k["kid"] for k in json.loads(jwks.read_text())["keys"]] == [second]


async def test_holding_the_public_keys_does_not_let_anyone_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = tmp_path / "jwks.json"
    kid = new_key(tmp_path, jwks, "issuer.pem", capsys)
    public = json.loads(jwks.read_text())["keys"][0]
    claims = {"tenant": "acme", "scope": "probe.read", "exp": int(time.time()) + 60}
    other = generate_private_key("ES256").decode()
    async with probe(auth_jwks_file=jwks) as channel:
        forgeries = [
            # HS256 "signed" with the published key material (algorithm confusion).
            hs256(claims, json.dumps(public).encode(), kid),
            hs256(claims, jwks.read_bytes(), kid),
            # Another key claiming the issuer's key id.
            jwt.encode(claims, other, algorithm="ES256", headers={"kid": kid}),
            # No signature at all.
            jwt.encode(claims, "", algorithm="none", headers={"kid": kid}),
        ]
        for forged in forgeries:
            await refused(channel, forged)


def hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token made by hand: PyJWT itself refuses a JWK as an HMAC secret."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(mac)}"


def test_a_key_set_with_a_shared_secret_is_refused_at_start(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}))
    settings = probe_service.ProbeSettings(port=0, metrics_port=-1, auth_jwks_file=jwks)
    with pytest.raises(ConfigurationError, match=r"PROBE_AUTH_JWKS_FILE: .*public keys only"):
        server.GrpcServer(settings, probe_service.definition())


class KeyServer:
    """A key set over HTTP on loopback that, like the Kubernetes API server, answers only
    callers with the expected bearer token, and only as application/jwk-set+json."""

    def __init__(self, keys: list[dict[str, Any]], bearer_token: str) -> None:
        self.keys = keys
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                if self.headers.get("Authorization") != f"Bearer {bearer_token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                if "application/jwk-set+json" not in self.headers.get("Accept", ""):
                    self.send_response(406)  # as kube-apiserver answers application/json
                    self.end_headers()
                    return
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/openid/v1/jwks"


@pytest.fixture
def key_server(tmp_path: Path) -> Iterator[tuple[KeyServer, Path]]:
    token_file = tmp_path / "sa-token"
    token_file.write_text("the-service-account-token\n")
    keys = KeyServer([], "the-service-account-token")
    thread = threading.Thread(target=keys.http.serve_forever, daemon=True)
    thread.start()
    try:
        yield keys, token_file
    finally:
        keys.http.shutdown()
        keys.http.server_close()
        thread.join()


def service_account_token(private_pem: bytes, subject: str, **claims: Any) -> str:
    """Shaped like a projected service-account token: no tenant, no scopes."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": "https://kubernetes.default.svc", "sub": subject}
    body["aud"] = ["voiceagent"]
    body |= {"iat": now, "exp": now + 600, **claims}
    kid = public_jwk(private_pem)["kid"]
    return jwt.encode(body, private_pem, algorithm="RS256", headers={"kid": kid})


async def test_service_account_tokens_get_exactly_their_grant(
    key_server: tuple[KeyServer, Path],
) -> None:
    keys, token_file = key_server
    cluster_key = generate_private_key("RS256")
    keys.keys = [public_jwk(cluster_key)]
    grants = {AGENT_SA: Grant(tenant="acme", scopes=["probe.read"])}
    async with probe(
        auth_jwks_url=keys.url,
        auth_jwks_token_file=token_file,
        auth_jwt_audience="voiceagent",
        auth_grants=grants,
    ) as channel:
        agent = service_account_token(cluster_key, AGENT_SA)
        assert await whoami(channel, agent) == {"tenant": "acme", "scopes": ["probe.read"]}
        # Claims in the token cannot widen a grant.
        greedy = service_account_token(cluster_key, AGENT_SA, tenant="other", scope="probe.admin")
        assert await whoami(channel, greedy) == {"tenant": "acme", "scopes": ["probe.read"]}
        # A service account nobody granted anything gets nothing.
        stranger = service_account_token(cluster_key, "system:serviceaccount:voice:default")
        assert "no grant" in await refused(channel, stranger)
        # A token for another audience (another service's) is refused.
        elsewhere = service_account_token(cluster_key, AGENT_SA, aud=["vault"])
        assert "audience" in (await refused(channel, elsewhere)).lower()

        # The cluster rotates its key: a token naming the new key id makes the service
        # fetch the set again, once.
        rotated = generate_private_key("RS256")
        keys.keys = [public_jwk(cluster_key), public_jwk(rotated)]
        before = keys.requests
        fresh = service_account_token(rotated, AGENT_SA)
        assert (await whoami(channel, fresh))["tenant"] == "acme"
        assert keys.requests == before + 1
        # Made-up key ids do not turn into a request each.
        for _ in range(5):
            await refused(channel, service_account_token(generate_private_key("RS256"), AGENT_SA))
        assert keys.requests <= before + 2


def test_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    provider = TokenFile(path)
    assert provider() == "first"
    path.write_text("second-and-longer\n")
    assert provider() == "second-and-longer"


def test_the_token_cli_names_the_key_it_signs_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = tmp_path / "jwks.json"
    kid = new_key(tmp_path, jwks, "issuer.pem", capsys)
    assert (tmp_path / "issuer.pem").stat().st_mode & 0o777 == 0o600
    text = cli_token(tmp_path / "issuer.pem", capsys, "--audience", "voiceagent")
    assert jwt.get_unverified_header(text) == {"alg": "ES256", "kid": kid, "typ": "JWT"}
    # An HS256 shared secret still works on one machine.
    secret = tmp_path / "secret"
    secret.write_text("x" * 40)
    shared = cli_token(secret, capsys)
    assert jwt.get_unverified_header(shared)["alg"] == "HS256"
    assert mint_token("x" * 40, tenant="acme", scopes=[])
    # keygen never overwrites a private key.
    with pytest.raises(SystemExit):
        keygen.main(["--jwks", str(jwks), "--private-key", str(tmp_path / "issuer.pem")])
