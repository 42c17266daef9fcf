# shellcheck shell=bash
# bench/lib.sh: shared by bench/suites/*.sh (source it after setting SUITE). Not a test helper:
# these are benchmarks that run carrel and its peers (Debian's dockerd 20.10 and podman 4.3) on the
# same work in one run and report medians and ratios (carrel ÷ peer).
#
# Adapted from the recipes in /work/shared/bench (lib.sh: timing and medians; start-dockerd.sh /
# stop-dockerd.sh: a private dockerd by hand, no systemd; podman-env.sh and podman-*.conf: root
# podman with overlay, runc, cgroupfs, no network and the ulimits these VMs allow). Differences:
# every peer gets private roots under $WORK/<suite> and /run/carrel-bench (never the system's
# /var/lib/docker or /var/lib/containers), timing uses bash's $EPOCHREALTIME (no fork per sample),
# and everything a suite starts is stopped and removed by an EXIT trap.
#
# Environment (all optional):
#   CARREL       carrel binary                       [<repo>/target/release/carrel]
#                (copied into the suite's scratch dir at the start, so that a rebuild during a long
#                run does not change the binary under measurement)
#   WORK         scratch and cached inputs           [/var/tmp/carrel-bench]
#   RESULTS_DIR  where <suite>.md / .raw.tsv go      [<repo>/bench/results]
#   ROUNDS       timed rounds per case (suite default otherwise)
#   KEEP=1       keep the suite's data roots and peers' data at the end (debugging)
#   BENCH_CMD    the command line recorded in the results (bench/run.sh sets it)
#   QUIET_BUSY   before every round, wait until the CPUs are at most this % busy (other work on
#                this shared VM, measured over 1 s while the suite is idle)   [25; 100 = never wait]
#   QUIET_MAX    wait at most this many seconds for a quiet machine, then go on   [120]
#   QUIET_SAMPLE how long each look at the CPUs lasts, in seconds (one before every round)   [1]
#   QUIET_TOTAL  wait at most this many seconds in all per suite   [600]

set -euo pipefail
export LC_ALL=C          # "." as decimal separator in $EPOCHREALTIME and printf
: "${SUITE:?set SUITE before sourcing bench/lib.sh}"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
CARREL=${CARREL:-$REPO_DIR/target/release/carrel}
WORK=${WORK:-/var/tmp/carrel-bench}
INPUTS=$WORK/inputs                 # cached inputs (archives, tars): kept between runs
RUN_DIR=$WORK/$SUITE                # this suite's data roots: removed at the end
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
RAW=$RESULTS_DIR/$SUITE.raw.tsv     # group, subject, round, ms  (every sample, in order)
CMDS=$RESULTS_DIR/$SUITE.cmds.tsv   # group, subject, command    (what was timed)
OUT_MD=$RESULTS_DIR/$SUITE.md       # the suite's Markdown report
LOGS=$WORK/logs                     # peer daemon logs, failing commands' stderr
BENCH_CMD=${BENCH_CMD:-bench/suites/$SUITE.sh}
PRIV=/run/carrel-bench              # private exec roots, sockets and pid files of the peers

# carrel's data root for this suite (fresh, on the same filesystem as the peers' roots)
export CARREL_ROOT=$RUN_DIR/carrel

# ---------------------------------------------------------------------------------------------
# logging, exit hooks

log() { printf '[%(%H:%M:%S)T] [%s] %s\n' -1 "$SUITE" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

_EXIT_HOOKS=()
# at_exit CMD...: run CMD (as one string, eval'd) at exit, most recently added first
at_exit() { _EXIT_HOOKS+=("$*"); }
_run_exit_hooks() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${_EXIT_HOOKS[i]}" || log "cleanup step failed: ${_EXIT_HOOKS[i]}"
  done
  exit "$rc"
}
trap _run_exit_hooks EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# umount_under DIR: unmount everything mounted at or below DIR, deepest first
umount_under() {
  local dir=$1 m
  [ -e "$dir" ] || return 0
  dir=$(realpath "$dir")
  findmnt -rn -o TARGET | awk -v d="$dir" '$0 == d || index($0, d "/") == 1' | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || log "cannot unmount $m"; done
}

# ---------------------------------------------------------------------------------------------
# suite setup: results files, carrel data root

# bench_init: fresh results files and scratch dir; registers the final cleanup of RUN_DIR
bench_init() {
  [ "$(id -u)" = 0 ] || die "run as root (the peers and carrel mount filesystems)"
  [ -x "$CARREL" ] || die "no carrel binary at $CARREL: cargo build --release -p carrel"
  mkdir -p "$RESULTS_DIR" "$INPUTS" "$LOGS" "$PRIV"
  # one bench at a time: the peers' sockets, pid files and the machine are shared
  exec 9>"$PRIV.lock"
  flock -n 9 || die "another bench runs (lock $PRIV.lock)"
  : >"$RAW"; : >"$CMDS"
  umount_under "$RUN_DIR"
  rm -rf "$RUN_DIR"; mkdir -p "$RUN_DIR"
  at_exit _cleanup_run_dir
  BENCH_START=$(date -u +%FT%TZ)
  LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
  # the binary under measurement, frozen for this run
  CARREL_SRC=$CARREL
  CARREL_BUILT=$(date -u -r "$CARREL_SRC" +%FT%TZ)
  CARREL=$RUN_DIR/bin/carrel
  mkdir -p "$RUN_DIR/bin"; cp "$CARREL_SRC" "$CARREL"
  "$CARREL" --version >/dev/null || die "$CARREL_SRC does not run (being rebuilt?)"
  CARREL_SHA=$(sha256sum "$CARREL" | cut -c1-12)
  GIT_REV=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$REPO_DIR" diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV (+ uncommitted changes in crates/)"
}
_cleanup_run_dir() {
  if [ "${KEEP:-0}" = 1 ]; then log "KEEP=1: leaving $RUN_DIR"; return 0; fi
  umount_under "$RUN_DIR"
  rm -rf "$RUN_DIR"
}

# carrel CLI on this suite's data root
carrel() { "$CARREL" "$@"; }

# bin_of ENGINE: the binary behind the carrel/docker/podman functions, for xargs and the like
bin_of() {
  case $1 in
    carrel) echo "$CARREL" ;;
    docker) echo /usr/bin/docker ;;
    podman) echo /usr/bin/podman ;;
    *) die "bin_of: unknown engine $1" ;;
  esac
}

# carrel_cleanup: remove carrel's containers (their monitors unmount their roots) and left mounts
carrel_cleanup() {
  local ids
  ids=$(carrel ps -aq 2>/dev/null || true)
  # shellcheck disable=SC2086  # one id per word
  [ -z "$ids" ] || carrel rm -f $ids >/dev/null 2>&1 || log "carrel rm -f failed"
  umount_under "$CARREL_ROOT"
}

# busybox_everywhere: the same busybox image in carrel, docker and podman: carrel builds it from
# the host's busybox-static (`carrel image import-busybox`), `carrel save` writes it, the peers
# `load` that archive. Needs docker_start and podman_setup first.
busybox_everywhere() {
  log "building the busybox image (carrel image import-busybox) and loading it into the peers"
  run_quiet carrel image import-busybox
  run_quiet carrel save -o "$RUN_DIR/busybox.tar" busybox
  run_quiet docker load -i "$RUN_DIR/busybox.tar"
  run_quiet podman load -i "$RUN_DIR/busybox.tar"
  run_quiet docker image inspect busybox:latest
  run_quiet podman image inspect busybox:latest
}

# ---------------------------------------------------------------------------------------------
# peers: a private dockerd (recipe: /work/shared/bench/start-dockerd.sh, stop-dockerd.sh)

DOCKER_ROOT=$RUN_DIR/docker
DOCKER_EXEC=$PRIV/docker
DOCKER_SOCK=$PRIV/docker.sock
DOCKER_PID=$PRIV/docker.pid

# exported, so that docker started by xargs & co. talks to this dockerd too
export DOCKER_HOST=unix://$DOCKER_SOCK
docker() { /usr/bin/docker "$@"; }

# docker_start: dockerd with its own data root, exec root, socket and pid file; overlay2; runc by
# default and crun registered; no bridge or iptables (containers get network "none"-like lo only)
docker_start() {
  if [ -f "$DOCKER_PID" ] && kill -0 "$(cat "$DOCKER_PID")" 2>/dev/null; then
    die "a bench dockerd already runs (pid $(cat "$DOCKER_PID")): another bench in progress?"
  fi
  rm -f "$DOCKER_PID" "$DOCKER_SOCK"
  mkdir -p "$DOCKER_ROOT" "$DOCKER_EXEC"
  at_exit docker_stop
  setsid /usr/sbin/dockerd \
    --data-root "$DOCKER_ROOT" --exec-root "$DOCKER_EXEC" \
    -H "unix://$DOCKER_SOCK" -p "$DOCKER_PID" \
    --iptables=false --ip6tables=false --bridge=none --ip-masq=false \
    --storage-driver=overlay2 \
    --add-runtime crun=/usr/bin/crun --default-runtime runc \
    >>"$LOGS/$SUITE-dockerd.log" 2>&1 </dev/null 9>&- &
  local i
  for ((i = 0; i < 60; i++)); do
    if docker version >/dev/null 2>&1; then log "dockerd up (pid $(cat "$DOCKER_PID"))"; return 0; fi
    sleep 0.5
  done
  tail -20 "$LOGS/$SUITE-dockerd.log" >&2
  die "dockerd did not come up; see $LOGS/$SUITE-dockerd.log"
}

# docker_stop: remove containers, stop dockerd and its managed containerd by their pid files
# only, unmount what they left, remove the data root
docker_stop() {
  local pid ctrd i ids
  [ -f "$DOCKER_PID" ] || return 0
  pid=$(cat "$DOCKER_PID")
  ctrd=$(cat "$DOCKER_EXEC/containerd/containerd.pid" 2>/dev/null || true)
  ids=$(docker ps -aq 2>/dev/null || true)
  # shellcheck disable=SC2086  # one id per word
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "dockerd $pid still alive, KILL"; kill -KILL "$pid"; }
  fi
  if [ -n "$ctrd" ] && kill -0 "$ctrd" 2>/dev/null; then
    sleep 2; kill -0 "$ctrd" 2>/dev/null && kill -TERM "$ctrd"
  fi
  rm -f "$DOCKER_PID" "$DOCKER_SOCK"
  umount_under "$DOCKER_EXEC"; umount_under "$DOCKER_ROOT"
  rm -rf "$DOCKER_EXEC"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DOCKER_ROOT"
  log "dockerd stopped"
}

# ---------------------------------------------------------------------------------------------
# peers: root podman (recipe: /work/shared/bench/podman-env.sh, podman-containers.conf,
# podman-storage.conf), with its storage, state and temporary dirs private to the suite

PODMAN_ROOT=$RUN_DIR/podman
PODMAN_RUN=$PRIV/podman

podman() { /usr/bin/podman "$@"; }

# podman_setup: write the two conf files and point podman at them (no daemon to start)
podman_setup() {
  mkdir -p "$PODMAN_ROOT" "$PODMAN_RUN"
  # podman's shared-memory lock table is sized once by whoever creates it: start from none so
  # that num_locks below applies (podman would otherwise ask for `podman system renumber`)
  pgrep -x podman >/dev/null || rm -f /dev/shm/libpod_lock
  # same settings as the shared recipe; paths private to this run
  cat >"$PODMAN_ROOT/containers.conf" <<EOF
# generated by bench/lib.sh (from /work/shared/bench/podman-containers.conf)
[containers]
netns = "none"
# no CAP_SYS_RESOURCE in these VMs, hard RLIMIT_NOFILE 20000: podman's defaults fail with EPERM
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
# each volume and container holds one of these; the default 2048 stops the volumes suite's 10,000
num_locks = 16384
events_logger = "file"
events_logfile_path = "$PODMAN_RUN/events.log"
tmp_dir = "$PODMAN_RUN/libpod"
static_dir = "$PODMAN_ROOT/storage/libpod"
volume_path = "$PODMAN_ROOT/storage/volumes"
EOF
  cat >"$PODMAN_ROOT/storage.conf" <<EOF
# generated by bench/lib.sh (from /work/shared/bench/podman-storage.conf)
[storage]
driver = "overlay"
runroot = "$PODMAN_RUN/storage"
graphroot = "$PODMAN_ROOT/storage"
EOF
  export CONTAINERS_CONF=$PODMAN_ROOT/containers.conf
  export CONTAINERS_STORAGE_CONF=$PODMAN_ROOT/storage.conf
  at_exit podman_stop
  podman info --format '{{.Store.GraphRoot}} {{.Host.OCIRuntime.Name}}' >/dev/null ||
    die "podman does not work with $CONTAINERS_CONF"
}

# podman_stop: remove containers (podman's rm -f waits for the stop timeout unless -t 0) and
# images, unmount what storage left mounted, remove the roots
podman_stop() {
  [ -n "${CONTAINERS_STORAGE_CONF:-}" ] || return 0
  podman rm -af -t 0 >/dev/null 2>&1 || true
  podman rmi -af >/dev/null 2>&1 || true
  umount_under "$PODMAN_RUN"; umount_under "$PODMAN_ROOT"
  rm -rf "$PODMAN_RUN"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$PODMAN_ROOT"
  unset CONTAINERS_CONF CONTAINERS_STORAGE_CONF
  log "podman cleaned up"
}

# ---------------------------------------------------------------------------------------------
# timing: every sample goes to $RAW as "group<TAB>subject<TAB>round<TAB>ms"

# describe GROUP SUBJECT COMMAND: what the samples of (GROUP, SUBJECT) time, for the report
describe() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$CMDS"; }

# record GROUP SUBJECT ROUND MS
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; }

# _us: microseconds since the epoch, without a fork
_us() { local t=${EPOCHREALTIME/./}; echo "$t"; }

# _ms_between T0 T1 (from _us): elapsed milliseconds with 3 decimals
_ms_between() { local d=$(($2 - $1)); printf '%d.%03d' $((d / 1000)) $((d % 1000)); }

# run_quiet CMD...: run with stdin from /dev/null, output discarded; on failure show the command and its stderr, and fail
run_quiet() {
  local err=$LOGS/$SUITE-last.err
  if ! "$@" </dev/null >/dev/null 2>"$err" 9>&-; then
    log "FAILED: $*"; tail -5 "$err" >&2; return 1
  fi
}

# timed GROUP SUBJECT ROUND CMD...: run CMD once, record its wall time in ms. LAST_MS holds it.
timed() {
  local g=$1 s=$2 r=$3 t0 t1; shift 3
  t0=${EPOCHREALTIME/./}
  run_quiet "$@" || die "timed command failed ($g / $s)"
  t1=${EPOCHREALTIME/./}
  LAST_MS=$(_ms_between "$t0" "$t1")
  record "$g" "$s" "$r" "$LAST_MS"
}

# timed_sync GROUP SUBJECT ROUND CMD...: `sync` first (untimed, so the op starts with clean page
# cache state), then time CMD into GROUP and CMD + a final `sync` into "GROUP + sync"
timed_sync() {
  local g=$1 s=$2 r=$3 t0 t1 t2; shift 3
  sync
  t0=${EPOCHREALTIME/./}
  run_quiet "$@" || die "timed command failed ($g / $s)"
  t1=${EPOCHREALTIME/./}
  sync
  t2=${EPOCHREALTIME/./}
  record "$g" "$s" "$r" "$(_ms_between "$t0" "$t1")"
  record "$g + sync" "$s" "$r" "$(_ms_between "$t0" "$t2")"
}

# cpu_busy: % of CPU time not idle (nor iowait) over the next QUIET_SAMPLE seconds, all CPUs
cpu_busy() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  sleep "${QUIET_SAMPLE:-1}"
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a, x, " "); split(b, y, " "); d = (y[1] - x[1]) + (y[2] - x[2]);
    printf "%d\n", (d > 0) ? 100 * (y[1] - x[1]) / d : 0}'
}

# wait_quiet: called before every round. The VM is shared: when something else keeps the CPUs
# busy (a build, tests), wait for it to finish (up to QUIET_MAX seconds, QUIET_TOTAL in all), so
# that rounds run on a quiet machine. Counts the rounds that started busy anyway in BUSY_ROUNDS, for the report.
BUSY_ROUNDS=0; QUIET_WAITED=0
wait_quiet() {
  local limit=${QUIET_BUSY:-25} max=${QUIET_MAX:-120} waited=0 busy
  busy=$(cpu_busy)
  while ((busy > limit)); do
    if ((waited >= max || QUIET_WAITED + waited >= ${QUIET_TOTAL:-600})); then
      QUIET_WAITED=$((QUIET_WAITED + waited))
      log "machine still ${busy}% busy after ${waited}s: going on"
      BUSY_ROUNDS=$((BUSY_ROUNDS + 1)); return 0
    fi
    ((waited == 0)) && log "machine ${busy}% busy (other work): waiting for it to quiet down"
    sleep 4; waited=$((waited + 5))
    busy=$(cpu_busy)
  done
  QUIET_WAITED=$((QUIET_WAITED + waited))
  ((waited == 0)) || log "quiet after ${waited}s"
}

# settle: wait (untimed, at most SETTLE_MAX_MS, default 3000) until the per-container helpers the
# last command left running have exited: carrel's monitor (which deletes the runtime's state and
# the files of a --rm container after telling the client), docker's containerd-shim, podman's
# conmon. Each engine is timed until its command returns, as a user waits; what it does after
# that must not run into the next subject's time. SETTLED_MS holds how long the wait took.
# (SETTLED_MS is taken when the look that found none began: a look, a `pgrep` over /proc, takes
# ~10 ms itself, so it is the resolution.)
settle() {
  local max=${SETTLE_MAX_MS:-3000} t0 t1
  t0=${EPOCHREALTIME/./}
  t1=$t0
  while pgrep -f -- "--root $CARREL_ROOT container-monitor|containerd-shim|conmon" >/dev/null; do
    (((${EPOCHREALTIME/./} - t0) / 1000 >= max)) && { log "helpers still running after ${max} ms: going on"; break; }
    sleep 0.002
    t1=${EPOCHREALTIME/./}
  done
  SETTLED_MS=$(_ms_between "$t0" "$t1")
}

# rotate R ITEM...: the items rotated left by R (A/B alternation: every engine goes first in turn,
# so slow drifts of these shared VMs hit all engines alike)
rotate() {
  local r=$1; shift
  local n=$# i
  for ((i = 0; i < n; i++)); do
    local k=$(((r + i) % n + 1))
    printf '%s\n' "${!k}"
  done
}

# ---------------------------------------------------------------------------------------------
# report

# machine_facts: Markdown list of the facts results depend on
machine_facts() {
  local dev
  dev=$(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$WORK" | awk '{print $2 " on " $1 " (" $3 ")"}')
  echo "- Date: $BENCH_START (UTC); load average at start $LOADAVG_START, at end $(cut -d' ' -f1-3 /proc/loadavg); waited ${QUIET_WAITED}s in all for other work on the VM to finish before rounds; $BUSY_ROUNDS rounds started with the CPUs more than ${QUIET_BUSY:-25}% busy anyway"
  echo "- Machine: $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "- Backing filesystem of $WORK (all data roots): $dev"
  echo "- carrel: $("$CARREL" --version 2>/dev/null | head -1), $CARREL_SRC built $CARREL_BUILT (sha256 $CARREL_SHA), repository at $GIT_REV"
  echo "- Peers: docker $(dpkg-query -W -f='${Version}' docker.io 2>/dev/null), podman $(dpkg-query -W -f='${Version}' podman 2>/dev/null), runc $(runc --version | awk 'NR==1{print $3}'), crun $(crun --version | awk 'NR==1{print $3}')"
}

# write_report TITLE [report.py options (--aim ..., --note ...)]: results/<suite>.md
write_report() {
  local title=$1; shift
  {
    echo "## $title"
    echo
    echo "Command: \`$BENCH_CMD\`"
    echo
    machine_facts
    echo
    python3 "$BENCH_DIR/report.py" --raw "$RAW" --cmds "$CMDS" "$@"
  } >"$OUT_MD"
  log "report: $OUT_MD"
  cat "$OUT_MD"
}
