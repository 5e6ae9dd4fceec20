# shellcheck shell=bash
# Sourced by bench/run.sh and bench/dapr.sh (not a benchmark itself): a process's CPU time and memory read from
# /proc, and wrk's latency figures in milliseconds. A process that is gone reads as 0 (bench/dapr.sh notices exits
# itself and discards such a run).

TICKS_PER_S=$(getconf CLK_TCK)

# CPU time (user + system) a process has used so far, in clock ticks; 0 once it is gone.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# CPU microseconds per request: (ticks after - ticks before) / requests.
cpu_us() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$TICKS_PER_S" 'BEGIN {printf "%.1f", (b - a) / hz * 1e6 / n}'; }

# Resident set size (current and peak) of a process, in MiB, as CUR/PEAK; 0/0 once it is gone.
rss() {
    local status
    status=$(cat "/proc/$1/status" 2>/dev/null) || { echo 0/0; return; }
    awk '/^VmRSS:/ {cur = $2} /^VmHWM:/ {peak = $2} END {printf "%.1f/%.1f", cur / 1024, peak / 1024}' <<<"$status"
}

# wrk latency (e.g. 512.00us, 1.20ms, 2.00s) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n
    }'
}
