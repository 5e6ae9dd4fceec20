#!/usr/bin/env bash
# check-jsonschema in its own venv, pinned by requirements-check-jsonschema.txt. It vendors the Compose
# Specification schema (--builtin-schema vendor.compose-spec), so validation works without network.
# Last stdout line: path of the check-jsonschema executable.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/pyvenv.sh
source "$here/lib/pyvenv.sh"
pyvenv_install check-jsonschema "$here/requirements-check-jsonschema.txt"
echo "$PYVENV_DIR/bin/check-jsonschema"
