#!/usr/bin/env bash
# Python validators used by scripts/ci/manifests.sh: kubernetes-validate (core kinds,
# Kubernetes 1.32 schemas), jsonschema + cel-python (CRD schemas and CEL rules), PyYAML,
# pytest (planted-error self-test). Pins: scripts/tools/requirements-validators.txt.
# Last stdout line: the venv directory (its bin/ has python, kubernetes-validate, pytest).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/pyvenv.sh
source "$here/lib/pyvenv.sh"
pyvenv_install validators "$here/requirements-validators.txt"
echo "$PYVENV_DIR"
