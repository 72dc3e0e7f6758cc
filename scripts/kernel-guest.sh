#!/usr/bin/env bash
# The matrix tests on the running kernel, for `make test-kernels`: inside a virtme-ng guest
# (everything of the host read-only but $1), or on the host itself for its column.
#   $1            the directory to write to (results.jsonl, outcomes.jsonl, pytest.log, rc...)
#   DT_BUDGET     seconds this run may take in all; every wait gives up before, so pytest
#                 still reports, and the harness self-check runs at the end
#   DT_IMAGE      in a guest: the image of scripts/guest_python.py, mounted over 9p's paths
#   DT_SLOW       how many times slower than the host Python runs here (waits scale by it)
set -uo pipefail
out=$1
cd "$(dirname "$0")/.." || exit 2
started=$(date +%s)
end=$((started + ${DT_BUDGET:-1500}))
uname -r >"$out/kernel"
phase() { echo "$(($(date +%s) - started)) $*" >>"$out/phases"; }

if [ -n "${DT_IMAGE:-}" ]; then
  mnt=/run/droptrace-guest
  mkdir -p "$mnt"
  if ! { modprobe loop && modprobe squashfs && mount -t squashfs -o loop,ro "$DT_IMAGE" "$mnt"; } \
    >>"$out/guest.log" 2>&1; then
    echo "cannot mount the guest image $DT_IMAGE (loop, squashfs): see guest.log" >>"$out/guest.log"
    exit 2
  fi
  while IFS= read -r p; do
    mount --bind "$mnt/root$p" "$p" >>"$out/guest.log" 2>&1 || exit 2
  done <"$mnt/paths"
  export PYTHONPYCACHEPREFIX=$mnt/pycache
  phase "image mounted"
fi

export DROPTRACE_TEST_SLOW=${DT_SLOW:-1} PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# pytest, stopped (SIGINT: it still prints where it was and its summary) when its time is up.
run_pytest() {
  local dir=$1 deadline=$2
  shift 2
  mkdir -p "$dir"
  DROPTRACE_MATRIX_OUT=$dir/results.jsonl DROPTRACE_TEST_LOG=$dir/droptrace.log \
    DROPTRACE_TEST_DEADLINE=$deadline \
    timeout -s INT -k 30 $((deadline + 20 - $(date +%s))) \
    .venv/bin/python -m pytest -p no:cacheprovider -o addopts= -rA --tb=short -v "$@" \
    >"$dir/pytest.log" 2>&1
  echo $? >"$dir/rc"
}

# The self-check's share: a case that must fail, reported with its name and droptrace's
# stderr (scripts/kernel_table.py checks the report). One droptrace start.
selfcheck=$((${DT_BUDGET:-1500} / 6))
phase "matrix started"
run_pytest "$out" $((end - 60 - selfcheck)) tests/matrix
phase "matrix ended"
DROPTRACE_MATRIX_IMPOSSIBLE=udp_closed_port \
  run_pytest "$out/selfcheck" $((end - 30)) tests/matrix -k test_udp_to_a_closed_port
phase "self-check ended"
