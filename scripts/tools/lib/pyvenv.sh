# Shared by install-validators.sh and install-checkov.sh: source it, then call
#   pyvenv_install NAME REQUIREMENTS_FILE
# Creates ${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}/venv-NAME-<hash>/ from a fully
# pinned requirements file; <hash> covers the file and the Python version, so a changed
# pin or another Python gets a fresh venv, and a warm cache costs one stat.
# A venv is only used once its `.complete` marker exists (an interrupted install is
# rebuilt from scratch). Sets PYVENV_DIR.
pyvenv_install() {
  local name="$1" req="$2"
  local py="${PYTHON:-python3}"
  command -v "$py" >/dev/null || { echo "install-$name: $py is required" >&2; return 1; }
  local pyver key cache dest
  pyver="$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
  key="$( { cat "$req"; echo "python $pyver"; } | sha256sum | cut -c1-12)"
  cache="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
  dest="$cache/venv-$name-$key"
  if [[ -f "$dest/.complete" && -x "$dest/bin/python" ]]; then
    PYVENV_DIR="$dest"
    return 0
  fi
  mkdir -p "$cache"
  rm -rf "$dest"
  echo "install-$name: creating $dest (Python $pyver)" >&2
  "$py" -m venv "$dest" >&2
  # --no-deps: the file pins the whole dependency set, so pip resolves nothing itself.
  "$dest/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$req" >&2
  "$dest/bin/python" -m pip check >&2
  touch "$dest/.complete"
  PYVENV_DIR="$dest"
}
