#!/usr/bin/env bash
# The pod (e.g. metrics-server) calls the kubelet on its node.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"
tcp_try pod 198.18.1.1 10250 2
