#!/usr/bin/env bash
# Install everything droptrace needs on a Debian 12 host, from this repository's own files:
# Debian packages, ./.venv with the console script, and the BPF object.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  clang llvm bpftool libbpf-dev libbpf1 make   # BPF build (CO-RE object) and its loader library
  iproute2 iptables nftables   # lab topologies and rules (traffic is sent with python3)
  shellcheck python3-venv vagrant   # vagrant: `vagrant validate` of the multi-node lab
  prometheus   # the tests scrape `droptrace serve` with a real Prometheus on loopback
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: must run as root (apt-get and BPF need it)" >&2
  exit 1
fi

# shellcheck source=scripts/apt.sh
source scripts/apt.sh  # the working directory is the checkout (cd above)
apt_install_missing "${APT_PACKAGES[@]}"

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "install.sh: Python >= 3.11 required ($PY is $("$PY" -V 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
# Reinstall only when the dependency list changed.
stamp=.venv/.droptrace-deps
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  echo "==> pip install -e .[dev]"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  cp pyproject.toml "$stamp"
fi

make -s cri  # the CRI client's generated modules, before their bytecode

# Bytecode beside the sources, as a wheel's install writes it, also where
# PYTHONDONTWRITEBYTECODE is set: else every run compiles the modules it imports again
# (~0.1 s of CPU at start-up, and more on the first drop, in the middle of a storm).
.venv/bin/python -m compileall -q tracer

echo "==> building BPF object"
make -s bpf
