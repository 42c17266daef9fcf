#!/bin/bash
# Suite "cli" (issue "`carrel serve`"): the same docker CLIs (Debian's docker 20.10 client and the
# docker 28.2.2 client in /usr/local/bin) run the same commands against `carrel serve` (the Docker
# Engine API on a unix socket) and against dockerd, alternating, and the ratios carrel ÷ dockerd
# are reported. (carrel's side is skipped, with a note, by a carrel without `serve`.)
#
# Commands: those of the seed document's examples that leave nothing behind (see CASES below):
# version, info, images, ps -a, image inspect, volume create/inspect/ls/rm, system df,
# run --rm with a volume, a tmpfs and a read-only root.
#
# The docker client itself takes ~40 ms per command, for either server, which hides most of the
# servers' difference, so three more views leave the client's own time out:
# - the server's share of each CLI command (bench/servershare.py): the same command through a relay
#   that notes how long the command had a request out and its answer not yet in full;
# - the API requests behind the read-only commands through curl (API_CASES), a client that costs a
#   few milliseconds;
# - the same requests N_KEEPALIVE times over one kept-alive connection (bench/apitime.py), the
#   servers' own times.
#
# Usage: bench/suites/cli.sh             (or bench/run.sh cli)
# Environment: ROUNDS (default 21), WARMUP (default 2), N_KEEPALIVE (default 50), CARREL_SERVE_ARGS (how to make
# `carrel serve` listen on a socket; default "-H unix://SOCKET"; adjust to carrel's flags),
# CLIENTS (the docker CLI binaries; default "/usr/bin/docker /usr/local/bin/docker"), SECTIONS (which
# views to measure: any of "cli share api keepalive", default all), NO_RUN=1 (leave the `run`
# commands out: with SECTIONS=cli and many ROUNDS, a long paired run of the quick commands, whose
# differences are a fraction of a millisecond under the client's few milliseconds of noise), ONLY
# (a regular expression: only the commands it matches; keep `volume create` and `volume rm` with
# `volume inspect`, which inspects the volume the first creates).
SUITE=cli
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "$0")/../lib.sh"

ROUNDS=${ROUNDS:-21}
WARMUP=${WARMUP:-2}
CARREL_SOCK=$PRIV/carrel.sock
CARREL_SERVE_ARGS=${CARREL_SERVE_ARGS:-"-H unix://$CARREL_SOCK"}
CASES=("version" "info" "images" "ps -a" "image inspect busybox"
  "volume create bench-cli-new" "volume inspect bench-cli-new" "volume ls" "volume rm bench-cli-new"
  "system df" "run --rm busybox true" "run --rm -v bench-cli-data:/data busybox true"
  "run --rm --tmpfs /run:size=64m busybox true" "run --rm --read-only busybox true")
read -r -a CLIENTS <<<"${CLIENTS:-/usr/bin/docker /usr/local/bin/docker}"
SECTIONS=${SECTIONS:-cli share api keepalive}
# want SECTION: whether SECTION is measured in this run
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
if [ -n "${ONLY:-}" ]; then
  only=()
  for c in "${CASES[@]}"; do [[ $c =~ $ONLY ]] && only+=("$c"); done
  ((${#only[@]})) || die "ONLY=$ONLY matches none of the commands"
  CASES=("${only[@]}")
fi
if [ "${NO_RUN:-0}" = 1 ]; then
  quick=()
  for c in "${CASES[@]}"; do [[ $c == run\ * ]] || quick+=("$c"); done
  CASES=("${quick[@]}")
fi

# API requests: "METHOD PATH" (API 1.41, as the 20.10 client sends them)
API_CASES=("GET /_ping" "GET /version" "GET /info" "GET /images/json" "GET /containers/json?all=1"
  "GET /images/busybox/json" "GET /volumes" "GET /volumes/bench-cli-data" "GET /system/df")

bench_init
docker_start
podman_setup        # only for busybox_everywhere; podman is not measured here
at_exit carrel_cleanup
busybox_everywhere

SERVERS=(dockerd)
SERVE_PID=
stop_serve() {
  [ -n "$SERVE_PID" ] || return 0
  kill -TERM "$SERVE_PID" 2>/dev/null || true
  wait "$SERVE_PID" 2>/dev/null || true
  rm -f "$CARREL_SOCK"
  log "carrel serve stopped"
}
if carrel serve --help >/dev/null 2>&1; then
  rm -f "$CARREL_SOCK"
  read -r -a serve_args <<<"$CARREL_SERVE_ARGS"
  # the binary itself, not the `carrel` function: $! must be its pid for stop_serve
  "$CARREL" serve "${serve_args[@]}" >>"$LOGS/$SUITE-serve.log" 2>&1 </dev/null 9>&- &
  SERVE_PID=$!
  at_exit stop_serve
  for ((i = 0; i < 60; i++)); do
    DOCKER_HOST=unix://$CARREL_SOCK /usr/bin/docker version >/dev/null 2>&1 && break
    sleep 0.25
  done
  DOCKER_HOST=unix://$CARREL_SOCK /usr/bin/docker version >/dev/null 2>&1 ||
    die "carrel serve ${CARREL_SERVE_ARGS} did not answer on $CARREL_SOCK (see $LOGS/$SUITE-serve.log)"
  SERVERS=("carrel serve" dockerd)
else
  log "carrel has no 'serve' command yet: skipping carrel's side (dockerd only)"
fi

# sock_of SERVER: the socket SERVER listens on
sock_of() { if [ "$1" = dockerd ]; then echo "$DOCKER_SOCK"; else echo "$CARREL_SOCK"; fi; }

# client SERVER ARGS...: Debian's docker CLI against SERVER
client() {
  local server=$1; shift
  DOCKER_HOST=unix://$(sock_of "$server") /usr/bin/docker "$@"
}

# cli_with BIN SERVER ARGS...: the docker CLI BIN against SERVER
cli_with() {
  local bin=$1 server=$2; shift 2
  DOCKER_HOST=unix://$(sock_of "$server") "$bin" "$@"
}

# the clients' versions, in the groups' names: "docker version (client 20.10.24)"
declare -A CLIENT_VERSION
for bin in "${CLIENTS[@]}"; do
  [ -x "$bin" ] || die "no docker CLI at $bin (set CLIENTS)"
  CLIENT_VERSION[$bin]=$("$bin" --version | sed -E 's/^Docker version ([0-9.]+).*/\1/')
done
# group CASE BIN: the group name of CASE run by the CLI BIN
group() { echo "docker $1 (client ${CLIENT_VERSION[$2]})"; }

# the volume the runs mount, on both servers (removed at exit)
for s in "${SERVERS[@]}"; do run_quiet client "$s" volume create bench-cli-data; done
rm_cli_volumes() {
  local s
  for s in "${SERVERS[@]}"; do client "$s" volume rm -f bench-cli-data bench-cli-new >/dev/null 2>&1 || true; done
}
at_exit rm_cli_volumes

# client_rounds MEASURE CASE...: ROUNDS rounds; in each, `MEASURE ROUND BIN SERVER CASE` for every
# client BIN, CASE and server (in an order rotated each round)
client_rounds() {
  local measure=$1 r bin c s order; shift
  for ((r = 1; r <= ROUNDS; r++)); do
    wait_quiet
    mapfile -t order < <(rotate "$r" "${SERVERS[@]}")
    for bin in "${CLIENTS[@]}"; do
      for c in "$@"; do
        for s in "${order[@]}"; do "$measure" "$r" "$bin" "$s" "$c"; done
      done
    done
  done
}

# time_cli ROUND BIN SERVER CASE: the CLI's wall time
time_cli() {
  local args
  read -r -a args <<<"$4"
  timed "$(group "$4" "$2")" "$3" "$1" cli_with "$2" "$3" "${args[@]}"
}

# each_case FN CASE...: `FN BIN SERVER CASE` for every client BIN, CASE and server
each_case() {
  local fn=$1 bin c s; shift
  for bin in "${CLIENTS[@]}"; do
    for c in "$@"; do
      for s in "${SERVERS[@]}"; do "$fn" "$bin" "$s" "$c"; done
    done
  done
}
describe_cli() { describe "$(group "$3" "$1")" "$2" "DOCKER_HOST=unix://$(sock_of "$2") $1 $3"; }
warm_cli() {
  local args
  read -r -a args <<<"$3"
  run_quiet cli_with "$1" "$2" "${args[@]}"
}

if want cli; then
  each_case describe_cli "${CASES[@]}"
  for ((w = 0; w < WARMUP; w++)); do each_case warm_cli "${CASES[@]}"; done
  client_rounds time_cli "${CASES[@]}"
fi

# the server's share of the same commands (all but `run`, whose streams stay open while the
# container runs): each through bench/servershare.py, which relays the CLI's connections to the
# server and reports how long the CLI had a request out and its answer not yet in full
SHARE_CASES=()
for c in "${CASES[@]}"; do [[ $c == run\ * ]] || SHARE_CASES+=("$c"); done
share_group() { echo "$(group "$1" "$2"): the server's share"; }
# share_cli ROUND BIN SERVER CASE: the server's share of the CLI command
share_cli() {
  local args ms
  read -r -a args <<<"$4"
  ms=$(python3 "$BENCH_DIR/servershare.py" "$(sock_of "$3")" "$2" "${args[@]}" 2>>"$LOGS/$SUITE-last.err") ||
    die "servershare failed ($4 / $3; see $LOGS/$SUITE-last.err)"
  record "$(share_group "$4" "$2")" "$3" "$1" "$ms"
}
describe_share() { describe "$(share_group "$3" "$1")" "$2" "bench/servershare.py $(sock_of "$2") $1 $3"; }
if want share; then
  each_case describe_share "${SHARE_CASES[@]}"
  client_rounds share_cli "${SHARE_CASES[@]}"
fi

# api SERVER METHOD PATH: one request with curl, the answer discarded (a failure counts)
api() {
  local sock=$CARREL_SOCK
  [ "$1" = dockerd ] && sock=$DOCKER_SOCK
  curl -sf -o /dev/null --unix-socket "$sock" -X "$2" "http://localhost/v1.41$3"
}
if want api; then
  for c in "${API_CASES[@]}"; do
    for s in "${SERVERS[@]}"; do describe "API $c" "$s" "curl --unix-socket SOCKET -X ${c% *} http://localhost/v1.41${c#* }"; done
  done
  for c in "${API_CASES[@]}"; do
    for s in "${SERVERS[@]}"; do run_quiet api "$s" ${c% *} "${c#* }"; done
  done
  for ((r = 1; r <= ROUNDS; r++)); do
    wait_quiet
    mapfile -t order < <(rotate "$r" "${SERVERS[@]}")
    for c in "${API_CASES[@]}"; do
      for s in "${order[@]}"; do timed "API $c" "$s" "$r" api "$s" ${c% *} "${c#* }"; done
    done
  done
fi

# the same requests again, N_KEEPALIVE times over one kept-alive connection (bench/apitime.py):
# each sample is the mean time per request, the server's own time with no client start-up; and
# a volume created and removed (the requests of `docker volume create` and `docker volume rm`)
N_KEEPALIVE=${N_KEEPALIVE:-50}
KEEPALIVE_CASES=("${API_CASES[@]}" "POST /volumes/create + DELETE /volumes/bench-cli-ka")
# apitime SERVER CASE: one sample (ms) of CASE against SERVER
apitime() {
  local sock=$CARREL_SOCK c=$2
  [ "$1" = dockerd ] && sock=$DOCKER_SOCK
  if [[ $c == *" + "* ]]; then
    python3 "$BENCH_DIR/apitime.py" "$sock" "$N_KEEPALIVE" \
      "POST /v1.41/volumes/create {\"Name\": \"bench-cli-ka\"}" "DELETE /v1.41/volumes/bench-cli-ka"
  else
    python3 "$BENCH_DIR/apitime.py" "$sock" "$N_KEEPALIVE" "${c% *} /v1.41${c#* }"
  fi
}
if want keepalive; then
  for c in "${KEEPALIVE_CASES[@]}"; do
    for s in "${SERVERS[@]}"; do describe "API $c, kept-alive" "$s" "bench/apitime.py SOCKET $N_KEEPALIVE '$c' (mean per pass over one connection)"; done
  done
  for ((r = 1; r <= ROUNDS; r++)); do
    wait_quiet
    mapfile -t order < <(rotate "$r" "${SERVERS[@]}")
    for c in "${KEEPALIVE_CASES[@]}"; do
      for s in "${order[@]}"; do
        ms=$(apitime "$s" "$c") || die "apitime failed (API $c / $s)"
        record "API $c, kept-alive" "$s" "$r" "$ms"
      done
    done
  done
fi

aims=()
# aim_pair GROUP CLAIM: carrel serve against dockerd on GROUP, by the ratio of the medians and by
# the median of per-round differences
aim_pair() {
  aims+=(--aim "$1: $2::ratio::$1::carrel serve::$1::dockerd::<::1")
  aims+=(--aim "$1: $2, paired by round::pdiff::$1::carrel serve::$1::dockerd::<::0")
}
if want cli; then
  for bin in "${CLIENTS[@]}"; do
    for c in "${CASES[@]}"; do aim_pair "$(group "$c" "$bin")" "carrel serve faster than dockerd"; done
  done
fi
if want share; then
  for bin in "${CLIENTS[@]}"; do
    for c in "${SHARE_CASES[@]}"; do aim_pair "$(share_group "$c" "$bin")" "carrel serve's smaller than dockerd's"; done
  done
fi
if want api; then
  for c in "${API_CASES[@]}"; do
    aims+=(--aim "API $c: carrel serve faster than dockerd::ratio::API $c::carrel serve::API $c::dockerd::<::1")
  done
fi
if want keepalive; then
  for c in "${KEEPALIVE_CASES[@]}"; do
    aims+=(--aim "API $c, kept-alive: carrel serve faster than dockerd::ratio::API $c, kept-alive::carrel serve::API $c, kept-alive::dockerd::<::1")
  done
fi
write_report "cli: the docker CLI against carrel serve vs dockerd" "${aims[@]}" \
  --note "Conditions: the same docker clients (Debian's 20.10 and 28.2.2; curl and Python for the API rows) for both servers; the same busybox image in both; servers rotate which goes first each round."
