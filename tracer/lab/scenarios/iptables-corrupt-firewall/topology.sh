#!/usr/bin/env bash
# pod (198.18.1.2) -- node (198.18.1.1, kubelet listening on 10250), with kubelet's
# KUBE-FIREWALL chain as it writes it: drop only packets marked 0x8000 for dropping.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"

mkns pod; mkns node
veth pod eth0 node veth-pod
in_ns pod ip addr add 198.18.1.2/24 dev eth0
in_ns pod ip route add default via 198.18.1.1
in_ns node ip addr add 198.18.1.1/24 dev veth-pod
in_ns node iptables -N KUBE-FIREWALL
in_ns node iptables -A INPUT -j KUBE-FIREWALL
in_ns node iptables -A OUTPUT -j KUBE-FIREWALL
in_ns node iptables -A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" \
  -m mark --mark 0x8000/0x8000 -j DROP
serve node 10250
