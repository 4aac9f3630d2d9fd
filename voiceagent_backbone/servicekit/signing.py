"""The issuer's side of asymmetric tokens: key pairs, their public JWKs and key ids.

The private key stays with whoever issues tokens (an operator's machine, a CI secret); the
services hold only the public half, in a JSON Web Key Set. A key id is the RFC 7638
thumbprint of the public key, so the issuer and the key set agree on it without a registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ALGORITHMS = ("ES256", "EdDSA", "RS256")
# RFC 7638 §3.2: the members a thumbprint covers, per key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def generate_private_key(algorithm: str) -> bytes:
    """A new private key for `algorithm`, as unencrypted PKCS#8 PEM."""
    key: PrivateKeyTypes
    if algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_jwk(private_pem: bytes | str) -> dict[str, Any]:
    """The public JWK of a private key, with `kid`, `alg` and `use` set."""
    pem = private_pem.encode() if isinstance(private_pem, str) else private_pem
    key = serialization.load_pem_private_key(pem, password=None)
    jwk: dict[str, Any]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("EC keys must be on P-256 (ES256)")
        jwk, alg = ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "ES256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        jwk, alg = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "EdDSA"
    elif isinstance(key, rsa.RSAPrivateKey):
        jwk, alg = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "RS256"
    else:
        raise ValueError("the key must be an EC P-256, Ed25519 or RSA private key")
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    thumbprint = hashlib.sha256(canonical.encode()).digest()
    kid = base64.urlsafe_b64encode(thumbprint).decode().rstrip("=")
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def signing_algorithm(private_pem: str) -> str:
    return str(public_jwk(private_pem)["alg"])
