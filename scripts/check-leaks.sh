#!/bin/sh
# Fail when the test suite left mounts or processes behind.
set -u
status=0
mounts=$(findmnt -rn -o TARGET | grep -E 'carrel-test|/tmp/\.tmp|/var/tmp/\.tmp' || true)
if [ -n "$mounts" ]; then
  echo "mounts left behind by the tests:" >&2
  echo "$mounts" >&2
  status=1
fi
procs=$(pgrep -af 'carrel-test|carrel .*monitor' || true)
if [ -n "$procs" ]; then
  echo "processes left behind by the tests:" >&2
  echo "$procs" >&2
  status=1
fi
loops=$(losetup -a 2>/dev/null | grep -E '/tmp/|carrel-test' || true)
if [ -n "$loops" ]; then
  echo "loop devices left behind by the tests:" >&2
  echo "$loops" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "no mounts, processes or loop devices left behind"
exit "$status"
