"""The keys a service verifies bearer tokens with.

Three sources, any of them together:

- one static key (`auth_jwt_key`): an HS* shared secret for a single-machine setup, or a
  PEM public key;
- a JSON Web Key Set in a file (`auth_jwks_file`): public keys only, re-read when the file
  changes, so a key is rotated by adding the new one, signing with it, then removing the
  old one, with no restart (a mounted Secret or ConfigMap is updated in place);
- a JSON Web Key Set at a URL (`auth_jwks_url`), such as the Kubernetes API server's
  `/openid/v1/jwks`, which verifies the pods' projected service-account tokens. It is
  fetched at start, refreshed periodically, and again (at most every few seconds) when a
  token names a key id it does not know yet.

A key set holds public keys only: a symmetric (`oct`) key in one is refused, so nobody who
can read the set can sign.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWKSetError

from voiceagent_backbone.servicekit.errors import Unauthenticated

log = logging.getLogger(__name__)

# A token naming an unknown key id makes the URL set refresh at most this often: a flood
# of tokens with made-up key ids costs the key server one request per interval.
UNKNOWN_KID_REFRESH_S = 5.0
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Key:
    key: Any
    algorithms: list[str]


def parse_jwks(text: str | bytes, origin: str) -> dict[str, Key]:
    """Key id -> key of a JWKS document; ValueError naming `origin` when it is not one."""
    try:
        document = json.loads(text)
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise ValueError("no 'keys' list")
        found: dict[str, Key] = {}
        for entry in keys:
            if not isinstance(entry, dict):
                raise ValueError("a key is not an object")
            if entry.get("kty") == "oct":
                raise ValueError("a key set may hold public keys only (found kty 'oct')")
            if entry.get("use", "sig") != "sig":
                continue
            jwk = PyJWK(entry)
            kid = entry.get("kid")
            if not isinstance(kid, str) or not kid:
                raise ValueError("every key needs a 'kid'")
            found[kid] = Key(jwk.key, [jwk.algorithm_name])
    except (ValueError, PyJWKError, PyJWKSetError) as exc:
        raise ValueError(f"{origin} is not a usable JSON Web Key Set: {exc}") from exc
    return found


class JwksFile:
    """A key set in a file, re-read when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, Key] = {}
        self.reload()

    def reload(self) -> None:
        """Re-reads the file if it changed. A broken new version keeps the last good keys
        (logged) rather than locking every caller out."""
        try:
            info = os.stat(self.path)
        except OSError as exc:
            if self._stamp is None:
                raise ValueError(f"cannot read the key set file {self.path}: {exc}") from exc
            log.error("key set file unreadable; keeping the last keys", extra={"error": str(exc)})
            return
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        try:
            self._keys = parse_jwks(self.path.read_bytes(), str(self.path))
        except (OSError, ValueError) as exc:
            if self._stamp is None:
                raise ValueError(str(exc)) from exc
            log.error("key set file invalid; keeping the last keys", extra={"error": str(exc)})
            return
        self._stamp = stamp
        log.info("key set loaded", extra={"path": str(self.path), "kids": sorted(self._keys)})

    def get(self, kid: str) -> Key | None:
        self.reload()
        return self._keys.get(kid)

    def only(self) -> Key | None:
        self.reload()
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None


class JwksUrl:
    """A key set served over HTTP(S), such as the Kubernetes API server's."""

    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        token_file: Path | None = None,
        refresh_s: float = 300.0,
    ) -> None:
        self.url = url
        self._ca_file = ca_file
        self._token_file = token_file
        self._refresh_s = refresh_s
        self._keys: dict[str, Key] = {}
        self._unknown_refresh_at = -float("inf")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def _fetch(self) -> dict[str, Key]:
        # The Kubernetes API server answers 406 to a plain application/json.
        headers = {"Accept": "application/jwk-set+json, application/json"}
        if self._token_file is not None:
            # The pod's own service-account token: API servers may require one.
            headers["Authorization"] = f"Bearer {self._token_file.read_text().strip()}"
        request = urllib.request.Request(self.url, headers=headers)
        context = None
        if self.url.startswith("https:"):
            context = ssl.create_default_context(
                cafile=str(self._ca_file) if self._ca_file is not None else None
            )
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S, context=context) as reply:
            body = reply.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"{self.url} answered more than {MAX_JWKS_BYTES} bytes")
        return parse_jwks(body, self.url)

    async def refresh(self) -> bool:
        """Fetches the set now; False (logged) when that failed: the last keys stay."""
        async with self._lock:
            try:
                keys = await asyncio.to_thread(self._fetch)
            except (OSError, ValueError) as exc:
                log.error("key set fetch failed", extra={"url": self.url, "error": str(exc)})
                return False
            if keys.keys() != self._keys.keys():
                log.info("key set fetched", extra={"url": self.url, "kids": sorted(keys)})
            self._keys = keys
            return True

    async def get(self, kid: str) -> Key | None:
        found = self._keys.get(kid)
        now = time.monotonic()
        if found is None and now - self._unknown_refresh_at >= UNKNOWN_KID_REFRESH_S:
            self._unknown_refresh_at = now
            await self.refresh()
            found = self._keys.get(kid)
        return found

    def only(self) -> Key | None:
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def start(self) -> None:
        if not await self.refresh():
            log.warning("starting without the key set; it is fetched again when needed")
        self._task = asyncio.create_task(self._refresh_forever(), name="jwks-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()


class VerificationKeys:
    """Picks the key a token names (its `kid` header) from the configured sources."""

    def __init__(
        self,
        static: str | None = None,
        static_algorithms: Iterable[str] = ("HS256",),
        files: Iterable[JwksFile] = (),
        urls: Iterable[JwksUrl] = (),
    ) -> None:
        self._static = None if static is None else Key(static, list(static_algorithms))
        self._files = list(files)
        self.urls = list(urls)
        if self._static is None and not self._files and not self.urls:
            raise ValueError("no verification key configured")

    async def key_for(self, header: Mapping[str, Any]) -> Key:
        kid = header.get("kid")
        if isinstance(kid, str) and kid:
            for source in self._files:
                found = source.get(kid)
                if found is not None:
                    return found
            for url_source in self.urls:
                found = await url_source.get(kid)
                if found is not None:
                    return found
            if self._static is None:
                raise Unauthenticated(f"token is signed with an unknown key (kid {kid[:64]!r})")
        if self._static is not None:
            return self._static
        # No kid: a set holding exactly one key is unambiguous.
        candidates = [s.only() for s in self._files] + [s.only() for s in self.urls]
        keys = [k for k in candidates if k is not None]
        if len(keys) == 1:
            return keys[0]
        raise Unauthenticated("token names no key id ('kid') and several keys are trusted")


def unverified_header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from exc
