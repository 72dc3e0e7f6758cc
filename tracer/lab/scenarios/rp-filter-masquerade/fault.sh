#!/usr/bin/env bash
# The seed's two fighting firewalls: a hardening file sets conf.all.rp_filter=1 while the
# interface was "disabled" (conf.<iface>.rp_filter=0: the kernel uses the max of the two,
# so it stays strict), and a firewalld-style REJECT lands above the CNI's ACCEPT rules.
# Runs on the node. Env: REPLY_IFACE (eth2: where replies come back), POD_CIDR (198.18.0.0/16).
set -euo pipefail
iface=${REPLY_IFACE:-eth2}
cidr=${POD_CIDR:-198.18.0.0/16}
reject=(FORWARD -s "$cidr" -p icmp -m comment --comment "firewalld: reject" -j REJECT --reject-with icmp-admin-prohibited)
case "${1:-}" in
  inject)
    sysctl -qw net.ipv4.conf.all.rp_filter=1 "net.ipv4.conf.$iface.rp_filter=0"
    iptables -I "${reject[@]}"
    ;;
  undo)
    sysctl -qw net.ipv4.conf.all.rp_filter=2 "net.ipv4.conf.$iface.rp_filter=2"
    iptables -D "${reject[@]}" 2>/dev/null || true
    ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
