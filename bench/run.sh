#!/bin/bash
# bench/run.sh [SUITE...]: run carrel's benchmark suites (bench/suites/SUITE.sh) against the peers
# (Debian's dockerd 20.10 and podman 4.3, started and stopped by each suite) and write one Markdown
# report per suite to bench/results/SUITE.md (gitignored). Copy a report, with the command that
# produced it, into bench/RESULTS.md.
#
#   bench/run.sh                     every suite: load run diffcommit volumes cli
#   bench/run.sh load                one suite
#   ROUNDS=3 bench/run.sh run        fewer rounds (every suite reads ROUNDS; see its header)
#
# Needs root and the release binary: cargo build --release -p carrel (CARREL=... for another).
# These are benchmarks, not tests: they time things and report ratios; they never fail on a
# missed aim.
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_SUITES=(load run diffcommit volumes cli)
ALL_SUITES=(load run diffcommit volumes cli)

if [ $# -eq 0 ]; then
  suites=("${DEFAULT_SUITES[@]}")
elif [ "$1" = all ]; then
  suites=("${ALL_SUITES[@]}")
else
  suites=("$@")
fi
for s in "${suites[@]}"; do
  [ -x "bench/suites/$s.sh" ] || { echo "unknown suite '$s' (have: ${ALL_SUITES[*]})" >&2; exit 2; }
done

# the command line as given, with the environment overrides the suites read, for the reports
env_prefix=
for v in CARREL WORK QUIET_BUSY QUIET_MAX QUIET_TOTAL ROUNDS WARMUP RUNTIMES ARCHIVE LOAD_DIRS IMAGES TREE_DIRS ROUNDS_LS NV NL ND NF DD_MB P CARREL_SERVE_ARGS N_KEEPALIVE CLIENTS SECTIONS NO_RUN ONLY QUIET_SAMPLE; do
  [ -n "${!v:-}" ] || continue
  # quoted when it holds more than a word, so that the recorded command can be pasted back
  if [[ ${!v} =~ ^[A-Za-z0-9_./:=,+-]+$ ]]; then env_prefix+="$v=${!v} "; else env_prefix+="$v='${!v}' "; fi
done
for s in "${suites[@]}"; do
  echo "=== bench/run.sh: suite $s ===" >&2
  BENCH_CMD="${env_prefix}bench/run.sh $s" "bench/suites/$s.sh"
done

# nothing of the peers may survive a suite
if pgrep -f '/run/carrel-bench/docker' >/dev/null || findmnt -rn -o TARGET | grep -q '^/var/tmp/carrel-bench/'; then
  echo "WARNING: bench leftovers (dockerd or mounts under /var/tmp/carrel-bench)" >&2
fi
echo "reports: $(for s in "${suites[@]}"; do printf '%s/%s.md ' "${RESULTS_DIR:-bench/results}" "$s"; done)" >&2
