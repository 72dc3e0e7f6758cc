#!/usr/bin/env bash
# pod (198.18.1.2) -- node (198.18.1.1 on veth-pod; kubelet listening on 10250), with the
# filter/nat rules kubelet <= 1.27 writes on every node (iptables-save form):
#   -A INPUT -j KUBE-FIREWALL / -A OUTPUT -j KUBE-FIREWALL
#   -A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets"
#      -m mark --mark 0x8000/0x8000 -j DROP
#   -A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming
#      localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
#   nat: -A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000
# Healthy: only packets kube-proxy marked 0x8000 are dropped.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"

mkns pod; mkns node
mkpod pod
veth pod eth0 node veth-pod
in_ns pod ip addr add 198.18.1.2/24 dev eth0
in_ns pod ip route add default via 198.18.1.1
in_ns node ip addr add 198.18.1.1/24 dev veth-pod
in_ns node iptables -t nat -N KUBE-MARK-DROP
in_ns node iptables -t nat -A KUBE-MARK-DROP -j MARK --or-mark 0x8000
in_ns node iptables -N KUBE-FIREWALL
in_ns node iptables -A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" \
  -m mark --mark 0x8000/0x8000 -j DROP
in_ns node iptables -A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" \
  -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
in_ns node iptables -I OUTPUT -j KUBE-FIREWALL
in_ns node iptables -I INPUT -j KUBE-FIREWALL
serve node 10250
