"""Mint a bearer token for grpcurl, scripts and agents:
`python -m voiceagent_backbone.servicekit.token --tenant demo`.

The signing key comes from --key-file, or the environment variable named by --key-env
(default STATE_AUTH_JWT_KEY). A PEM private key (made by
`python -m voiceagent_backbone.servicekit.keygen`) signs with its own algorithm and names
its key id, which the services look up in their key set; anything else is an HS256 shared
secret. The token is printed on stdout and nowhere else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from voiceagent_backbone.servicekit.arguments import ToolParser
from voiceagent_backbone.servicekit.auth import mint_token
from voiceagent_backbone.servicekit.signing import public_jwk

DEFAULT_SCOPES = "state.read state.write context.read context.write"


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(
        "token",
        prog="python -m voiceagent_backbone.servicekit.token",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tenant", required=True, help="the tenant whose data the token reaches")
    parser.add_argument("--scopes", default=DEFAULT_SCOPES, help="space-separated scopes")
    parser.add_argument("--subject", default="cli", help="the sub claim (default cli)")
    parser.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds")
    parser.add_argument("--issuer", help="the iss claim (when the services check one)")
    parser.add_argument("--audience", help="the aud claim (when the services check one)")
    parser.add_argument(
        "--key-file", type=Path, help="the signing key: a PEM private key or an HS256 secret"
    )
    parser.add_argument(
        "--key-env",
        default="STATE_AUTH_JWT_KEY",
        metavar="VARIABLE",
        help="without --key-file, the variable holding the key (default STATE_AUTH_JWT_KEY)",
    )
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
    algorithm, key_id = "HS256", None
    if key.startswith("-----BEGIN"):
        try:
            jwk = public_jwk(key)
        except ValueError as exc:
            parser.error(f"the signing key is not a usable private key: {exc}")
        algorithm, key_id = jwk["alg"], jwk["kid"]
    sys.stdout.write(
        mint_token(
            key,
            tenant=args.tenant,
            scopes=args.scopes.split(),
            subject=args.subject,
            ttl_s=args.ttl,
            algorithm=algorithm,
            issuer=args.issuer,
            audience=args.audience,
            key_id=key_id,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
