#!/usr/bin/env bash
# Quality gates: generated code fresh, buf format/lint/breaking, ruff, mypy.
#   scripts/check.sh   (`make check`; it changes no file)
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin=.venv/bin

step() { echo "check: $*" >&2; }

step "generated code is fresh"
bash scripts/gen-proto.sh --check

step "buf format"
"$bin/buf" format --diff --exit-code proto

step "buf lint"
"$bin/buf" lint

step "buf breaking against main"
if git rev-parse --verify --quiet main:proto >/dev/null; then
  "$bin/buf" breaking --against '.git#branch=main'
else
  echo "check: main has no proto/ yet; nothing to compare against" >&2
fi

step "ruff"
"$bin/ruff" check .
"$bin/ruff" format --check .

step "mypy"
"$bin/mypy"
"$bin/mypy" examples/bring_your_own_agent/agent.py
"$bin/mypy" scripts/run_checks.py scripts/gen_dashboards.py
