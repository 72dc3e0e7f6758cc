#!/usr/bin/env bash
# Worker: join the cluster with the command cp wrote to /vagrant/.lab/join.sh (the
# Vagrantfile copies it to the laptop after cp is up; rsync brings it here). Idempotent.
set -euo pipefail
join=/vagrant/.lab/join.sh

if [ -f /etc/kubernetes/kubelet.conf ]; then
  echo "worker.sh: already joined"
  exit 0
fi
# With a shared (not rsync) /vagrant, cp may still be writing it: wait a little.
for _ in $(seq 60); do
  [ -s "$join" ] && break
  sleep 5
done
if [ ! -s "$join" ]; then
  echo "worker.sh: $join missing: run 'vagrant up cp' (or 'vagrant provision cp') first, then 'vagrant reload --provision $(hostname)'" >&2
  exit 1
fi
bash "$join"
echo "worker.sh: joined"
