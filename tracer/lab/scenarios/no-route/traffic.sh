#!/usr/bin/env bash
# pod-a calls pod-b's port 8080 across the nodes.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"
tcp_try pod-a 198.18.2.2 8080 2
