#!/usr/bin/env bash
# A node (role node) with a pod bridge cni0 (198.18.1.1/24, pod 198.18.1.52) and two links
# to its provider ("inet", "the internet" 203.0.113.10): uplink eth1 (192.0.2.1, the
# default route; the CNI masquerades pod traffic to it) and eth2 (198.51.100.1, the
# provider's private network). The provider routes traffic for 192.0.2.1 back over eth2,
# as VPS networks do. Replies reach the node on eth2, are de-masqueraded to the pod's
# address in PREROUTING, then routed: the reverse-path check looks at their SOURCE
# (203.0.113.10, whose route is eth1), never at the pod's address as the seed says.
# Healthy: loose rp_filter (2, what the CNIs set) and the CNI's FORWARD/NAT rules only.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"

mkns pod; mkns node; mkns inet
mkpod pod
bridge node cni0 198.18.1.1/24
veth pod eth0 node veth-pod
in_ns node ip link set veth-pod master cni0
veth node eth1 inet eth0
veth node eth2 inet eth1
in_ns pod ip addr add 198.18.1.52/24 dev eth0
in_ns pod ip route add default via 198.18.1.1
in_ns node ip addr add 192.0.2.1/24 dev eth1
in_ns node ip addr add 198.51.100.1/24 dev eth2
in_ns node ip route add default via 192.0.2.254
in_ns inet ip addr add 192.0.2.254/24 dev eth0
in_ns inet ip addr add 198.51.100.254/24 dev eth1
in_ns inet ip addr add 203.0.113.10/32 dev lo
in_ns inet ip route add 192.0.2.1/32 via 198.51.100.1 dev eth1
# A provider router asks ARP from its own interface address, not from the packet's source.
in_ns inet sysctl -qw net.ipv4.conf.all.arp_announce=2
in_ns node sysctl -qw net.ipv4.ip_forward=1
# Healthy: loose reverse-path filtering (what the CNIs set).
in_ns node sysctl -qw net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth2.rp_filter=2
in_ns node iptables -t nat -A POSTROUTING -s 198.18.0.0/16 -o eth1 -m comment --comment "cni masquerade" -j MASQUERADE
in_ns node iptables -A FORWARD -s 198.18.0.0/16 -m comment --comment "cni: allow pod traffic" -j ACCEPT
in_ns node iptables -A FORWARD -d 198.18.0.0/16 -m comment --comment "cni: allow pod traffic" -j ACCEPT
serve inet 443
