"""Mint a bearer token for grpcurl and scripts:
`python -m voiceagent_backbone.servicekit.token --tenant demo`.

The key comes from --key-file, or the environment variable named by --key-env
(default STATE_AUTH_JWT_KEY). The token is printed on stdout and nowhere else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from voiceagent_backbone.servicekit.auth import mint_token

DEFAULT_SCOPES = "state.read state.write context.read context.write"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voiceagent_backbone.servicekit.token", description=__doc__
    )
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--scopes", default=DEFAULT_SCOPES, help="space-separated scopes")
    parser.add_argument("--subject", default="cli")
    parser.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds")
    parser.add_argument("--algorithm", default="HS256")
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--key-env", default="STATE_AUTH_JWT_KEY")
    args = parser.parse_args(argv)
    if args.key_file is not None:
        try:
            key = args.key_file.read_text().strip()
        except OSError as exc:
            parser.error(f"cannot read --key-file: {exc.strerror}")
    else:
        key = os.environ.get(args.key_env, "")
    if not key:
        parser.error(f"no signing key: pass --key-file or set {args.key_env}")
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    sys.stdout.write(
        mint_token(
            key,
            tenant=args.tenant,
            scopes=args.scopes.split(),
            subject=args.subject,
            ttl_s=args.ttl,
            algorithm=args.algorithm,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
