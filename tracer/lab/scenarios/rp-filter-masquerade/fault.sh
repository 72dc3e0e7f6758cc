#!/usr/bin/env bash
# The seed's node after its "hardening": two things fight the CNI.
# 1. Strict reverse-path filtering. A sysctl file sets conf.all.rp_filter=1 and the
#    operator "disables" it on the reply link with conf.<iface>.rp_filter=0. The kernel
#    uses max(conf.all, conf.<iface>) = 1, so it stays strict (not "most specific wins").
#    Strict mode checks the SOURCE of each received packet: a reply from the internet
#    (de-masqueraded to the pod's address first) that arrives on REPLY_IFACE while the
#    route back to that internet address is the uplink fails the check and is dropped.
# 2. A firewalld/UFW-style REJECT inserted above the CNI's FORWARD ACCEPT rules: the
#    pods' pings come back "Packet filtered" (icmp-admin-prohibited) from the node.
# Runs as root on the node: fault.sh inject|undo
# Env:
#   REPLY_IFACE  link the replies come back on (eth2 in the netns lab)
#   POD_CIDR     the cluster's pod CIDR (198.18.0.0/16)
#   IPTABLES     iptables command of the node's backend (iptables)
set -euo pipefail
iface=${REPLY_IFACE:-eth2}
cidr=${POD_CIDR:-198.18.0.0/16}
ipt=${IPTABLES:-iptables}
reject=(FORWARD -s "$cidr" -p icmp -m comment --comment "firewalld: reject pod icmp"
  -j REJECT --reject-with icmp-admin-prohibited)
case "${1:-}" in
  inject)
    sysctl -qw net.ipv4.conf.all.rp_filter=1 "net.ipv4.conf.$iface.rp_filter=0"
    "$ipt" -w -C "${reject[@]}" 2>/dev/null || "$ipt" -w -I "${reject[@]}"
    ;;
  undo)
    # Loose mode, as the CNIs set it: any route back to the source will do.
    sysctl -qw net.ipv4.conf.all.rp_filter=2 "net.ipv4.conf.$iface.rp_filter=2"
    while "$ipt" -w -D "${reject[@]}" 2>/dev/null; do :; done
    ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
