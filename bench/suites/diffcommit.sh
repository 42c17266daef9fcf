#!/bin/bash
# Suite "diffcommit" (issue "Containers"): `diff` and `commit` of a container that changed one
# file, on a small image and on big ones, next to `docker diff|commit` and `podman diff|commit` on
# the same images and the same change.
#
# Aim: carrel's diff and commit of a one-file change in a 1 GB image under 100 ms, and flat in
# image size (the big images cost about what the small one costs).
#
# Images (one-layer imports of the same root filesystem tars in every engine):
#   small  the busybox image's root filesystem (carrel image import-busybox, exported)  ~2 MB
#   big1g  the same + /big/1g.bin, 1 GiB of random data (one big file)
#   tree   the same + /usr/lib/python3.11 /usr/include /usr/lib/gcc /usr/share/perl from the host
#          (~320 MB in ~12k files: size as many files)
# The big tars are cached in $WORK/inputs. Each engine runs one container per image:
#   ENGINE run --name bench-dc-IMAGE bench/IMAGE /bin/sh -c 'echo 1 > /f'
# (/bin/sh: carrel finds no sh in an imported image, which has no PATH in its config; docker and
# podman then use a default PATH)
# and then, every round, in an order rotated each round: `ENGINE diff CONTAINER`, and
# `ENGINE commit CONTAINER bench/commit-IMAGE:ROUND` (the committed image is removed, untimed).
# The one-sample import times of the setup are reported too.
#
# Usage: bench/suites/diffcommit.sh      (or bench/run.sh diffcommit)
# Environment: ROUNDS (default 15), WARMUP (default 2), IMAGES (default "small big1g tree"),
# TREE_DIRS (the tree image's host directories).
SUITE=diffcommit
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "$0")/../lib.sh"

ROUNDS=${ROUNDS:-15}
WARMUP=${WARMUP:-2}
read -r -a IMAGES <<<"${IMAGES:-small big1g tree}"
TREE_DIRS=${TREE_DIRS:-usr/lib/python3.11 usr/include usr/lib/gcc usr/share/perl}
ENGINES=(carrel docker podman)

bench_init
docker_start
podman_setup
at_exit carrel_cleanup

# --- root filesystem tars ----------------------------------------------------------------------
log "building the root filesystem tars"
run_quiet carrel image import-busybox
run_quiet carrel create --name bench-rootfs busybox true
carrel export bench-rootfs >"$RUN_DIR/rootfs-small.tar"
run_quiet carrel rm bench-rootfs
run_quiet carrel rmi busybox
declare -A TAR=([small]=$RUN_DIR/rootfs-small.tar [big1g]=$INPUTS/rootfs-big1g.tar [tree]=$INPUTS/rootfs-tree.tar)
if [ ! -f "${TAR[big1g]}" ]; then
  d=$RUN_DIR/big1g-root
  mkdir -p "$d/big"
  tar -xpf "${TAR[small]}" -C "$d"
  head -c 1073741824 /dev/urandom >"$d/big/1g.bin"
  tar --numeric-owner -C "$d" -cf "${TAR[big1g]}.tmp" . && mv "${TAR[big1g]}.tmp" "${TAR[big1g]}"
  rm -rf "$d"
fi
if [ ! -f "${TAR[tree]}" ]; then
  cp "${TAR[small]}" "${TAR[tree]}.tmp"
  # shellcheck disable=SC2086  # TREE_DIRS is a list of paths relative to /
  tar --numeric-owner -C / -rf "${TAR[tree]}.tmp" $TREE_DIRS && mv "${TAR[tree]}.tmp" "${TAR[tree]}"
fi
declare -A LABEL
for i in "${IMAGES[@]}"; do
  n=$(tar -tf "${TAR[$i]}" | wc -l)
  LABEL[$i]="$i ($(($(stat -c %s "${TAR[$i]}") / 1000000)) MB, $n entries)"
done

# --- images and containers in every engine (the imports timed once, as a by-product) -----------
for i in "${IMAGES[@]}"; do
  for e in "${ENGINES[@]}"; do
    sync
    timed "import (setup, 1 sample), ${LABEL[$i]}" "$e" 1 "$e" import "${TAR[$i]}" "bench/$i:latest"
    describe "import (setup, 1 sample), ${LABEL[$i]}" "$e" "sync; $e import ${TAR[$i]} bench/$i:latest"
    run_quiet "$e" run --name "bench-dc-$i" "bench/$i:latest" /bin/sh -c 'echo 1 > /f'
  done
  for e in "${ENGINES[@]}"; do
    describe "diff, ${LABEL[$i]}" "$e" "$e diff bench-dc-$i   (after: $e run --name bench-dc-$i bench/$i /bin/sh -c 'echo 1 > /f')"
    describe "commit, ${LABEL[$i]}" "$e" "$e commit bench-dc-$i bench/commit-$i:ROUND   (then $e rmi, untimed)"
  done
done
# the change each engine recorded, for the log: expect "A /f" (and the engine's own files)
for e in "${ENGINES[@]}"; do log "$e diff bench-dc-small: $("$e" diff bench-dc-small | tr '\n' ' ')"; done

SUBJECTS=()
for i in "${IMAGES[@]}"; do for e in "${ENGINES[@]}"; do SUBJECTS+=("$e:$i"); done; done

# diff|commit SUBJECT ROUND ("warmup": untimed)
op() {
  local what=$1 e=${2%%:*} i=${2#*:} r=$3
  local cmd=("$e" diff "bench-dc-$i")
  [ "$what" = commit ] && cmd=("$e" commit "bench-dc-$i" "bench/commit-$i:r$r")
  if [ "$r" = warmup ]; then run_quiet "${cmd[@]}"; else timed "$what, ${LABEL[$i]}" "$e" "$r" "${cmd[@]}"; fi
  [ "$what" = commit ] && run_quiet "$e" rmi "bench/commit-$i:r$r"
  return 0
}

log "warm-up: $WARMUP untimed diff and commit of each of ${#SUBJECTS[@]} containers"
for ((w = 0; w < WARMUP; w++)); do
  for s in "${SUBJECTS[@]}"; do op diff "$s" warmup; op commit "$s" warmup; done
done
for ((r = 1; r <= ROUNDS; r++)); do
  wait_quiet
  mapfile -t order < <(rotate "$r" "${SUBJECTS[@]}")
  for s in "${order[@]}"; do op diff "$s" "$r"; done
  for s in "${order[@]}"; do op commit "$s" "$r"; done
  ((r % 5)) || log "round $r/$ROUNDS done"
done

aims=()
S=${LABEL[small]:-}
for i in "${IMAGES[@]}"; do
  [ "$i" = small ] && continue
  for what in diff commit; do
    aims+=(--aim "carrel $what, $i, under 100 ms::abs::$what, ${LABEL[$i]}::carrel::<::100")
    [ -n "$S" ] && aims+=(--aim "carrel $what flat in image size: $i ÷ small::ratio::$what, ${LABEL[$i]}::carrel::$what, $S::carrel::<=::1.25")
  done
done
write_report "diff/commit: a one-file change on small and big images, carrel vs docker vs podman" "${aims[@]}" \
  --note "Conditions: images imported from the same root filesystem tars in every engine; one stopped container per image and engine that ran \`/bin/sh -c 'echo 1 > /f'\`; diff and commit timed once per round each, subjects in a rotated order, after $WARMUP warm-up rounds; the committed image removed after each commit (untimed). docker commit pauses a running container by default: these containers have exited, so nothing is paused. \"Flat in image size\" is taken as the big image's median within 1.25× of the small one's."
