#!/usr/bin/env bash
# The whole suite: lint, types, shell scripts, then pytest on the real kernel (needs root).
# pytest's "no tests collected" (exit 5) is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "make test: run as root (the tests load BPF and build network namespaces)" >&2
  exit 1
fi

set -e
.venv/bin/ruff check --no-cache tracer tests bench scripts
.venv/bin/ruff format --no-cache --check tracer tests bench scripts
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
