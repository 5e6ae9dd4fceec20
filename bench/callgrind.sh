#!/usr/bin/env bash
# Instructions per request of each hop, counted by valgrind's callgrind: repeatable for the same binary and input,
# unlike requests/s on a shared machine, so it shows where time goes and whether a change made it cheaper.
#
# For each variant (`bare`: tests/examples/bare_chain.rs; `defaults`: the agents as shipped, JSON logs at info,
# metrics on; `minimal`: RUST_LOG=warn, METRICS_ENABLED=false; `v1`, `v2`: defaults with MODEL=v1 or v2, driving
# the personal GET /recommend?user=u<k>&limit=10 over the default data set's users in bench/users.lua's order)
# both hops run under callgrind on loopback. After a
# warm-up the counters are zeroed, exactly BENCH_REQUESTS sequential keep-alive requests are sent with curl, and the
# counters are dumped; instructions per request = the dump's total / BENCH_REQUESTS (every thread of the process,
# including the log writer). The top functions (exclusive) of each dump are written beside it; they name the
# agents' own functions only when the binaries have symbols.
#
# Settings (environment): BENCH_VARIANTS ("bare defaults minimal"), BENCH_REQUESTS (2000), BENCH_WARMUP_REQUESTS
# (200), BENCH_BIN (target/release, as bench/run.sh builds it; the release profile strips symbols, so the dumps
# name no functions: for that, build the same code with CARGO_PROFILE_RELEASE_STRIP=none into another
# CARGO_TARGET_DIR and point BENCH_BIN at it), BENCH_TOP (15, functions listed per dump), BENCH_USERS (1000, users
# the v1/v2 variants walk). Needs valgrind (Debian: apt-get install -y valgrind) and curl.
# Output and dumps: bench/results/callgrind-<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANTS=${BENCH_VARIANTS:-"bare defaults minimal"}
REQUESTS=${BENCH_REQUESTS:-2000}
WARMUP=${BENCH_WARMUP_REQUESTS:-200}
BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release}
TOP=${BENCH_TOP:-15}
OUT="bench/results/callgrind-$(date +%Y%m%dT%H%M%S)"

for tool in valgrind callgrind_control callgrind_annotate curl; do
    command -v "$tool" >/dev/null || { echo "callgrind: $tool not found (Debian: apt-get install -y valgrind curl)" >&2; exit 1; }
done
for bin in data recommendation examples/bare_chain; do
    [ -x "$BIN/$bin" ] || { echo "callgrind: $BIN/$bin missing; build it (see bench/run.sh)" >&2; exit 1; }
done
mkdir -p "$OUT"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls a URL until it answers 200; valgrind starts a process slowly, so the bound is 120 s.
wait_ok() {
    local url=$1 deadline=$((SECONDS + 120))
    until curl -sf -o /dev/null "$url"; do
        ((SECONDS > deadline)) && { echo "callgrind: $url did not answer within 120 s" >&2; return 1; }
        sleep 0.2
    done
}

# N sequential requests on one keep-alive connection; with USERS set, to $url?user=u<k>&limit=10, k walking the
# users 1..USERS in bench/users.lua's scrambled order.
requests() {
    local url=$1 n=$2 cfg i
    cfg=$(mktemp)
    for i in $(seq "$n"); do
        if [[ -n ${USERS:-} ]]; then
            printf 'url = "%s?user=u%d&limit=10"\noutput = "/dev/null"\n' "$url" $(((i * 7919) % USERS + 1))
        else
            printf 'url = "%s"\noutput = "/dev/null"\n' "$url"
        fi
    done >"$cfg"
    curl -sf -K "$cfg"
    rm -f "$cfg"
}

# Starts a command under `valgrind --tool=callgrind`, output to $OUT/<name>.*; a leading `env -i VAR=value ...` is
# kept in front of valgrind, so that the pid is valgrind's (callgrind_control talks to it) and the program still
# gets exactly that environment. Sets LAST_PID.
under_callgrind() {
    local name=$1 prefix=()
    shift
    while [[ $# -gt 0 && ($1 == env || $1 == -i || $1 == *=*) ]]; do
        prefix+=("$1")
        shift
    done
    [[ ${#prefix[@]} -gt 0 ]] || prefix=(env)
    "${prefix[@]}" valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.callgrind" "$@" >"$OUT/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

total_ir() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

printf 'variant\thop\tinstructions_per_request\n' >"$OUT/results.tsv"
for variant in $VARIANTS; do
    data_port=$(free_port)
    reco_port=$(free_port)
    base=(env -i "PATH=$PATH" BIND_ADDR=127.0.0.1)
    case $variant in
        bare)
            under_callgrind "$variant-data" "$BIN/examples/bare_chain" data "$data_port"
            data_pid=$LAST_PID
            under_callgrind "$variant-reco" "$BIN/examples/bare_chain" recommend "$reco_port" "http://127.0.0.1:$data_port"
            reco_pid=$LAST_PID
            ;;
        defaults | minimal | v1 | v2)
            extra=()
            [[ $variant == minimal ]] && extra=(RUST_LOG=warn METRICS_ENABLED=false)
            [[ $variant == v1 || $variant == v2 ]] && extra=(MODEL="$variant")
            under_callgrind "$variant-data" "${base[@]}" "${extra[@]}" PORT="$data_port" "$BIN/data"
            data_pid=$LAST_PID
            under_callgrind "$variant-reco" "${base[@]}" "${extra[@]}" PORT="$reco_port" \
                DATA_URL="http://127.0.0.1:$data_port" DATA_TIMEOUT=30s DATA_CONNECT_TIMEOUT=10s \
                REQUEST_DEADLINE=60s "$BIN/recommendation"
            reco_pid=$LAST_PID
            ;;
        *) echo "callgrind: unknown variant $variant" >&2; exit 2 ;;
    esac
    url="http://127.0.0.1:$reco_port/recommend"
    USERS=
    [[ $variant == v1 || $variant == v2 ]] && USERS=${BENCH_USERS:-1000}
    wait_ok "$url"
    requests "$url" "$WARMUP"
    callgrind_control -z "$data_pid" >/dev/null
    callgrind_control -z "$reco_pid" >/dev/null
    requests "$url" "$REQUESTS"
    callgrind_control -d "$variant" "$data_pid" >/dev/null
    callgrind_control -d "$variant" "$reco_pid" >/dev/null
    cleanup
    for hop in data reco; do
        dump=$(ls -t "$OUT/$variant-$hop.callgrind".* 2>/dev/null | head -1)
        [ -n "$dump" ] || { echo "callgrind: no dump for $variant/$hop" >&2; exit 1; }
        ir=$(total_ir "$dump")
        per=$((ir / REQUESTS))
        printf '%s\t%s\t%s\n' "$variant" "$hop" "$per" | tee -a "$OUT/results.tsv" >&2
        # Exclusive counts per function; a stripped binary shows all its own code under the thread entry (clone).
        callgrind_annotate "$dump" 2>/dev/null | sed -n '/file:function/,/^$/p' | sed -n "3,$((TOP + 2))p" \
            >"$OUT/$variant-$hop.top.txt" || true
    done
done

echo
echo "instructions per request (callgrind, $REQUESTS sequential keep-alive requests after $WARMUP warm-up, binaries: $BIN)"
python3 - "$OUT/results.tsv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
per = {}
for r in rows:
    per.setdefault(r["variant"], {})[r["hop"]] = int(r["instructions_per_request"])
print(f"{'variant':<9} {'data hop':>10} {'reco hop':>10} {'both':>10} {'vs bare':>8}")
bare = sum(per["bare"].values()) if "bare" in per else None
for variant, hops in per.items():
    both = sum(hops.values())
    ratio = f"{both / bare:.2f}x" if bare else "-"
    print(f"{variant:<9} {hops.get('data', 0):>10} {hops.get('reco', 0):>10} {both:>10} {ratio:>8}")
PY
echo "top functions (exclusive) per dump: $OUT/*.top.txt; open a dump with callgrind_annotate or kcachegrind" >&2
