#!/bin/sh
# Runs a build step's command trusting the base image's CA certificates plus those given
# to the build as the secret `extra-ca` (a TLS-intercepting proxy's, say). The combined
# bundle lives only while the command runs; nothing of it stays in the layer.
set -eu
extra=/run/secrets/extra-ca
if [ ! -s "$extra" ]; then
  exec "$@"
fi
bundle="$(mktemp)"
trap 'rm -f "$bundle"' EXIT
cat /etc/ssl/certs/ca-certificates.crt "$extra" >"$bundle"
# pip reads PIP_CERT, uv and Python's ssl module read SSL_CERT_FILE.
SSL_CERT_FILE="$bundle" PIP_CERT="$bundle" "$@"
