#!/usr/bin/env bash
# A pod (e.g. metrics-server) calls the kubelet on its node and pings the node; then the
# node pings its own localhost (the seed: "you can't even ping localhost anymore").
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"
tcp_try pod 198.18.1.1 10250 2
in_ns pod ping -n -c 2 -i 0.2 -W 1 198.18.1.1 || true
in_ns node ping -n -c 1 -W 1 127.0.0.1 || true
