#!/usr/bin/env bash
# Generates Python code and .pyi stubs from proto/ with grpcio-tools (pinned to grpcio).
#   scripts/gen-proto.sh          regenerate into voiceagent_backbone/api
#   scripts/gen-proto.sh --check  fail when the committed code is stale
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="${PYTHON:-.venv/bin/python}"

generate() {
  local out="$1"
  mkdir -p "$out"
  mapfile -t protos < <(find proto -name '*.proto' | sort)
  # proto/voiceagent/... is mapped to voiceagent_backbone/api/...: the Python modules live
  # inside this distribution's own package (the wire names stay voiceagent.*.v1).
  "$py" -m grpc_tools.protoc -Ivoiceagent_backbone/api=proto/voiceagent \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${protos[@]}"
  # Packages, so that tools and type checkers see ordinary (not namespace) packages.
  find "$out/voiceagent_backbone/api" -type d -exec touch {}/__init__.py \;
}

if [[ "${1:-}" == "--check" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  if ! diff -r -x __pycache__ "$tmp/voiceagent_backbone/api" voiceagent_backbone/api >/dev/null; then
    diff -r -x __pycache__ "$tmp/voiceagent_backbone/api" voiceagent_backbone/api | head -20 >&2
    echo "gen-proto: generated code in voiceagent_backbone/api/ is stale; run 'make proto' and commit it" >&2
    exit 1
  fi
  echo "gen-proto: generated code is up to date"
else
  rm -rf voiceagent_backbone/api
  generate .
  echo "gen-proto: generated voiceagent_backbone/api/ from proto/"
fi
