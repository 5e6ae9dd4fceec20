#!/usr/bin/env bash
# Build Jaeger v2 (the tracing backend istio/install/istio-operator.yaml's `otel-tracing` provider reports to) from the
# Go module proxy into the agent-mesh tool cache. Idempotent: with the cache warm it only checks the binary runs.
#
#   scripts/tools/install-jaeger.sh     last stdout line: path of the jaeger binary
#
# Jaeger v2 is published as github.com/jaegertracing/jaeger v1.x (v1.76.0 is Jaeger v2.13.0, the line Istio 1.30's
# samples/addons/jaeger.yaml runs). Its go.mod carries a replace directive, which `go install pkg@version` refuses, so
# the build runs in a throw-away wrapper module under the cache: it requires Jaeger, repeats Jaeger's replace
# directives (they apply only in the main module), starts from Jaeger's own go.sum, and `go mod tidy` completes it
# from the proxy (the checksum database verifies every module it adds).
#
# Settings (env): AGENT_MESH_CACHE (default $HOME/.cache/agent-mesh).
# Cold: about 10 min of CPU (20 min on two busy cores); warm: < 1 s.
set -euo pipefail

JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_MODULE_VERSION=v1.76.0
JAEGER_VERSION=v2.13.0
CACHE="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST="$CACHE/jaeger-$JAEGER_VERSION"
BIN="$DEST/jaeger"

log() { echo "install-jaeger: $*" >&2; }
is_good() { [[ -x "$BIN" ]] && "$BIN" version 2>/dev/null | grep -q "\"gitVersion\":\"$JAEGER_VERSION\""; }

if is_good; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required"; exit 1; }
command -v jq >/dev/null || { log "jq is required"; exit 1; }
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock -w 3600 9 || { log "timed out waiting for another build of jaeger $JAEGER_VERSION"; exit 1; }
if is_good; then
  echo "$BIN"
  exit 0
fi

export GOFLAGS="-buildvcs=false" CGO_ENABLED=0 GOWORK=off
info=$(go mod download -json "$JAEGER_MODULE@$JAEGER_MODULE_VERSION")
src=$(jq -r .Dir <<<"$info")
[[ -f "$src/go.mod" ]] || { log "no source for $JAEGER_MODULE@$JAEGER_MODULE_VERSION: $(jq -r '.Error // empty' <<<"$info")"; exit 1; }
work="$DEST/wrapper"
rm -rf "$work"
mkdir -p "$work"
cat >"$work/go.mod" <<EOF
module agent-mesh.local/tools/jaeger-build

go $(go mod edit -json "$src/go.mod" | jq -r .Go)

require $JAEGER_MODULE $JAEGER_MODULE_VERSION
EOF
# Jaeger's own replace directives (module replacements only; a local path would not exist here).
go mod edit -json "$src/go.mod" \
  | jq -r '.Replace[]? | select(.New.Version) | "\(.Old.Path)\(if .Old.Version then "@" + .Old.Version else "" end)=\(.New.Path)@\(.New.Version)"' \
  | while IFS= read -r replace; do (cd "$work" && go mod edit -replace "$replace"); done
install -m 0644 "$src/go.sum" "$work/go.sum"
printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/jaeger"\n' "$JAEGER_MODULE" >"$work/tools.go"
log "resolving $JAEGER_MODULE@$JAEGER_MODULE_VERSION (Jaeger $JAEGER_VERSION)"
(cd "$work" && go mod tidy) >&2

ldflags="-s -w -X $JAEGER_MODULE/internal/version.latestVersion=$JAEGER_VERSION"
log "building jaeger $JAEGER_VERSION (minutes; under nice)"
started=$SECONDS
(cd "$work" && nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$BIN.tmp" "$JAEGER_MODULE/cmd/jaeger") >&2
mv -f "$BIN.tmp" "$BIN"
is_good || { log "the built binary does not report $JAEGER_VERSION: $("$BIN" version 2>&1 | tail -n1)"; exit 1; }
log "built in $((SECONDS - started))s"
echo "$BIN"
