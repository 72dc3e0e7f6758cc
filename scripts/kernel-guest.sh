#!/usr/bin/env bash
# Runs inside a virtme-ng guest of `make test-kernels`: the matrix tests on this kernel.
# $1: the host directory shared read-write; everything else of the host is read-only here.
set -uo pipefail
out=$1
cd "$(dirname "$0")/.." || exit 2
uname -r >"$out/kernel"
# Python under emulation is several times slower: the tests scale their waits by this.
export DROPTRACE_TEST_SLOW=${DROPTRACE_TEST_SLOW:-6}
export DROPTRACE_MATRIX_OUT=$out/results.jsonl PYTHONDONTWRITEBYTECODE=1
.venv/bin/python -m pytest -p no:cacheprovider -o addopts= -v tests/matrix \
  >"$out/pytest.log" 2>&1
echo $? >"$out/rc"
