#!/bin/bash
# Suite "run" (issue "Containers"): `carrel run --rm busybox true` against `docker run` and
# `podman run` with the same OCI runtime and the same image, and against the bare runtime:
# `runc run` / `crun run` of an equivalent OCI bundle: the very config.json carrel hands the
# runtime for this container (Docker's default mounts, capabilities, masked paths, cgroup and
# device rules), on a plain directory holding the same root filesystem instead of the overlay
# mount. That is the floor carrel adds its overhead to. For reference, the runtime's own minimal
# bundle (`runc spec` / `crun spec`, terminal false, args ["true"]) runs too.
#
# Aim: carrel faster than both peers; carrel's overhead over the bare runtime under 20 ms.
#
# The image: `carrel image import-busybox`, then `carrel save` -> `docker load` / `podman load`,
# so all three engines run the very same layer. The runtime: runc for all (docker's and podman's
# default here; `carrel run --runtime runc`), then crun for all (`docker run --runtime crun`,
# `podman --runtime crun run`, `carrel run --runtime crun`). Every subject runs once per round,
# in an order rotated each round (A/B alternation); WARMUP untimed runs each first. After each
# command, the next waits until the helpers it left (carrel's monitor, containerd-shim, conmon)
# have exited: each engine is timed until its command returns, and what it does afterwards (the
# runtime's state and a --rm container's files deleted) is reported apart, never in another
# subject's time.
#
# Usage: bench/suites/run.sh            (or bench/run.sh run)
# Environment: ROUNDS (default 21), WARMUP (default 3), RUNTIMES (default "runc crun").
SUITE=run
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "$0")/../lib.sh"

ROUNDS=${ROUNDS:-21}
WARMUP=${WARMUP:-3}
read -r -a RUNTIMES <<<"${RUNTIMES:-runc crun}"

bench_init
docker_start
podman_setup
at_exit carrel_cleanup

# --- the same busybox image in all three engines -----------------------------------------------
busybox_everywhere

# --- bare-runtime bundles from the same root filesystem ----------------------------------------
# the rootfs is the image as carrel exports a container created from it
ROOTFS=$RUN_DIR/rootfs
mkdir -p "$ROOTFS"
run_quiet carrel create --name bench-rootfs busybox true
carrel export bench-rootfs | tar --numeric-owner -xpf - -C "$ROOTFS"
run_quiet carrel rm bench-rootfs
for rt in "${RUNTIMES[@]}"; do
  b=$RUN_DIR/bundle-$rt
  mkdir -p "$b" "$RUN_DIR/state-$rt"
  (cd "$b" && "$rt" spec)       # runc spec / crun spec: the runtime's own default config.json
  jq --arg root "$ROOTFS" '.process.terminal = false | .process.args = ["true"] | .root.path = $root' \
    "$b/config.json" >"$b/config.json.new"
  mv "$b/config.json.new" "$b/config.json"
  # the equivalent bundle: carrel's own config.json for `run busybox true` with this runtime; its
  # root becomes the plain directory, and the files it bind-mounts (hosts, hostname, resolv.conf)
  # are copied next to it
  e=$RUN_DIR/bundle-eq-$rt
  mkdir -p "$e"
  run_quiet carrel run --name "bench-spec-$rt" --runtime "$rt" busybox true
  cdir=$CARREL_ROOT/containers/$(carrel inspect -f '{{.Id}}' "bench-spec-$rt")
  for f in hosts hostname resolv.conf; do cp "$cdir/$f" "$e/$f"; done
  jq --arg root "$ROOTFS" --arg dir "$cdir" --arg e "$e" \
    '.root = {path: $root, readonly: false}
     | .mounts |= map(if .type == "bind" and (.source | startswith($dir + "/"))
                      then .source = ($e + "/" + (.source | ltrimstr($dir + "/"))) else . end)' \
    "$cdir/config.json" >"$e/config.json"
  run_quiet carrel rm "bench-spec-$rt"
done

# --- subjects: "NAME|COMMAND..." per runtime; the bare runtime needs a unique container id ------
bare() {  # bare RUNTIME BUNDLE: one `RUNTIME run` of the bundle, container id unique per call
  local rt=$1 bundle=$2
  BARE_N=$((${BARE_N:-0} + 1))
  "$rt" --root "$RUN_DIR/state-$rt" run --bundle "$bundle" "bench-$$-$BARE_N"
}
SUBJECTS=()
for rt in "${RUNTIMES[@]}"; do
  G="run --rm busybox true, $rt"
  describe "$G" "carrel ($rt)" "carrel run --rm --runtime $rt busybox true"
  describe "$G" "docker ($rt)" "docker run --rm --runtime $rt busybox true"
  describe "$G" "podman ($rt)" "podman --runtime $rt run --rm busybox true"
  describe "$G" "$rt run (bare)" "$rt --root STATE run --bundle BUNDLE UNIQUE_ID  (bundle: carrel's config.json for this container, root = the exported image as a plain directory)"
  describe "$G" "$rt run (bare, $rt spec)" "$rt --root STATE run --bundle BUNDLE UNIQUE_ID  (bundle: $rt spec, terminal false, args [true], root = the exported image)"
  SUBJECTS+=("carrel:$rt" "docker:$rt" "podman:$rt" "bare:$rt" "barespec:$rt")
done

# one SUBJECT ROUND: run it once (timed into ROUND, untimed when ROUND is "warmup")
one() {
  local engine=${1%%:*} rt=${1#*:} r=$2 name cmd
  local G="run --rm busybox true, $rt"
  case $engine in
    carrel) name="carrel ($rt)"; cmd=(carrel run --rm --runtime "$rt" busybox true) ;;
    docker) name="docker ($rt)"; cmd=(docker run --rm --runtime "$rt" busybox true) ;;
    podman) name="podman ($rt)"; cmd=(podman --runtime "$rt" run --rm busybox true) ;;
    bare)   name="$rt run (bare)"; cmd=(bare "$rt" "$RUN_DIR/bundle-eq-$rt") ;;
    barespec) name="$rt run (bare, $rt spec)"; cmd=(bare "$rt" "$RUN_DIR/bundle-$rt") ;;
  esac
  if [ "$r" = warmup ]; then run_quiet "${cmd[@]}"; settle; return; fi
  timed "$G" "$name" "$r" "${cmd[@]}"
  # What the engine still did after the command returned (not part of its time above).
  settle
  record "$G: helpers still running after the command returned (untimed)" "$name" "$r" "$SETTLED_MS"
}

log "warm-up: $WARMUP untimed runs of each of ${#SUBJECTS[@]} subjects"
for ((w = 0; w < WARMUP; w++)); do for s in "${SUBJECTS[@]}"; do one "$s" warmup; done; done

for ((r = 1; r <= ROUNDS; r++)); do
  wait_quiet
  mapfile -t order < <(rotate "$r" "${SUBJECTS[@]}")
  for s in "${order[@]}"; do one "$s" "$r"; done
  ((r % 5)) || log "round $r/$ROUNDS done"
done

# nothing may be left behind by --rm
left=$( (carrel ps -aq; docker ps -aq; podman ps -aq) | wc -l)
[ "$left" -eq 0 ] || log "WARNING: $left containers left after run --rm"

aims=()
for rt in "${RUNTIMES[@]}"; do
  G="run --rm busybox true, $rt"
  aims+=(--aim "$rt: carrel faster than docker::ratio::$G::carrel ($rt)::$G::docker ($rt)::<::1"
         --aim "$rt: carrel faster than podman::ratio::$G::carrel ($rt)::$G::podman ($rt)::<::1"
         --aim "$rt: carrel's overhead over bare \`$rt run\`::diff::$G::carrel ($rt)::$G::$rt run (bare)::<::20"
         --aim "$rt: the same, median of the per-round differences::pdiff::$G::carrel ($rt)::$G::$rt run (bare)::<::20")
done
write_report "run: carrel run vs docker run vs podman run, and the bare runtime" "${aims[@]}" \
  --note "Conditions: one image (carrel's busybox, saved by carrel and loaded by the peers); containers with --rm, no network (docker --bridge=none, podman netns none, carrel's default); the command's wall time from fork to exit, stdin from /dev/null. Every subject runs once per round in a rotated order after $WARMUP warm-up runs each; after each command the next one starts only when the per-container helpers it left have exited (carrel's monitor, docker's containerd-shim, podman's conmon), so that no engine's work after its command returned runs into another subject's time; how long that took is reported separately (untimed). The bare runtime runs carrel's own config.json for the container on a plain directory rootfs (no overlay mount, no image metadata, no monitor, no --rm bookkeeping): the difference is carrel's overhead. The runtime's own minimal spec runs as well, for reference: Docker's defaults (its mounts, masked paths, device cgroup rules) cost the runtime a few milliseconds more."
