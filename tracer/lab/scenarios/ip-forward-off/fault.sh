#!/usr/bin/env bash
# Forwarding switched off on the node (a security scan's hardening, or a sysctl.d file that
# won after a reboot). Pod-to-service SYNs still reach the node and are DNAT'd to a pod on
# the other node, but the node refuses to forward them: the routing lookup fails for the
# interface they came in on (net.ipv4.conf.<in-iface>.forwarding=0), the kernel drops them
# (IP_INADDRERRORS on 6.x) and the client only sees its SYNs retransmitted.
# Writing net.ipv4.ip_forward sets every interface's conf.<iface>.forwarding at once (and
# conf.all/conf.default); FORWARD_IFACE breaks a single interface instead.
# Runs as root on the node: fault.sh inject|undo
# Env:
#   FORWARD_IFACE  empty (default): the global switch net.ipv4.ip_forward, as in the seed;
#                  an interface name: only net.ipv4.conf.<iface>.forwarding (the one pod
#                  traffic arrives on, veth-pod-a in the netns lab, cni0 on a bridge CNI)
set -euo pipefail
iface=${FORWARD_IFACE:-}
key=net.ipv4.ip_forward
[ -z "$iface" ] || key="net.ipv4.conf.$iface.forwarding"
case "${1:-}" in
  inject) sysctl -qw "$key=0" ;;
  undo) sysctl -qw "$key=1" ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
