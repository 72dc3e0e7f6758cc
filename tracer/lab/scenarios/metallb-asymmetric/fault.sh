#!/usr/bin/env bash
# Strict reverse-path filtering on the node that hosts the pod (a distribution default, or
# a hardening baseline). Runs on that node. Env: CLUSTER_IFACE (eth1): where the
# forwarded LoadBalancer traffic arrives.
set -euo pipefail
iface=${CLUSTER_IFACE:-eth1}
case "${1:-}" in
  inject) sysctl -qw "net.ipv4.conf.all.rp_filter=1" "net.ipv4.conf.$iface.rp_filter=1" ;;
  undo) sysctl -qw "net.ipv4.conf.all.rp_filter=2" "net.ipv4.conf.$iface.rp_filter=2" ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
