#!/usr/bin/env bash
# Scale of the recommender core (crate recsys, issue 16), release build, no network:
#   1. the default data set: load + process time, memory, and the time per request of the data side
#      (user_insights + JSON encoding) and of each model (JSON decoding + recommend + JSON encoding);
#   2. a generated data set of RECSYS_ITEMS items / RECSYS_INTERACTIONS interactions (100 000 / 1 000 000): the same
#      figures, read from a DATA_FILE (JSON Lines) as the data agent would read it;
#   3. the leave-last-out evaluation of v1 and v2 on the default data set.
# Goals (issue 16): the large set loads and is processed in <= 10 s with a peak RSS <= 300 MiB; the per-request work
# must leave the whole GET /recommend a p99 <= 5 ms. The figures are printed, not asserted: the machine is shared.
#
# Settings (environment): RECSYS_ITEMS (100000), RECSYS_USERS (50000), RECSYS_INTERACTIONS (1000000),
# RECSYS_REQUESTS (20000, per data set), RECSYS_SEED (2024).
set -euo pipefail
cd "$(dirname "$0")/.."

ITEMS=${RECSYS_ITEMS:-100000}
USERS=${RECSYS_USERS:-50000}
INTERACTIONS=${RECSYS_INTERACTIONS:-1000000}
REQUESTS=${RECSYS_REQUESTS:-20000}
SEED=${RECSYS_SEED:-2024}
BIN="${CARGO_TARGET_DIR:-target}/release/recsys"

echo "bench: building recsys (release)" >&2
nice cargo build --release --locked -p recsys --bin recsys >&2

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== default data set"
"$BIN" bench --requests "$REQUESTS"

echo
echo "== generated: $ITEMS items, $USERS users, $INTERACTIONS interactions (seed $SEED)"
started=$(date +%s%N)
"$BIN" generate --items "$ITEMS" --users "$USERS" --interactions "$INTERACTIONS" --seed "$SEED" \
    --output "$WORK/data.jsonl"
echo "DATA_FILE: $(du -m "$WORK/data.jsonl" | cut -f1) MiB, generated in $((($(date +%s%N) - started) / 1000000)) ms"
"$BIN" bench --data-file "$WORK/data.jsonl" --requests "$REQUESTS"

echo
echo "== evaluation, default data set"
"$BIN" eval
