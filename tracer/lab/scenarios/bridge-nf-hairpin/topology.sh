#!/usr/bin/env bash
# One node with bridge cni0 (198.18.1.1/24) and two pods on it: client (.2) and backend
# (.3: TCP 8080 and a DNS-like UDP echo on 53). kube-proxy on the node DNATs the ClusterIP
# 198.19.0.10 (tcp/80 -> backend:8080, udp/53 -> backend:53); the bridge CNI masquerades
# pod traffic leaving the pod CIDR. Healthy: bridge-nf-call-iptables=1 in the node.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"

# net.bridge.* exists only with bridge netfilter (built in here; a module elsewhere).
[ -e /proc/sys/net/bridge ] || modprobe br_netfilter
mkns node; mkns client; mkns backend
mkpod client; mkpod backend
bridge node cni0 198.18.1.1/24
for pod in client backend; do
  veth "$pod" eth0 node "veth-$pod"
  in_ns node ip link set "veth-$pod" master cni0
done
in_ns client ip addr add 198.18.1.2/24 dev eth0
in_ns backend ip addr add 198.18.1.3/24 dev eth0
in_ns client ip route add default via 198.18.1.1
in_ns backend ip route add default via 198.18.1.1
in_ns node sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
in_ns node iptables -t nat -N KUBE-SERVICES
in_ns node iptables -t nat -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
in_ns node iptables -t nat -A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
in_ns node iptables -t nat -A KUBE-SERVICES -d 198.19.0.10/32 -p tcp --dport 80 \
  -m comment --comment "$(lab_k8s_ns)/backend:http cluster IP" -j DNAT --to-destination 198.18.1.3:8080
in_ns node iptables -t nat -A KUBE-SERVICES -d 198.19.0.10/32 -p udp --dport 53 \
  -m comment --comment "$(lab_k8s_ns)/backend:dns cluster IP" -j DNAT --to-destination 198.18.1.3:53
in_ns node iptables -t nat -A POSTROUTING -s 198.18.1.0/24 ! -d 198.18.1.0/24 \
  -m comment --comment "name: bridge" -j MASQUERADE
serve backend 8080
# The "DNS server": answers each datagram to its sender, for at most 10 minutes.
in_ns backend timeout 600 python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
while True:
    data, peer = s.recvfrom(512); s.sendto(data, peer)' </dev/null >/dev/null 2>&1 &
for _ in $(seq 50); do
  in_ns backend ss -Hlun "sport = :53" | grep -q . && exit 0
  sleep 0.1
done
echo "topology: nothing listens on udp/53 in $(ns backend)" >&2
exit 1
