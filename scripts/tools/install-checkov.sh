#!/usr/bin/env bash
# checkov (static analysis of the Kubernetes manifests and Dockerfiles) in its own venv,
# pinned by scripts/tools/requirements-checkov.txt. Run it with --skip-download: CI has
# no network beyond package registries.
# Last stdout line: path of the checkov executable.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/pyvenv.sh
source "$here/lib/pyvenv.sh"
pyvenv_install checkov "$here/requirements-checkov.txt"
echo "$PYVENV_DIR/bin/checkov"
