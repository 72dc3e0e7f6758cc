#!/usr/bin/env bash
# lab-outside, on cp: a host on both lab networks that is not a Kubernetes node — the
# provider's router and "the internet" in the scenarios (the netns lab's "inet"/"client").
#   outside0  192.0.2.20/24     ipvlan (L2) on cp's lab NIC
#   outside1  198.51.100.20/24  ipvlan (L2) on cp's private NIC
#   lo        203.0.113.10/32   "the internet", HTTP on :8080
#   192.0.2.200/32 via w1       the LoadBalancer VIP: w1 announces it (MetalLB L2 stand-in)
# Usage: outside-netns.sh up|serve|down   Env: LAB_PARENT, PRIVATE_PARENT (cp's NICs)
set -euo pipefail
ns=lab-outside
www=/var/lib/droptrace-lab/www

case "${1:-}" in
  up)
    : "${LAB_PARENT:?}" "${PRIVATE_PARENT:?}"
    ip netns add "$ns" 2>/dev/null || true
    for pair in "outside0:$LAB_PARENT:192.0.2.20/24" "outside1:$PRIVATE_PARENT:198.51.100.20/24"; do
      IFS=: read -r dev parent addr <<<"$pair"
      if ! ip -n "$ns" link show "$dev" >/dev/null 2>&1; then
        ip link add "$dev" link "$parent" type ipvlan mode l2
        ip link set "$dev" netns "$ns"
      fi
      ip -n "$ns" addr replace "$addr" dev "$dev"
      ip -n "$ns" link set "$dev" up
    done
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace 203.0.113.10/32 dev lo
    ip -n "$ns" route replace 192.0.2.200/32 via 192.0.2.11 dev outside0
    # A router asks ARP from its own interface address, not from the packet's source.
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.arp_announce=2
    install -d "$www"
    echo "hello from the lab's internet" >"$www/index.html"
    ;;
  serve)
    exec ip netns exec "$ns" python3 -m http.server 8080 --bind 0.0.0.0 --directory "$www"
    ;;
  down)
    ip netns del "$ns" 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 up|serve|down" >&2
    exit 2
    ;;
esac
