#!/usr/bin/env bash
# Installs what the project needs into git-ignored folders of the checkout:
#   .tools/uv   the uv package manager (from PyPI)
#   .venv       Python 3.11 with the locked dependencies (uv.lock)
#   .tools/bin  the Go-built servers and tools (scripts/install-tools.sh)
# and, as root with apt, the Debian packages the tests use (scripts/install-system-packages.sh).
#   scripts/setup.sh [TOOL...]   everything `make test` needs (TOOL...: only those Go tools)
#   scripts/setup.sh --run       only what `make run` needs: the venv with the services' and
#                                the agent's packages; no Go, no apt, no test tools
# Re-running it is cheap: each step checks what is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

only_run=0
case "${1:-}" in
  -h | --help)
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
  --run)
    only_run=1
    shift
    ;;
esac

uv_version="0.13.9"
uv=".tools/uv/bin/uv"
if [[ ! -x "$uv" ]] || [[ "$("$uv" --version 2>/dev/null)" != "uv $uv_version"* ]]; then
  python="$(command -v python3.11 || command -v python3)"
  "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    { echo "setup: Python 3.11 is required (found $("$python" --version))" >&2; exit 1; }
  echo "setup: installing uv $uv_version into .tools/uv" >&2
  rm -rf .tools/uv
  "$python" -m venv .tools/uv
  .tools/uv/bin/pip install --quiet --disable-pip-version-check "uv==$uv_version"
fi

# Never download a Python build: use the machine's 3.11, named by its real path. A launcher
# (pyenv's shims) never matches the venv's interpreter: uv would make the venv anew on every
# run, and `--run` would then drop the test tools.
export UV_PYTHON_DOWNLOADS=never
python="$("$(command -v python3.11 || command -v python3)" -c 'import sys; print(sys.executable)')"
if ((only_run)); then
  # --inexact: a venv that `make test` filled keeps its test tools.
  "$uv" sync --frozen --inexact --extra state --extra context --extra agent --python "$python" \
    --quiet
  exit 0
fi
"$uv" sync --frozen --all-extras --python "$python" --quiet

bash scripts/install-system-packages.sh

if [[ "${SKIP_TOOLS:-0}" != 1 ]]; then
  bash scripts/install-tools.sh "$@"
fi
