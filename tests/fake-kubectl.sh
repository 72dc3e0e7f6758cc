#!/usr/bin/env bash
# A kubectl stand-in for tests/test_kubectl_plugin.py. It knows only the call
# kubectl-droptrace makes, `kubectl exec -i -n droptrace AGENT -c droptrace -- CMD...`, and
# runs CMD on this machine: in the tests every agent's node is this machine.
#   FAKE_KUBECTL_LOG     each call is appended here, one line
#   FAKE_KUBECTL_PIDS    the PID CMD runs as is appended here
#   FAKE_KUBECTL_BROKEN  agents (space-separated) that fail as a vanished container does
#   FAKE_KUBECTL_DRY     set: log the call, run nothing
set -euo pipefail
printf '%s\n' "$*" >>"${FAKE_KUBECTL_LOG:-/dev/null}"
if [ "$#" -lt 9 ] || [ "$1 $2 $3 $4" != "exec -i -n droptrace" ] \
  || [ "$6 $7 $8" != "-c droptrace --" ]; then
  echo "kubectl stand-in: not a call it knows: kubectl $*" >&2
  exit 64
fi
agent=$5
shift 8
for broken in ${FAKE_KUBECTL_BROKEN:-}; do
  if [ "$agent" = "$broken" ]; then
    echo "error: unable to upgrade connection: container not found (\"droptrace\")" >&2
    exit 1
  fi
done
if [ -n "${FAKE_KUBECTL_DRY:-}" ]; then
  exit 0
fi
echo "$$" >>"${FAKE_KUBECTL_PIDS:-/dev/null}"
exec "$@"
