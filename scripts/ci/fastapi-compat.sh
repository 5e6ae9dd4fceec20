#!/usr/bin/env bash
# Drop-in compatibility with the original FastAPI agents: real uvicorn processes beside our binaries.
# Needs the debug binaries (cargo build --workspace); makes its own venv with the tutorial's pins.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}
reqs=$root/tests/compat/requirements.txt
venv=$cache/venv-fastapi-$(sha256sum "$reqs" | cut -c1-12)
if [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$reqs"
fi
cd "$root/tests/compat"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider test_fastapi_compat.py
