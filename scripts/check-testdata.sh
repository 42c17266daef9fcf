#!/bin/sh
# Report differences between testdata/ and the originals in ../shared (when present).
set -u
cd "$(dirname "$0")/.."
shared=../shared
[ -d "$shared" ] || { echo "no $shared here; nothing to compare"; exit 0; }
status=0
for d in conformance engine-api; do
  for f in $(cd "testdata/$d" && find . -type f); do
    if ! cmp -s "testdata/$d/$f" "$shared/$d/$f"; then
      echo "testdata/$d/$f differs from $shared/$d/$f"
      status=1
    fi
  done
done
[ "$status" -eq 0 ] && echo "testdata matches $shared"
exit "$status"
