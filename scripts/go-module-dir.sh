#!/usr/bin/env bash
# Prints the folder of MODULE@VERSION in the Go module cache, downloading it from the module
# proxy first when needed: some files the project uses (CRDs, pause.c, sources to build)
# come from Go modules.
#   scripts/go-module-dir.sh k8s.io/kubernetes@v1.35.4
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
dir="$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -n "$dir" ]] || { echo "go-module-dir: $1 has no folder in the module cache" >&2; exit 1; }
echo "$dir"
