#!/usr/bin/env bash
# The lab: every field report rebuilt in network namespaces, diagnosed live, torn down.
set -euo pipefail
cd "$(dirname "$0")/.."

dt=./.venv/bin/droptrace
trap '"$dt" lab down >/dev/null 2>&1 || true' EXIT INT TERM
for scenario in $("$dt" lab list | awk '{print $1}'); do
  echo
  echo "==> droptrace lab run $scenario"
  "$dt" lab run "$scenario"
done
echo
echo "Done. Try: sudo $dt --json --duration 10   (every drop on this host, live)"
