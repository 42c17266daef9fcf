#!/bin/bash
# Suite "volumes" (issue "Volumes, bind mounts and tmpfs"). (carrel's side is skipped, with a
# note, by a carrel without `volume`.)
#
# Measures, carrel vs docker vs podman, each case in rounds with the engines rotated:
#   - `volume create` x NV (one CLI call each, sequential; the total is one sample)
#   - `volume rm` x NV (one CLI call each, sequential)
#   - `volume ls` with NL volumes
#   - `system df` and `system df -v` with ND volumes of NF files each
#   - sequential write of DD_MB MiB (busybox dd bs=1M conv=fsync) inside a busybox container to
#     a named volume, a bind mount, a tmpfs and the container's writable layer, next to the same
#     dd on the host directory (same filesystem as the data roots) and on the host's /dev/shm;
#     the time is taken inside the container from /proc/uptime (10 ms resolution), so that
#     container start and removal are not counted.
# Aim: every volume command >= 5x faster than both peers (carrel ÷ peer <= 0.2); throughput to a
# volume and to a bind mount within 3% of the host directory (time ratio <= 1.03).
#
# Adapted from /work/shared/bench/bench-volumes.sh and bench-fio.sh (populating volumes through
# containers that mount 50 volumes each; fio replaced by busybox dd so that the tiny image does).
#
# Usage: bench/suites/volumes.sh         (or bench/run.sh volumes)
# Environment: ROUNDS (3: create/rm rounds), ROUNDS_LS (7: ls/df/dd rounds), NV (1000),
# NL (10000), ND (1000), NF (100), DD_MB (1024), P (4: parallel setup calls).
SUITE=volumes
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "$0")/../lib.sh"

ROUNDS=${ROUNDS:-3}
ROUNDS_LS=${ROUNDS_LS:-7}
NV=${NV:-1000}
NL=${NL:-10000}
ND=${ND:-1000}
NF=${NF:-100}
DD_MB=${DD_MB:-1024}
P=${P:-4}

bench_init
docker_start
podman_setup
at_exit carrel_cleanup
busybox_everywhere

# carrel's side only where carrel has the commands (the guard the issue asks for)
ENGINES=(docker podman)
if carrel volume ls >/dev/null 2>&1; then
  ENGINES=(carrel docker podman)
else
  log "carrel has no 'volume' command yet: skipping carrel's side (peers only)"
fi
# podman's rm -f waits for the stop timeout unless -t 0; volume rm -f is immediate everywhere
rm_bench_volumes() {
  local e
  for e in "${ENGINES[@]}"; do rm_volumes "$e" bench- 2>/dev/null || log "$e: cannot remove volumes"; done
}
at_exit rm_bench_volumes

# setup helpers (untimed): create / remove many volumes, P calls at a time
mk_volumes() { # mk_volumes ENGINE PREFIX COUNT
  seq 0 $(($3 - 1)) | sed "s/^/$2/" | xargs -r -P "$P" -n 1 "$(bin_of "$1")" volume create >/dev/null
}
rm_volumes() { # rm_volumes ENGINE PREFIX
  { "$1" volume ls -q | grep "^$2" || true; } | xargs -r -n 500 "$(bin_of "$1")" volume rm -f >/dev/null
}
count_volumes() { "$1" volume ls -q | grep -c "^$2" || true; }

# --- volume create / rm x NV, sequential CLI calls ---------------------------------------------
create_n() { local e=$1 j; for ((j = 0; j < NV; j++)); do "$e" volume create "bench-v$j"; done; }
rm_n() { local e=$1 j; for ((j = 0; j < NV; j++)); do "$e" volume rm "bench-v$j"; done; }
GC="volume create ×$NV (sequential CLI calls)"
GR="volume rm ×$NV (sequential CLI calls)"
for e in "${ENGINES[@]}"; do
  describe "$GC" "$e" "for j in 0..$((NV - 1)): $e volume create bench-v\$j"
  describe "$GR" "$e" "for j in 0..$((NV - 1)): $e volume rm bench-v\$j"
done
for ((r = 1; r <= ROUNDS; r++)); do
  wait_quiet
  mapfile -t order < <(rotate "$r" "${ENGINES[@]}")
  for e in "${order[@]}"; do timed "$GC" "$e" "$r" create_n "$e"; done
  for e in "${order[@]}"; do timed "$GR" "$e" "$r" rm_n "$e"; done
  log "create/rm round $r/$ROUNDS done"
done

# --- volume ls with NL volumes -------------------------------------------------------------------
G="volume ls with $NL volumes"
for e in "${ENGINES[@]}"; do
  log "$e: creating $NL volumes"
  mk_volumes "$e" bench-l "$NL"
  [ "$(count_volumes "$e" bench-l)" -eq "$NL" ] || log "WARNING: $e has not $NL volumes"
  describe "$G" "$e" "$e volume ls"
  run_quiet "$e" volume ls   # warm-up
done
for ((r = 1; r <= ROUNDS_LS; r++)); do
  wait_quiet
  mapfile -t order < <(rotate "$r" "${ENGINES[@]}")
  for e in "${order[@]}"; do timed "$G" "$e" "$r" "$e" volume ls; done
done
for e in "${ENGINES[@]}"; do rm_volumes "$e" bench-l; done

# --- system df with ND volumes of NF files ---------------------------------------------------------
G="system df with $ND volumes × $NF files"
GV="system df -v with $ND volumes × $NF files"
# shellcheck disable=SC2016  # expanded by the container's shell
POPULATE='for d in /v/*; do i=0; while [ $i -lt '"$NF"' ]; do echo $i >$d/f$i; i=$((i + 1)); done; done'
for e in "${ENGINES[@]}"; do
  log "$e: creating and populating $ND volumes (containers mounting 50 volumes each)"
  mk_volumes "$e" bench-d "$ND"
  for ((b = 0; b < ND; b += 50)); do
    args=()
    for ((j = b; j < b + 50 && j < ND; j++)); do args+=(-v "bench-d$j:/v/$j"); done
    run_quiet "$e" run --rm "${args[@]}" busybox sh -c "$POPULATE"
  done
  describe "$G" "$e" "$e system df"
  describe "$GV" "$e" "$e system df -v"
  run_quiet "$e" system df   # warm-up
done
for ((r = 1; r <= ROUNDS_LS; r++)); do
  wait_quiet
  mapfile -t order < <(rotate "$r" "${ENGINES[@]}")
  for e in "${order[@]}"; do timed "$G" "$e" "$r" "$e" system df; done
  for e in "${order[@]}"; do timed "$GV" "$e" "$r" "$e" system df -v; done
done
for e in "${ENGINES[@]}"; do rm_volumes "$e" bench-d; done

# --- sequential write throughput: volume, bind mount, tmpfs, writable layer vs the host ---------
# DD DIR: prints "<start> <end>" in seconds from /proc/uptime around dd ... conv=fsync in DIR
# shellcheck disable=SC2016  # expanded by the container's shell
DD='d=$1; mkdir -p $d; a=$(cut -d" " -f1 /proc/uptime); dd if=/dev/zero of=$d/dd.dat bs=1M count='"$DD_MB"' conv=fsync 2>/dev/null; b=$(cut -d" " -f1 /proc/uptime); rm -f $d/dd.dat; echo $a $b'
HOSTDIR=$RUN_DIR/hostdir
SHM=/dev/shm/carrel-bench-dd
mkdir -p "$HOSTDIR/bind" "$SHM"
at_exit "rm -rf '$SHM'"
for e in "${ENGINES[@]}"; do run_quiet "$e" volume create bench-dd; done
declare -A FLAGS=([volume]="-v bench-dd:/t" [bind]="-v $HOSTDIR/bind:/t" [tmpfs]="--tmpfs /t:rw,size=$((DD_MB + 256))m" [layer]="")
declare -A HOSTREF=([volume]="host dir" [bind]="host dir" [tmpfs]="host /dev/shm" [layer]="host dir")
# inner_ms GROUP SUBJECT ROUND CMD...: CMD prints "<start> <end>" seconds: record the difference
inner_ms() {
  local g=$1 s=$2 r=$3 out; shift 3
  out=$("$@" </dev/null 2>>"$LOGS/$SUITE-dd.err" 9>&- | tail -1) || die "$g / $s failed: $(tail -3 "$LOGS/$SUITE-dd.err")"
  record "$g" "$s" "$r" "$(awk '{printf "%.3f", ($2 - $1) * 1000}' <<<"$out")"
}
# ctr_dd ENGINE TARGET: a fresh container (no --rm: podman makes --rm containers' layers volatile)
ctr_dd() {
  local e=$1 t=$2 flags
  read -r -a flags <<<"${FLAGS[$t]}"
  "$e" run --name bench-dd "${flags[@]}" busybox sh -c "$DD" _ /t
  "$e" rm bench-dd >/dev/null
}
for t in volume bind tmpfs layer; do
  G="dd ${DD_MB} MiB conv=fsync to $t"
  for e in "${ENGINES[@]}"; do describe "$G" "$e" "$e run --name bench-dd ${FLAGS[$t]} busybox sh -c 'dd if=/dev/zero of=/t/dd.dat bs=1M count=$DD_MB conv=fsync' (timed inside)"; done
  describe "$G" "${HOSTREF[$t]}" "busybox sh -c 'dd ... of=DIR/dd.dat ...' on the host, DIR = $([ "$t" = tmpfs ] && echo "$SHM" || echo "$HOSTDIR")"
done
for ((r = 1; r <= ROUNDS_LS; r++)); do
  wait_quiet
  for t in volume bind tmpfs layer; do
    G="dd ${DD_MB} MiB conv=fsync to $t"
    mapfile -t order < <(rotate "$r" "${ENGINES[@]}" host)
    for e in "${order[@]}"; do
      if [ "$e" = host ]; then
        if [ "$t" = tmpfs ]; then d=$SHM; else d=$HOSTDIR; fi
        inner_ms "$G" "${HOSTREF[$t]}" "$r" busybox sh -c "$DD" _ "$d"
      else
        inner_ms "$G" "$e" "$r" ctr_dd "$e" "$t"
      fi
    done
  done
  log "dd round $r/$ROUNDS_LS done"
done

aims=()
for g in "$GC" "$GR" "volume ls with $NL volumes" "system df with $ND volumes × $NF files" "system df -v with $ND volumes × $NF files"; do
  aims+=(--aim "$g: ≥5× faster than docker::ratio::$g::carrel::$g::docker::<=::0.2"
         --aim "$g: ≥5× faster than podman::ratio::$g::carrel::$g::podman::<=::0.2")
done
for t in volume bind; do
  G="dd ${DD_MB} MiB conv=fsync to $t"
  aims+=(--aim "$t write within 3% of the host directory (time ratio)::ratio::$G::carrel::$G::host dir::<=::1.03")
done
write_report "volumes: volume commands and write throughput per mount type" "${aims[@]}" \
  --note "Conditions: CLI calls timed from fork to exit; dd timed inside the container from /proc/uptime (10 ms resolution) so that only the write and its fsync count; lower is better (MiB/s = $DD_MB × 1000 ÷ ms). Engines rotate each round. Carrel's side runs only when \`carrel volume ls\` works."
