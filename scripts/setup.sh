#!/usr/bin/env bash
# Installs everything the project needs into git-ignored folders, and nothing elsewhere:
#   .tools/uv   the uv package manager (from PyPI)
#   .venv       Python 3.11 with every dependency group, exactly as uv.lock pins them
#   .tools/bin  the Go-built servers and tools (scripts/install-tools.sh)
# and, as root with apt, the Debian packages the tests use (scripts/install-system-packages.sh).
# Re-running it is cheap: each step checks what is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

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

# Never download a Python build: use the machine's 3.11.
export UV_PYTHON_DOWNLOADS=never
"$uv" sync --frozen --all-extras --python "$(command -v python3.11 || command -v python3)" --quiet

bash scripts/install-system-packages.sh

if [[ "${SKIP_TOOLS:-0}" != 1 ]]; then
  bash scripts/install-tools.sh "$@"
fi
