#!/usr/bin/env bash
# Control plane, after kubeadm init: the droptrace node agent on every node, from the
# repository's deploy/ (namespace droptrace, a DaemonSet on the image provision/droptrace.sh
# imported on each node). Nodes that join later get their agent from the DaemonSet.
set -euo pipefail
export KUBECONFIG=/etc/kubernetes/admin.conf
kubectl apply -k /droptrace/deploy
kubectl -n droptrace rollout status daemonset/droptrace --timeout=300s
kubectl -n droptrace get pods -o wide
echo "agent.sh: droptrace agents up; metrics on each node's address, port 9750"
