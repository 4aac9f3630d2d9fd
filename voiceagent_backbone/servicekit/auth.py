"""JWT bearer authentication: who is calling (tenant, scopes) and whether they may."""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from voiceagent_backbone.servicekit.config import ServiceSettings
from voiceagent_backbone.servicekit.errors import PermissionDenied, Unauthenticated
from voiceagent_backbone.servicekit.keys import VerificationKeys, unverified_header

# Calls that must work without a token: load balancers and grpcurl discovery.
PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

TENANT_CLAIM = "tenant"
SCOPE_CLAIM = "scope"
# Scopes that reach beyond the caller's tenant. They are granted by name only: a tenant's
# `x.admin` administers that tenant and never implies them.
PLATFORM_SCOPES = frozenset({"state.feed", "state.index", "state.knowledge"})
# Every scope, platform ones included: the principal of a service running without auth.
ALL = "*"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of the current RPC."""

    tenant_id: str
    subject: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    def allows(self, required: str) -> bool:
        """`svc.admin` includes every other scope of the same service, except the platform
        scopes (PLATFORM_SCOPES), which only their own name grants."""
        if required in self.scopes or ALL in self.scopes:
            return True
        if required in PLATFORM_SCOPES:
            return False
        prefix = required.split(".", 1)[0]
        return f"{prefix}.admin" in self.scopes

    def require(self, required: str) -> None:
        if not self.allows(required):
            raise PermissionDenied(f"this call needs the scope {required!r}")


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "servicekit_principal", default=None
)


def current_principal() -> Principal:
    """The caller of the RPC being handled; set by the auth interceptor."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller")
    return principal


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    # ValueError: a stream's generator closed from another context (the client cancelled);
    # the context that held the principal is gone with its call, nothing is left to reset.
    with contextlib.suppress(ValueError):
        _current.reset(token)


@dataclass(frozen=True)
class Grant:
    """What an identity without tenant claims (a Kubernetes service account) may do."""

    tenant: str
    scopes: frozenset[str]


class JwtVerifier:
    """Verifies bearer tokens with the configured keys (see servicekit.keys).

    A token carries its tenant and scopes as claims, or its subject is listed in `grants`
    (a projected service-account token carries neither: the operator says in the service's
    settings which tenant and scopes each service account holds). A listed subject gets
    exactly its grant, whatever claims the token makes.
    """

    def __init__(
        self,
        keys: VerificationKeys,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        require_exp: bool = True,
        leeway_s: float = 5.0,
        max_lifetime_s: float | None = None,
        grants: Mapping[str, Grant] | None = None,
    ) -> None:
        self.keys = keys
        self._issuer = issuer
        self._audience = audience
        self._required = ["exp"] if require_exp else []
        self._leeway = leeway_s
        self._max_lifetime = max_lifetime_s
        self._grants = dict(grants or {})

    async def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing bearer token in 'authorization' metadata")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the 'authorization' metadata must be 'Bearer <token>'")
        key = await self.keys.key_for(unverified_header(token))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=key.algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": self._required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("token signature is invalid") from exc
        except jwt.PyJWTError as exc:
            # The library's message names the failed check, never the token itself.
            raise Unauthenticated(f"invalid token: {exc}") from exc
        self._check_lifetime(claims)
        return self._principal(claims)

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        expires = claims.get("exp")
        if (
            self._max_lifetime is not None
            and isinstance(expires, int | float)
            and expires - time.time() > self._max_lifetime + self._leeway
        ):
            raise Unauthenticated(
                f"token expires too far ahead: this service accepts at most "
                f"{self._max_lifetime:.0f}s of remaining lifetime"
            )

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject = str(claims.get("sub", ""))
        grant = self._grants.get(subject)
        if grant is not None:
            return Principal(tenant_id=grant.tenant, subject=subject, scopes=grant.scopes)
        tenant = claims.get(TENANT_CLAIM)
        if not isinstance(tenant, str) or not tenant or len(tenant) > 128:
            raise Unauthenticated(
                "token has no valid 'tenant' claim and its subject has no grant in this "
                "service's auth_grants"
            )
        return Principal(tenant_id=tenant, subject=subject, scopes=frozenset(_scopes(claims)))


def _scopes(claims: dict[str, object]) -> list[str]:
    """OAuth-style space-separated `scope`, or a `scopes` list."""
    raw = claims.get(SCOPE_CLAIM, claims.get("scopes", ""))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str)]
    return []


def mint_token(
    key: str,
    *,
    tenant: str,
    scopes: Iterable[str],
    subject: str = "",
    ttl_s: float = 3600.0,
    algorithm: str = "HS256",
    issuer: str | None = None,
    audience: str | None = None,
    key_id: str | None = None,
) -> str:
    """A signed token for clients, tests and the README's grpcurl examples. `key` is the
    HS* shared secret or the PEM private key of an asymmetric algorithm; `key_id` names it
    in the token's header (the `kid` services look up in their key set)."""
    now = int(time.time())
    claims: dict[str, object] = {
        TENANT_CLAIM: tenant,
        SCOPE_CLAIM: " ".join(scopes),
        "iat": now,
        "exp": now + int(ttl_s),
    }
    if subject:
        claims["sub"] = subject
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


class RenewingToken:
    """A token provider for clients holding the shared key: mints a token with `mint_token`
    and mints a new one when half its lifetime has passed."""

    def __init__(
        self,
        key: str,
        *,
        tenant: str,
        scopes: Iterable[str],
        subject: str,
        ttl_s: float = 3600.0,
        algorithm: str = "HS256",
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        self.key, self.tenant, self.scopes, self.subject = key, tenant, list(scopes), subject
        self.ttl_s, self.algorithm, self.issuer, self.audience = ttl_s, algorithm, issuer, audience
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.monotonic()
        if now >= self._renew_at:
            self._token = mint_token(
                self.key,
                tenant=self.tenant,
                scopes=self.scopes,
                subject=self.subject,
                ttl_s=self.ttl_s,
                algorithm=self.algorithm,
                issuer=self.issuer,
                audience=self.audience,
            )
            self._renew_at = now + self.ttl_s / 2
        return self._token


class TokenFile:
    """A token provider for clients that are handed a token rather than a key: a mounted
    Secret, or the pod's projected service-account token, which the kubelet replaces
    before it expires. The file is read again when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def __call__(self) -> str:
        info = os.stat(self.path)
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._token = self.path.read_text().strip()
            self._stamp = stamp
        return self._token


def service_token(
    settings: ServiceSettings,
    token_file: Path | None,
    *,
    tenant: str,
    scopes: Iterable[str],
    subject: str,
) -> Callable[[], str] | None:
    """A service's own token for calling another: its token file (a projected
    service-account token, read again when the kubelet replaces it), else one minted from
    the shared HS key it verifies with; None when it has neither."""
    if token_file is not None:
        return TokenFile(token_file)
    key = settings.jwt_key()
    if key is None or not settings.auth_jwt_algorithms[0].startswith("HS"):
        return None
    return RenewingToken(
        key,
        tenant=tenant,
        scopes=scopes,
        subject=subject,
        algorithm=settings.auth_jwt_algorithms[0],
        issuer=settings.auth_jwt_issuer,
        audience=settings.auth_jwt_audience,
    )
