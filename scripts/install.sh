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

cargo build --release --locked
install -m 0755 target/release/carrel /usr/local/bin/carrel
echo "carrel installed: $(carrel version)"
