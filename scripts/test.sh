#!/usr/bin/env bash
# The whole suite: lint, types, shell scripts, then pytest on the real kernel (needs root).
# pytest's "no tests collected" (exit 5) is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "make test: run as root (the tests load BPF and build network namespaces)" >&2
  exit 1
fi

# Test-only packages: the CRI tests run their own containerd (own root, socket and CNI
# bridge) with a pause image buildah builds from busybox-static: no registry is needed;
# tshark reads the `--pcap` files back (tests/test_pcap.py).
TEST_APT_PACKAGES=(containerd runc containernetworking-plugins busybox-static buildah tshark)
# shellcheck source=scripts/apt.sh
source scripts/apt.sh  # the working directory is the checkout (cd above)
had_containerd=$(command -v containerd || true)
apt_install_missing "${TEST_APT_PACKAGES[@]}" || exit 1
if [ -z "$had_containerd" ] && [ -d /run/systemd/system ]; then
  # The package starts its own daemon under systemd; the tests do not want one.
  systemctl disable --now containerd.service >/dev/null 2>&1 || true
fi

set -e
.venv/bin/ruff check --no-cache tracer tests bench scripts setup.py
.venv/bin/ruff format --no-cache --check tracer tests bench scripts setup.py
.venv/bin/mypy
mapfile -t shell_scripts < <(git ls-files '*.sh' .ci/run)
shellcheck "${shell_scripts[@]}"
set +e

.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "make test: pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit "$rc"
