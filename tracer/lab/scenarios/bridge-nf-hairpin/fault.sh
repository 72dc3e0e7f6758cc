#!/usr/bin/env bash
# Bridged traffic stops going through iptables: the seed's node had no br_netfilter
# loaded (after a reboot), which is bridge-nf-call-iptables=0. A pod's packet to a
# ClusterIP is still routed and DNAT'd by the node (its destination MAC is the bridge's),
# but the backend's reply to a pod on the same bridge is bridged straight back, never
# meets conntrack, keeps the backend pod's IP as source, and the client has no socket
# for it (TCP: RST, UDP: "reply from unexpected source"). The sysctl is per network
# namespace (kernel >= 5.3), so this changes only the node it runs on.
# Runs as root on the node: fault.sh inject|undo
# Env: none.
set -euo pipefail
case "${1:-}" in
  inject)
    sysctl -qw net.bridge.bridge-nf-call-iptables=0 ;;
  undo)
    # The seed's fix: load br_netfilter (a module on most distributions; built into some).
    [ -e /proc/sys/net/bridge ] || modprobe br_netfilter
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
