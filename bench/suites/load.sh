#!/bin/bash
# Suite "load" (issue "Image layer store"): `carrel load` of a ~300 MB multi-layer `docker save`
# archive against `docker load` and `podman load` of the same archive, and the floor: `tar -x` of
# the same layer tars (pre-extracted from the archive outside the timing) into fresh directories
# on the same filesystem, one after the other.
#
# Aim: carrel faster than both peers, and within 1.3x of the tar floor.
#
# Every timed operation starts after `sync` with the input archive (and the floor's layer tars)
# warm in the page cache (read once before every round). Each operation is timed alone, and again
# together with a final `sync` ("+ sync"): carrel makes layers durable before it commits them,
# while the peers may leave the writeback to the kernel. The image is removed (and `sync`ed)
# between rounds so that every load extracts every layer. Engines go first in turn (A/B rotation).
#
# Usage: bench/suites/load.sh            (or bench/run.sh load)
# Environment: ROUNDS (default 7), ARCHIVE (default $WORK/inputs/multi.tar, built by
# bench/mkarchive.py from LOAD_DIRS when missing), LOAD_DIRS (host directories, one layer each).
SUITE=load
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "$0")/../lib.sh"

ROUNDS=${ROUNDS:-7}
ARCHIVE=${ARCHIVE:-$INPUTS/multi.tar}
LOAD_DIRS=${LOAD_DIRS:-/usr/lib/python3.11 /usr/include /usr/lib/gcc /usr/share/perl}

bench_init

# --- input: the archive (cached between runs) and its layer tars for the floor ----------------
if [ ! -f "$ARCHIVE" ]; then
  log "building $ARCHIVE from $LOAD_DIRS"
  # shellcheck disable=SC2086  # LOAD_DIRS is a list of paths
  python3 "$BENCH_DIR/mkarchive.py" "$ARCHIVE" bench/multi:latest $LOAD_DIRS >&2
fi
FLOOR_SRC=$RUN_DIR/floor-src
mkdir -p "$FLOOR_SRC"
tar -xf "$ARCHIVE" -C "$FLOOR_SRC"
# the image's tag and its layer tars in order, from the archive's manifest.json
IMAGE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["RepoTags"][0])' "$FLOOR_SRC/manifest.json")
mapfile -t LAYERS < <(python3 -c 'import json,sys; [print(l) for l in json.load(open(sys.argv[1]))[0]["Layers"]]' "$FLOOR_SRC/manifest.json")
SIZE_MB=$(($(stat -c %s "$ARCHIVE") / 1000000))
FILES=$(for l in "${LAYERS[@]}"; do tar -tf "$FLOOR_SRC/$l"; done | wc -l)
log "archive $ARCHIVE: $IMAGE, ${#LAYERS[@]} layers, $SIZE_MB MB, $FILES entries"

# floor DIR: extract every layer tar into its own fresh directory under DIR, as root would. DIR
# carries the allocator hint that carrel's layer home has (chattr +T) and the layer directories
# get new random names like carrel's (ext4 places a directory under a +T parent by a hash of its
# name): the floor is not slowed by the inodes the previous round freed (see RESULTS.md "load").
floor() {
  local dir=$1 i d
  mkdir -p "$dir"
  chattr +T "$dir" 2>/dev/null || true
  for i in "${!LAYERS[@]}"; do
    d=$(mktemp -d "$dir/$i.XXXXXXXXXX")
    tar --numeric-owner -xpf "$FLOOR_SRC/${LAYERS[i]}" -C "$d"
  done
}

# --- peers -------------------------------------------------------------------------------------
docker_start
podman_setup
at_exit carrel_cleanup

G="load -i $(basename "$ARCHIVE") ($SIZE_MB MB, ${#LAYERS[@]} layers, $FILES entries)"
describe "$G" carrel "carrel load -i $ARCHIVE"
describe "$G" docker "docker load -i $ARCHIVE"
describe "$G" podman "podman load -i $ARCHIVE"
describe "$G" "tar -x (floor)" "for each layer L: tar --numeric-owner -xpf L -C FRESH_DIR/i"
for s in carrel docker podman "tar -x (floor)"; do
  describe "$G + sync" "$s" "(same as above); sync"
done

# one load of the archive by SUBJECT (timed into round R, or untimed when R is "warmup"), then
# the image (or the floor's directory) removed and the removal written back
one() {
  local s=$1 r=$2 run=timed_sync
  [ "$r" = warmup ] && run=_untimed
  case $s in
    carrel) $run "$G" carrel "$r" carrel load -q -i "$ARCHIVE"
            run_quiet carrel rmi "$IMAGE" ;;
    docker) $run "$G" docker "$r" docker load -q -i "$ARCHIVE"
            run_quiet docker rmi "$IMAGE" ;;
    podman) $run "$G" podman "$r" podman load -q -i "$ARCHIVE"
            run_quiet podman rmi "$IMAGE" ;;
    floor)  $run "$G" "tar -x (floor)" "$r" floor "$RUN_DIR/floor"
            rm -rf "$RUN_DIR/floor" ;;
  esac
  sync
}
_untimed() { shift 3; run_quiet "$@"; }

# data root size after a load and rmi: a check that every round really loads everything again
residue() { du -sm "$1" | awk '{print $1}'; }

log "warm-up: one untimed load per engine"
cat "$ARCHIVE" "${LAYERS[@]/#/$FLOOR_SRC/}" >/dev/null
for s in carrel docker podman floor; do one "$s" warmup; done
log "after warm-up and rmi, data roots hold: carrel $(residue "$CARREL_ROOT") MB, docker $(residue "$DOCKER_ROOT") MB, podman $(residue "$PODMAN_ROOT") MB"

for ((r = 1; r <= ROUNDS; r++)); do
  wait_quiet
  # the input archive and the floor's layer tars are read from the page cache, for every engine
  cat "$ARCHIVE" "${LAYERS[@]/#/$FLOOR_SRC/}" >/dev/null
  mapfile -t order < <(rotate "$r" carrel docker podman floor)
  for s in "${order[@]}"; do one "$s" "$r"; done
  log "round $r/$ROUNDS done (order: ${order[*]})"
done

write_report "load: carrel load vs docker load vs podman load, and the tar -x floor" \
  --aim "carrel load faster than docker load::ratio::$G::carrel::$G::docker::<::1" \
  --aim "carrel load faster than podman load::ratio::$G::carrel::$G::podman::<::1" \
  --aim "carrel load within 1.3× of the tar -x floor::ratio::$G::carrel::$G::tar -x (floor)::<=::1.3" \
  --aim "+ sync: carrel faster than docker::ratio::$G + sync::carrel::$G + sync::docker::<::1" \
  --aim "+ sync: carrel faster than podman::ratio::$G + sync::carrel::$G + sync::podman::<::1" \
  --aim "+ sync: carrel within 1.3× of the floor::ratio::$G + sync::carrel::$G + sync::tar -x (floor)::<=::1.3" \
  --note "Conditions: every timed operation starts after \`sync\`, with the input archive (and the floor's layer tars) warm in the page cache; \"+ sync\" rows include a final \`sync\`. The image is removed between rounds; engines rotate which goes first each round. The floor extracts the ${#LAYERS[@]} layer tars one after the other with GNU tar (no hashing, no metadata, no sync) into new randomly named directories under a directory marked \`chattr +T\`, as carrel places its layers (see the summary)."
