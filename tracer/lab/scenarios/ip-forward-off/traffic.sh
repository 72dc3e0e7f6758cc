#!/usr/bin/env bash
# pod-a calls the service's ClusterIP; its SYNs are never answered.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"
tcp_try pod-a 198.19.0.10 80 2
