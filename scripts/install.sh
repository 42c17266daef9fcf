#!/bin/sh
# Install what carrel needs on a fresh Debian 12 machine (run as root), build it and put the
# binary on the PATH. Safe to run again.
set -eu
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
packages="crun runc busybox-static skopeo umoci xfsprogs btrfs-progs e2fsprogs util-linux \
  ca-certificates python3 python3-venv"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# crun 1.8 refuses a hybrid cgroup v1+v2 layout whose v2 hierarchy holds controllers ("cgroups
# in hybrid mode not supported"). Give each such controller its own v1 hierarchy, where a hybrid
# system keeps the others, so that crun works; carrel still picks runc when crun cannot run.
unified=/sys/fs/cgroup/unified/cgroup.controllers
if [ -r "$unified" ] && [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ]; then
  for c in $(cat "$unified"); do
    mkdir -p "/sys/fs/cgroup/$c"
    mountpoint -q "/sys/fs/cgroup/$c" || mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || true
  done
fi

cargo build --release --locked
install -m 0755 target/release/carrel /usr/local/bin/carrel
echo "carrel installed: $(carrel version)"
