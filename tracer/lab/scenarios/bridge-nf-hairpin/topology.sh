#!/usr/bin/env bash
# One node bridge cni0 (198.18.1.1/24) with pods client (.2) and backend (.3, port 8080), and
# a ClusterIP 198.19.0.10:80 that kube-proxy on the node DNATs to the backend.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"

# net.bridge.* exists only with bridge netfilter (built in here; a module elsewhere).
[ -e /proc/sys/net/bridge ] || modprobe br_netfilter
mkns node; mkns client; mkns backend
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
in_ns node iptables -t nat -A KUBE-SERVICES -d 198.19.0.10/32 -p tcp --dport 80 \
  -m comment --comment "default/backend cluster IP" -j DNAT --to-destination 198.18.1.3:8080
serve backend 8080
