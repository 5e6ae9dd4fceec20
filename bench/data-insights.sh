#!/usr/bin/env bash
# The data agent with its insights (issue 16), release build, loopback only. For the default data set and for a
# generated DATA_FILE of RECSYS_ITEMS items / RECSYS_INTERACTIONS interactions, prints:
#   - start-up: the time from starting the binary to its first 200 on /readyz (the insights are built before the
#     listener is bound, so this includes loading and processing), the CPU time (user + system) it used by then,
#     and the RSS then and at its peak (VmHWM);
#   - GET /insights/users/{user}?limit=10 under wrk load (users spread over the whole set): requests/s, p50, p99;
#   - the same while a writer POSTs batches of BENCH_BATCH rows to /interactions back to back, to show what batches
#     cost the readers (the insights sit behind a lock: data/src/insights.rs), and how long a batch takes.
# The figures are printed, not asserted: the machine is shared.
#
# Settings (environment): RECSYS_ITEMS (100000), RECSYS_USERS (50000), RECSYS_INTERACTIONS (1000000),
# RECSYS_SEED (2024), BENCH_DURATION (10, seconds per run), BENCH_CONNECTIONS (16), BENCH_THREADS (1),
# BENCH_BATCH (500), BENCH_SETS ("default generated"), BENCH_RUST_LOG (info: as shipped, one JSON line per request,
# written to a file). Needs wrk (Debian: apt-get install -y wrk) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

ITEMS=${RECSYS_ITEMS:-100000}
USERS=${RECSYS_USERS:-50000}
INTERACTIONS=${RECSYS_INTERACTIONS:-1000000}
SEED=${RECSYS_SEED:-2024}
DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
THREADS=${BENCH_THREADS:-1}
BATCH=${BENCH_BATCH:-500}
SETS=${BENCH_SETS:-"default generated"}
RUST_LOG_LEVEL=${BENCH_RUST_LOG:-info}
BIN="${CARGO_TARGET_DIR:-target}/release"
PORT=${BENCH_PORT:-18431}

command -v wrk >/dev/null || { echo "bench: wrk not found (Debian: apt-get install -y wrk)" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench: curl not found" >&2; exit 1; }

echo "bench: building release binaries" >&2
nice cargo build --release --locked -p data -p recsys --bin data --bin recsys >&2

WORK=$(mktemp -d)
PID=""
WRITER=""
cleanup() {
    [ -n "$WRITER" ] && kill "$WRITER" 2>/dev/null || true
    [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
kib() { awk -v key="$1:" '$1 == key { print $2 }' "/proc/$PID/status"; }
# CPU time (user + system) of the agent so far, in ms: on a shared machine wall time measures the neighbours too.
# Fields 14 and 15 of /proc/PID/stat, counted after the ") " that ends the command name.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%d", ($12 + $13) * 1000 / hz }' "/proc/$PID/stat"; }

cat >"$WORK/users.lua" <<'LUA'
-- Users spread over the set with a stride, so requests do not hit one user's cached pages.
local users = tonumber(os.getenv("BENCH_USERS"))
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/insights/users/u" .. ((n * 7919) % users + 1) .. "?limit=10")
end
LUA

# A batch of BATCH rows over the first items of the catalog, for the writer.
batch_file() {
    curl -fsS "http://127.0.0.1:$PORT/items?limit=1000" | python3 -c '
import json, sys
items = [i["id"] for i in json.load(sys.stdin)["items"]]
n = int(sys.argv[1])
rows = [{"user": "bench-%d" % (k % 50), "item": items[k % len(items)], "weight": 1} for k in range(n)]
print(json.dumps({"interactions": rows}))' "$BATCH" >"$WORK/batch.json"
}

load() {
    local label=$1 users=$2
    BENCH_USERS=$users wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/users.lua" \
        "http://127.0.0.1:$PORT" >"$WORK/wrk.txt"
    local rps p50 p99
    rps=$(awk '/^Requests\/sec/ { print $2 }' "$WORK/wrk.txt")
    p50=$(awk '$1 == "50%" { print $2 }' "$WORK/wrk.txt")
    p99=$(awk '$1 == "99%" { print $2 }' "$WORK/wrk.txt")
    printf '  %-34s %10s req/s   p50 %8s   p99 %8s\n' "$label" "$rps" "$p50" "$p99"
    grep -q "Non-2xx" "$WORK/wrk.txt" && { echo "bench: non-2xx answers:" >&2; cat "$WORK/wrk.txt" >&2; exit 1; }
    return 0
}

run_set() {
    local label=$1 users=$2
    shift 2
    echo "== $label"
    local started
    started=$(now_ms)
    env "$@" PORT=$PORT BIND_ADDR=127.0.0.1 RUST_LOG="$RUST_LOG_LEVEL" "$BIN/data" >"$WORK/data.log" 2>&1 &
    PID=$!
    local deadline=$((started + 120000))
    until curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null; do
        kill -0 "$PID" 2>/dev/null || { echo "bench: data exited:" >&2; cat "$WORK/data.log" >&2; exit 1; }
        [ "$(now_ms)" -lt "$deadline" ] || { echo "bench: data not ready within 120 s" >&2; exit 1; }
        sleep 0.05
    done
    echo "  start-up to ready: $(($(now_ms) - started)) ms (CPU $(cpu_ms) ms); RSS $(($(kib VmRSS) / 1024)) MiB, peak $(($(kib VmHWM) / 1024)) MiB"
    load "reads only" "$users"
    batch_file
    (
        while :; do
            curl -fsS -o /dev/null -w '%{time_total}\n' -H 'content-type: application/json' \
                --data-binary @"$WORK/batch.json" "http://127.0.0.1:$PORT/interactions" || exit 1
        done >"$WORK/batches.txt"
    ) &
    WRITER=$!
    load "reads, $BATCH-row batches back to back" "$users"
    kill "$WRITER" 2>/dev/null || true
    wait "$WRITER" 2>/dev/null || true
    WRITER=""
    sort -n "$WORK/batches.txt" | awk -v rows="$BATCH" '{ t[NR] = $1 } END {
        if (NR) printf "  %d batches of %d rows meanwhile: p50 %.1f ms, max %.1f ms per POST\n", NR, rows, t[int(NR / 2) + 1] * 1000, t[NR] * 1000 }'
    echo "  RSS after: $(($(kib VmRSS) / 1024)) MiB, peak $(($(kib VmHWM) / 1024)) MiB"
    kill -TERM "$PID"
    wait "$PID" || true
    PID=""
}

for set in $SETS; do
    case $set in
        default) run_set "default data set (480 items, 1000 users, 30000 interactions)" 1000 ;;
        generated)
            "$BIN/recsys" generate --items "$ITEMS" --users "$USERS" --interactions "$INTERACTIONS" --seed "$SEED" \
                --output "$WORK/data.jsonl"
            run_set "DATA_FILE: $ITEMS items, $USERS users, $INTERACTIONS interactions ($(du -m "$WORK/data.jsonl" | cut -f1) MiB)" \
                "$USERS" DATA_FILE="$WORK/data.jsonl"
            ;;
        *) echo "bench: unknown set $set (default, generated)" >&2; exit 2 ;;
    esac
done
