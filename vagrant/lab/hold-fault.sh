#!/usr/bin/env bash
# Keep a fault injected for SECONDS, then undo it: for faults that cut the node off the
# network (scenario.sh runs this as a transient systemd unit, not over SSH). Re-injecting
# every 2 s plays the component that keeps rewriting the bad state, as kube-router's resync
# does in the iptables seed, against kube-proxy's own periodic repair.
# Usage: hold-fault.sh FAULT_SH SECONDS   (fault env vars come from the unit's environment)
set -euo pipefail
fault=$1
hold=$2
trap 'bash "$fault" undo' EXIT
end=$((SECONDS + hold))
while [ "$SECONDS" -lt "$end" ]; do
  bash "$fault" inject
  sleep 2
done
