#!/usr/bin/env bash
# The two-node pod network of no-route, plus a service 198.19.0.10:80 that kube-proxy on
# node1 DNATs to pod-b:8080 on node2.
set -euo pipefail
dir=$(dirname "$0")
# shellcheck source=tracer/lab/lib.sh
source "$dir/../../lib.sh"
bash "$dir/../no-route/topology.sh"
in_ns node1 iptables -t nat -N KUBE-SERVICES
in_ns node1 iptables -t nat -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
in_ns node1 iptables -t nat -A KUBE-SERVICES -d 198.19.0.10/32 -p tcp --dport 80 \
  -m comment --comment "$(lab_k8s_ns)/web cluster IP" -j DNAT --to-destination 198.18.2.2:8080
