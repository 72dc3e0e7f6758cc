#!/usr/bin/env bash
# make bench: forwarding throughput under a bounded drop storm, with and without tracers.
# Installs the peer it compares against (bpftrace) when missing; extra arguments go to
# `python -m bench` (e.g. `make bench BENCH_ARGS="--rounds 3"`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "make bench: run as root (BPF and network namespaces)" >&2
  exit 1
fi
if ! command -v bpftrace >/dev/null; then
  echo "==> apt-get install bpftrace (a peer the bench compares with)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bpftrace >/dev/null
fi
# shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
exec .venv/bin/python -m bench ${BENCH_ARGS:-}
