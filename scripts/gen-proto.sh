#!/usr/bin/env bash
# Generates Python code and .pyi stubs from proto/ with grpcio-tools (pinned to grpcio).
#   scripts/gen-proto.sh          regenerate into ./voiceagent
#   scripts/gen-proto.sh --check  fail when the committed code is stale
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="${PYTHON:-.venv/bin/python}"

generate() {
  local out="$1"
  mkdir -p "$out"
  mapfile -t protos < <(find proto -name '*.proto' | sort)
  "$py" -m grpc_tools.protoc -Iproto \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${protos[@]}"
  # Packages, so that tools and type checkers see ordinary (not namespace) packages.
  find "$out/voiceagent" -type d -exec touch {}/__init__.py \;
  touch "$out/voiceagent/py.typed"
}

if [[ "${1:-}" == "--check" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  if ! diff -r -x __pycache__ "$tmp/voiceagent" voiceagent >/dev/null; then
    diff -r -x __pycache__ "$tmp/voiceagent" voiceagent | head -20 >&2
    echo "gen-proto: generated code in voiceagent/ is stale; run 'make proto' and commit it" >&2
    exit 1
  fi
  echo "gen-proto: generated code is up to date"
else
  rm -rf voiceagent
  generate .
  echo "gen-proto: generated voiceagent/ from proto/"
fi
