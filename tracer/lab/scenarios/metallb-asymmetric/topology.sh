#!/usr/bin/env bash
# A LAN (bridge lan0 in role "lan", 192.0.2.0/24) with client (.100), node1 (.11) and node2
# (.12); node1 also answers ARP for the LoadBalancer VIP 192.0.2.200 (MetalLB L2 mode).
# Nodes share a cluster link (198.51.100.0/30); the pod 198.18.2.2:8080 runs on node2.
# kube-proxy on node1 DNATs VIP:80 to the pod without SNAT (to keep the client's address);
# node2 connmarks those flows and routes the pod's replies back through node1 (table 100),
# but its main route back to the client is the LAN: the request path is asymmetric.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"

for r in lan client node1 node2 pod; do mkns "$r"; done
mkpod pod
in_ns lan ip link add lan0 type bridge
in_ns lan ip link set lan0 up
for r in client node1 node2; do
  veth "$r" eth0 lan "lan-$r"
  in_ns lan ip link set "lan-$r" master lan0
done
veth node1 eth1 node2 eth1
veth pod eth0 node2 veth-pod

in_ns client ip addr add 192.0.2.100/24 dev eth0
in_ns node1 ip addr add 192.0.2.11/24 dev eth0
in_ns node1 ip addr add 192.0.2.200/32 dev eth0
in_ns node2 ip addr add 192.0.2.12/24 dev eth0
in_ns node1 ip addr add 198.51.100.1/30 dev eth1
in_ns node2 ip addr add 198.51.100.2/30 dev eth1
in_ns node2 ip addr add 198.18.2.1/24 dev veth-pod
in_ns pod ip addr add 198.18.2.2/24 dev eth0
in_ns pod ip route add default via 198.18.2.1
in_ns node1 ip route add 198.18.2.0/24 via 198.51.100.2
in_ns node1 sysctl -qw net.ipv4.ip_forward=1
in_ns node2 iptables -t mangle -A PREROUTING -i eth1 -m conntrack --ctstate NEW -j CONNMARK --set-mark 0x1
in_ns node2 iptables -t mangle -A PREROUTING -i veth-pod -j CONNMARK --restore-mark
in_ns node2 ip rule add fwmark 0x1 lookup 100
in_ns node2 ip route add default via 198.51.100.1 dev eth1 table 100
# Healthy: loose reverse-path filtering on node2, as MetalLB's docs advise.
in_ns node2 sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth1.rp_filter=2
in_ns node1 iptables -t nat -N KUBE-SERVICES
in_ns node1 iptables -t nat -A PREROUTING -j KUBE-SERVICES
in_ns node1 iptables -t nat -A KUBE-SERVICES -d 192.0.2.200/32 -p tcp --dport 80 \
  -m comment --comment "$(lab_k8s_ns)/web loadbalancer IP" -j DNAT --to-destination 198.18.2.2:8080
serve pod 8080
