#!/usr/bin/env bash
# The node lost its route to the other node's pod CIDR (a CNI that failed to program it).
# Runs on the node. Env: REMOTE_POD_CIDR (198.18.2.0/24), REMOTE_NODE_IP (198.51.100.2).
set -euo pipefail
cidr=${REMOTE_POD_CIDR:-198.18.2.0/24}
via=${REMOTE_NODE_IP:-198.51.100.2}
case "${1:-}" in
  inject) ip route del "$cidr" ;;
  undo) ip route replace "$cidr" via "$via" ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
