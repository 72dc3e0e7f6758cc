#!/usr/bin/env bash
# The client calls the ClusterIP; the backend's SYN-ACK comes back from 198.18.1.3.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"
tcp_try client 198.19.0.10 80 2
