#!/usr/bin/env bash
# Install droptrace on this node from the synced repository (/droptrace), with the
# same step `make demo` runs first: scripts/install.sh (Debian packages, .venv, BPF
# object built against this node's kernel BTF). .venv and the object are excluded from
# rsync, so they survive `vagrant rsync`.
# Then the node agent's image, as `make image` builds it (scripts/image.sh: no registry
# base image), imported into containerd's k8s.io namespace as localhost/droptrace:dev,
# where the DaemonSet in deploy/ finds it (provision/agent.sh applies that on cp). Runs
# before the node joins, so the agent never waits for its image.
set -euo pipefail
if [ ! -f /droptrace/scripts/install.sh ]; then
  echo "droptrace.sh: /droptrace/scripts/install.sh not found: is the repository synced?" >&2
  exit 1
fi
bash /droptrace/scripts/install.sh
/droptrace/.venv/bin/droptrace --help >/dev/null
echo "droptrace.sh: /droptrace/.venv/bin/droptrace ready"

image=localhost/droptrace:dev
archive=/var/tmp/droptrace-image.tar
trap 'rm -f "$archive"' EXIT
IMAGE=$image IMAGE_ARCHIVE=$archive BUILDER=buildah bash /droptrace/scripts/image.sh
ctr -n k8s.io images import "$archive" >/dev/null
buildah rmi "$image" >/dev/null 2>&1 || true # containerd has it now; free the disk
ctr -n k8s.io images ls -q | grep -qx "$image" || {
  echo "droptrace.sh: $image not in containerd after the import" >&2
  exit 1
}
# An agent already running here (a re-provision) restarts from the new image: kubelet
# recreates a removed container with what the tag names now.
mapfile -t running < <(crictl ps -q --name '^droptrace$' --label io.kubernetes.pod.namespace=droptrace 2>/dev/null || true)
if [ "${#running[@]}" -gt 0 ]; then
  crictl rm -f "${running[@]}" >/dev/null
  echo "droptrace.sh: restarting the agent on this node with the new image"
fi
echo "droptrace.sh: $image imported into containerd (k8s.io)"
