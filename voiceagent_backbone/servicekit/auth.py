"""JWT bearer authentication: who is calling (tenant, scopes) and whether they may."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import jwt

from voiceagent_backbone.servicekit.errors import PermissionDenied, Unauthenticated

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
PLATFORM_SCOPES = frozenset({"state.feed"})
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


class JwtVerifier:
    """Verifies bearer tokens with one configured key."""

    def __init__(
        self,
        key: str,
        algorithms: Iterable[str],
        *,
        issuer: str | None = None,
        audience: str | None = None,
        require_exp: bool = True,
        leeway_s: float = 5.0,
        max_lifetime_s: float | None = None,
    ) -> None:
        self._key = key
        self._algorithms = list(algorithms)
        self._issuer = issuer
        self._audience = audience
        self._required = [TENANT_CLAIM] + (["exp"] if require_exp else [])
        self._leeway = leeway_s
        self._max_lifetime = max_lifetime_s

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing bearer token in 'authorization' metadata")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the 'authorization' metadata must be 'Bearer <token>'")
        try:
            claims = jwt.decode(
                token.strip(),
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={
                    "require": self._required,
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("token signature is invalid") from exc
        except jwt.PyJWTError as exc:
            # The library's message names the failed check, never the token itself.
            raise Unauthenticated(f"invalid token: {exc}") from exc
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
        tenant = claims.get(TENANT_CLAIM)
        if not isinstance(tenant, str) or not tenant or len(tenant) > 128:
            raise Unauthenticated("token has no valid 'tenant' claim")
        return Principal(
            tenant_id=tenant,
            subject=str(claims.get("sub", "")),
            scopes=frozenset(_scopes(claims)),
        )


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
) -> str:
    """A signed token for clients, tests and the README's grpcurl examples."""
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
    return jwt.encode(claims, key, algorithm=algorithm)


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
