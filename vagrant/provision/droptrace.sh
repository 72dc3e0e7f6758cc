#!/usr/bin/env bash
# Install droptrace on this node from the synced repository (/droptrace), with the
# same step `make demo` runs first: scripts/install.sh (Debian packages, .venv, BPF
# object built against this node's kernel BTF). .venv and the object are excluded from
# rsync, so they survive `vagrant rsync`.
set -euo pipefail
if [ ! -f /droptrace/scripts/install.sh ]; then
  echo "droptrace.sh: /droptrace/scripts/install.sh not found: is the repository synced?" >&2
  exit 1
fi
bash /droptrace/scripts/install.sh
/droptrace/.venv/bin/droptrace --help >/dev/null
echo "droptrace.sh: /droptrace/.venv/bin/droptrace ready"
