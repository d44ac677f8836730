#!/usr/bin/env bash
# Runs every bench with short but stable settings, then prints a summary (markdown tables, the
# ratios of DESIGN section 6, and whether each bar holds). About 4-5 minutes on 2 cores (criterion: 0.5 s warm-up, 1 s measurement per function).
#
#   bash benches/run.sh                  # everything
#   BENCH_WARM_UP=1 BENCH_MEASURE=3 bash benches/run.sh   # longer, steadier criterion runs
#   STAMPEDE_ROUNDS=50 bash benches/run.sh                # more stampede rounds
#
# Redis and memcached benches start their own `redis-server` / `memcached` on free loopback ports
# and skip with a printed line when the binary is missing. The plots are criterion's HTML report:
# <target>/criterion/report/index.html. The whole output is also kept in <target>/bench-run.log.
set -euo pipefail
cd "$(dirname "$0")/.."

WARM="${BENCH_WARM_UP:-0.5}"
MEASURE="${BENCH_MEASURE:-1}"
FEATURES="redis,memcached,file"
TARGET="${CARGO_TARGET_DIR:-target}"
mkdir -p "$TARGET"
LOG="$TARGET/bench-run.log"
CRITERION_ARGS=(--warm-up-time "$WARM" --measurement-time "$MEASURE")

{
  echo "# dogpile benches, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/^Mem:/ {print $2}') GiB memory"
  echo "criterion: warm-up ${WARM}s, measurement ${MEASURE}s; stampede rounds: ${STAMPEDE_ROUNDS:-20}"
} | tee "$LOG"

# The summary reads only figures written from now on: criterion keeps the groups of earlier runs.
export BENCH_SINCE="$(date +%s)"

# Build first, so compile time is not mixed with the runs.
cargo bench --features "$FEATURES" --no-run 2>&1 | tail -n 3

# Files of an earlier run must not reach the summary if a bench fails.
rm -f "$TARGET/criterion/stampede.md" "$TARGET/criterion/redis-get-multi.txt"

run() {
  echo
  echo "== $*"
  "$@" 2>&1 | tee -a "$LOG"
}

run cargo bench --features "$FEATURES" --bench hit_path -- "${CRITERION_ARGS[@]}"
run cargo bench --features "$FEATURES" --bench miss_path -- "${CRITERION_ARGS[@]}"
run cargo bench --features "$FEATURES" --bench fill
run cargo bench --features "$FEATURES" --bench servers -- "${CRITERION_ARGS[@]}"
run cargo bench --features "$FEATURES" --bench stampede
echo
echo "================================ summary ================================"
cargo bench --features "$FEATURES" --bench summary 2>/dev/null | tee "$TARGET/bench-summary.md"
echo
echo "Summary kept in $TARGET/bench-summary.md; full output in $LOG."
