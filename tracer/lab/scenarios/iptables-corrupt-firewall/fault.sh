#!/usr/bin/env bash
# An older iptables rewrote kubelet's KUBE-FIREWALL rule without the mark match it could not
# parse (the iptables 1.8 nft/legacy version mismatch of the seed), so it drops everything.
# Runs on the node. Env: IPTABLES (iptables).
set -euo pipefail
ipt=${IPTABLES:-iptables}
comment="kubernetes firewall for dropping marked packets"
case "${1:-}" in
  inject) "$ipt" -R KUBE-FIREWALL 1 -m comment --comment "$comment" -j DROP ;;
  undo) "$ipt" -R KUBE-FIREWALL 1 -m comment --comment "$comment" -m mark --mark 0x8000/0x8000 -j DROP ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
