"""Make a signing key pair for tokens, and keep the services' key set:
`python -m voiceagent_backbone.servicekit.keygen --private-key issuer.pem --jwks jwks.json`.

Writes a new private key (mode 0600; it stays with the issuer) and adds its public half to
the JSON Web Key Set the services verify with (STATE_AUTH_JWKS_FILE, CONTEXT_AUTH_JWKS_FILE),
creating the set if needed, and prints the new key id. Rotation: make a new key, roll out
the set, sign with the new key, then `--retire` the old key id once its tokens expired.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from voiceagent_backbone.servicekit.arguments import ToolParser
from voiceagent_backbone.servicekit.signing import (
    ALGORITHMS,
    generate_private_key,
    public_jwk,
)


def _read_set(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    document = json.loads(path.read_text())
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError(f"{path} is not a JSON Web Key Set (no 'keys' list)")
    return keys


def _write_set(path: Path, keys: list[dict[str, Any]]) -> None:
    # Replaced in one rename: a service re-reading the file never sees half of it.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"keys": keys}, indent=2) + "\n")
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(
        "keygen",
        prog="python -m voiceagent_backbone.servicekit.keygen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jwks", type=Path, required=True, help="the key set file to update")
    parser.add_argument("--private-key", type=Path, help="where to write the new private key")
    parser.add_argument("--algorithm", default="ES256", choices=ALGORITHMS)
    parser.add_argument("--retire", metavar="KID", help="remove this key id from the set")
    args = parser.parse_args(argv)
    if (args.private_key is None) == (args.retire is None):
        parser.error("pass --private-key (a new key) or --retire KID")
    try:
        keys = _read_set(args.jwks)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read --jwks: {exc}")
    if args.retire is not None:
        kept = [k for k in keys if k.get("kid") != args.retire]
        if len(kept) == len(keys):
            parser.error(f"--retire: no key {args.retire!r} in {args.jwks}")
        _write_set(args.jwks, kept)
        return 0
    if args.private_key.exists():
        parser.error(f"--private-key: {args.private_key} exists; never overwrite a key")
    pem = generate_private_key(args.algorithm)
    descriptor = os.open(args.private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
    jwk = public_jwk(pem)
    _write_set(args.jwks, [*keys, jwk])
    sys.stdout.write(jwk["kid"] + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
