#!/usr/bin/env bash
# `make image`: the node agent's container image (localhost/droptrace:dev), built from this
# machine's files and Debian packages only, with no registry base image:
#   1. wheels of droptrace (setup.py compiles its BPF object into it with `make bpf`) and
#      its dependencies;
#   2. a minimal Debian bookworm root filesystem (mmdebstrap, from this machine's own apt
#      sources): python3, libbpf1, iproute2, iptables, nftables, and a venv at /opt/droptrace
#      with those wheels installed offline;
#   3. deploy/Dockerfile (FROM scratch, ADD rootfs.tar) built with buildah, podman or docker.
# Env: IMAGE (localhost/droptrace:dev), BUILDER (buildah|podman|docker; default: the first
# that works, else buildah is installed), IMAGE_ARCHIVE (also save a docker-archive there, for
# `ctr -n k8s.io images import` on a node), KEEP_ROOTFS=1 (keep build/image/).
# Runs on Debian 12 as root (the image's Python is bookworm's 3.11, like .venv's). Not part of
# `make test`: it downloads Debian packages and takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/droptrace:dev}
WORK=build/image
VENV=/opt/droptrace
IMAGE_PACKAGES=(python3 python3-venv libbpf1 iproute2 iptables nftables)

die() { echo "image.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap builds the root filesystem in a chroot)"
[ -x .venv/bin/python ] || die "run \`make install\` first (.venv and the BPF object)"
# shellcheck source=/dev/null
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] ||
  die "needs a Debian 12 (bookworm) machine: its apt sources and Python 3.11 are the image's"

pick_builder() {
  if [ -n "${BUILDER:-}" ]; then echo "$BUILDER"; return; fi
  local b
  for b in buildah podman; do
    if command -v "$b" >/dev/null; then echo "$b"; return; fi
  done
  # docker only with a daemon to talk to (the client alone cannot build).
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; return; fi
  echo buildah
}
builder=$(pick_builder)
case "$builder" in buildah | podman | docker) ;; *) die "BUILDER must be buildah, podman or docker" ;; esac

# shellcheck source=scripts/apt.sh
source scripts/apt.sh  # the working directory is the checkout (cd above)
# docker is not a Debian package of that name: it is used only when already there.
if [ "$builder" = docker ]; then apt_install_missing mmdebstrap; else apt_install_missing mmdebstrap "$builder"; fi

start=$SECONDS
rm -rf "$WORK"
mkdir -p "$WORK/wheels"
# setuptools builds the wheel through build/lib, and packages whatever an earlier build left
# there (a module since deleted, say): start from nothing and leave nothing.
cleanup() {
  rm -rf build/lib build/bdist.*
  [ "${KEEP_ROOTFS:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
rm -rf build/lib build/bdist.*

echo "==> wheels (droptrace with its BPF object, and its dependencies)"
.venv/bin/pip wheel -q --disable-pip-version-check -w "$WORK/wheels" . 2> >(grep -v '^WARNING: Location' >&2)
python3 - "$WORK/wheels" <<'PY'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("droptrace-*.whl"))
if not any(n.endswith(".bpf.o") for n in zipfile.ZipFile(wheel).namelist()):
    sys.exit(f"image.sh: {wheel.name} has no BPF object")
PY

# The image's Debian packages come from this machine's own apt sources (no host name written
# here), with the same apt settings for them (a snapshot archive needs Check-Valid-Until off).
sources=()
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  if [ -s "$f" ] && grep -qE '^[^#]*(deb |URIs:)' "$f"; then sources+=("$f"); fi
done
[ "${#sources[@]}" -gt 0 ] || die "no Debian apt source in /etc/apt/sources.list(.d/debian.sources)"
aptopts=()
for key in Acquire::Check-Valid-Until Acquire::Check-Date Acquire::http::Proxy Acquire::https::Proxy; do
  value=$(apt-config shell v "$key" | sed -n "s/^v='\(.*\)'$/\1/p")
  if [ -n "$value" ]; then aptopts+=("--aptopt=$key \"$value\""); fi
done

echo "==> Debian bookworm root filesystem (mmdebstrap: ${IMAGE_PACKAGES[*]})"
include=$(IFS=,; echo "${IMAGE_PACKAGES[*]}")
# Commands in the new root run with a clean environment: this machine's pip settings
# (PIP_*) must not reach the image's offline install.
in_root="chroot \"\$1\" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin"
# merged-usr hook: /usr merged the way debootstrap does it (usr-is-merged), not with the
# usrmerge package, which would pull in 30 MB of perl that nothing in the image runs.
mmdebstrap --quiet --variant=essential --include="$include" "${aptopts[@]}" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook="copy-in $WORK/wheels /tmp" \
  --customize-hook="$in_root python3 -m venv $VENV" \
  --customize-hook="$in_root $VENV/bin/pip install -q --disable-pip-version-check --no-index --find-links /tmp/wheels droptrace" \
  --customize-hook="$in_root $VENV/bin/pip uninstall -q -y pip setuptools" \
  --customize-hook="$in_root $VENV/bin/droptrace --version" \
  --customize-hook="rm -rf \"\$1\"/tmp/wheels \"\$1\"/var/cache/apt/* \"\$1\"/var/lib/apt/lists/*" \
  bookworm "$WORK/rootfs.tar" "${sources[@]}"

echo "==> image $IMAGE ($builder)"
cp deploy/Dockerfile "$WORK/Dockerfile"
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
case "$builder" in
  buildah)
    old=$(buildah images -q "$IMAGE" 2>/dev/null || true)
    buildah bud --quiet --layers=false --build-arg "REVISION=$revision" -t "$IMAGE" "$WORK" >/dev/null
    new=$(buildah images -q "$IMAGE")
    size=$(buildah images --format '{{.Size}}' "$IMAGE") ;;
  podman)
    old=$(podman images -q "$IMAGE" 2>/dev/null || true)
    podman build --quiet --build-arg "REVISION=$revision" -t "$IMAGE" "$WORK" >/dev/null
    new=$(podman images -q "$IMAGE")
    size=$(podman images --format '{{.Size}}' "$IMAGE") ;;
  docker)
    old=$(docker images -q "$IMAGE" 2>/dev/null || true)
    docker build --quiet --build-arg "REVISION=$revision" -t "$IMAGE" "$WORK" >/dev/null
    new=$(docker images -q "$IMAGE")
    size=$(docker image inspect --format '{{.Size}}' "$IMAGE") ;;
esac
# The previous build of this tag only, never anyone else's dangling images.
if [ -n "$old" ] && [ "$old" != "$new" ]; then "$builder" rmi "$old" >/dev/null 2>&1 || true; fi

if [ -n "${IMAGE_ARCHIVE:-}" ]; then
  echo "==> saving $IMAGE to $IMAGE_ARCHIVE"
  rm -f "$IMAGE_ARCHIVE"
  case "$builder" in
    buildah) buildah push --quiet "$IMAGE" "docker-archive:$IMAGE_ARCHIVE:$IMAGE" ;;
    *) "$builder" save -o "$IMAGE_ARCHIVE" "$IMAGE" ;;
  esac
fi
echo "image.sh: $IMAGE built in $((SECONDS - start)) s, $size ($builder)"
