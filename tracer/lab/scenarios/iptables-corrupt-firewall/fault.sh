#!/usr/bin/env bash
# An older iptables rewrote kubelet's KUBE-FIREWALL rule without the mark match it could not
# parse (the iptables 1.8 nft/legacy version mismatch of the seed), so it drops everything.
# The rule is found by its comment (kubelet before 1.28 wrote it; newer ones do not, and
# then the corrupted rule is appended as the old kubelet's would have been rewritten).
# Runs on the node. Env: IPTABLES (iptables).
set -euo pipefail
ipt=${IPTABLES:-iptables}
comment="kubernetes firewall for dropping marked packets"
healthy=(-m comment --comment "$comment" -m mark --mark 0x8000/0x8000 -j DROP)
corrupt=(-m comment --comment "$comment" -j DROP)
# Rule number of the kubelet rule in KUBE-FIREWALL, empty if absent.
rule_no() { "$ipt" -L KUBE-FIREWALL -n --line-numbers | awk -v c="/* $comment */" 'index($0, c) {print $1; exit}'; }

"$ipt" -N KUBE-FIREWALL 2>/dev/null || true
n=$(rule_no)
case "${1:-}" in
  inject)
    if [ -n "$n" ]; then "$ipt" -R KUBE-FIREWALL "$n" "${corrupt[@]}"; else "$ipt" -A KUBE-FIREWALL "${corrupt[@]}"; fi
    ;;
  undo)
    if [ -n "$n" ]; then "$ipt" -R KUBE-FIREWALL "$n" "${healthy[@]}"; fi
    ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
