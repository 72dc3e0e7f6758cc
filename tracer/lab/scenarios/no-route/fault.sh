#!/usr/bin/env bash
# The node lost its route to the other node's pod CIDR (a CNI agent that crashed before
# programming it, or a route flushed by a network restart). Pods' packets to that CIDR
# reach the node and the forwarding lookup finds no route: the kernel drops them
# (IP_INNOROUTES) and answers ICMP net unreachable.
# Runs as root on the node: fault.sh inject|undo
# Env:
#   REMOTE_POD_CIDR  the other node's pod CIDR (198.18.2.0/24)
#   REMOTE_NODE_IP   the other node's address, the route's gateway for undo (198.51.100.2)
set -euo pipefail
cidr=${REMOTE_POD_CIDR:-198.18.2.0/24}
via=${REMOTE_NODE_IP:-198.51.100.2}
case "${1:-}" in
  inject)
    if [ -n "$(ip route show exact "$cidr")" ]; then ip route del "$cidr"; fi ;;
  undo)
    ip route replace "$cidr" via "$via" ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
