#!/usr/bin/env bash
# pod-a (198.18.1.2) -- node1 == node2 -- pod-b (198.18.2.2): two nodes, one pod each,
# node-to-node link 198.51.100.0/30, pod CIDRs routed between the nodes.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"

for r in pod-a node1 node2 pod-b; do mkns "$r"; done
mkpod pod-a; mkpod pod-b
veth pod-a eth0 node1 veth-pod-a
veth pod-b eth0 node2 veth-pod-b
veth node1 eth1 node2 eth1

in_ns pod-a ip addr add 198.18.1.2/24 dev eth0
in_ns pod-a ip route add default via 198.18.1.1
in_ns pod-b ip addr add 198.18.2.2/24 dev eth0
in_ns pod-b ip route add default via 198.18.2.1
in_ns node1 ip addr add 198.18.1.1/24 dev veth-pod-a
in_ns node2 ip addr add 198.18.2.1/24 dev veth-pod-b
in_ns node1 ip addr add 198.51.100.1/30 dev eth1
in_ns node2 ip addr add 198.51.100.2/30 dev eth1
in_ns node1 ip route add 198.18.2.0/24 via 198.51.100.2
in_ns node2 ip route add 198.18.1.0/24 via 198.51.100.1
in_ns node1 sysctl -qw net.ipv4.ip_forward=1
in_ns node2 sysctl -qw net.ipv4.ip_forward=1
serve pod-b 8080
