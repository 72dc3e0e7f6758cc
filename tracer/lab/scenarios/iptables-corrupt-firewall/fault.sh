#!/usr/bin/env bash
# The seed's iptables version mismatch: a component shipping an older iptables (kube-router
# with 1.8.7 on a host with 1.8.8) does its usual save / modify / restore round trip of the
# filter table; the old binary cannot read the mark match the host's iptables wrote and
# restores kubelet's KUBE-FIREWALL rule without it:
#   -A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" -j DROP
# which drops every packet the node receives or sends (even pings to localhost).
# inject repeats that round trip with the mark match lost; undo repeats it with the match
# put back. If the node has no such rule (kubelet >= 1.28 stopped writing it), inject
# appends the rule as the old round trip would have left it, and undo restores the match.
# Runs as root on the node: fault.sh inject|undo (on a VM it cuts the node off the network)
# Env:
#   IPTABLES  the iptables of the node's backend: iptables, iptables-nft or iptables-legacy
#             (its -save/-restore companions are used for the round trip)
set -euo pipefail
ipt=${IPTABLES:-iptables}
comment='kubernetes firewall for dropping marked packets'
rule="-A KUBE-FIREWALL -m comment --comment \"$comment\""
healthy="$rule -m mark --mark 0x8000/0x8000 -j DROP"
corrupt="$rule -j DROP"

# roundtrip FROM TO: save the filter table, replace the line FROM by TO, restore it.
roundtrip() {
  local saved
  saved=$("$ipt-save" -t filter)
  grep -qxF -- "$1" <<<"$saved" || return 1
  FROM=$1 TO=$2 awk '$0 == ENVIRON["FROM"] { $0 = ENVIRON["TO"] } { print }' <<<"$saved" |
    "$ipt-restore" -w
}

case "${1:-}" in
  inject)
    if ! roundtrip "$healthy" "$corrupt" && ! "$ipt-save" -t filter | grep -qxF -- "$corrupt"; then
      "$ipt" -w -N KUBE-FIREWALL 2>/dev/null || true
      "$ipt" -w -A KUBE-FIREWALL -m comment --comment "$comment" -j DROP
      "$ipt" -w -C INPUT -j KUBE-FIREWALL 2>/dev/null || "$ipt" -w -I INPUT -j KUBE-FIREWALL
      "$ipt" -w -C OUTPUT -j KUBE-FIREWALL 2>/dev/null || "$ipt" -w -I OUTPUT -j KUBE-FIREWALL
    fi
    ;;
  undo)
    roundtrip "$corrupt" "$healthy" || true ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
