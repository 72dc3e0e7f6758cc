#!/usr/bin/env bash
# Strict reverse-path filtering on the node that hosts the pod (a distribution default or
# a hardening baseline; MetalLB's docs ask for loose mode). The announcing node forwards
# the LoadBalancer traffic to this node without SNAT, so the request arrives on
# CLUSTER_IFACE with the client's address as source, while this node's route back to the
# client is its LAN link: strict mode drops the forwarded REQUEST on arrival here (the
# seed blames the reply; rp_filter only ever checks received packets' sources). Setting
# conf.<iface> alone would not do: the kernel uses max(conf.all, conf.<iface>).
# Runs as root on the node: fault.sh inject|undo
# Env:
#   CLUSTER_IFACE  where the forwarded LoadBalancer traffic arrives (eth1 in the netns
#                  lab; flannel.1 on a Flannel node)
set -euo pipefail
iface=${CLUSTER_IFACE:-eth1}
case "${1:-}" in
  inject) sysctl -qw net.ipv4.conf.all.rp_filter=1 "net.ipv4.conf.$iface.rp_filter=1" ;;
  undo) sysctl -qw net.ipv4.conf.all.rp_filter=2 "net.ipv4.conf.$iface.rp_filter=2" ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
