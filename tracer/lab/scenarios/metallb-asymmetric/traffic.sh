#!/usr/bin/env bash
# The client on the LAN calls the LoadBalancer VIP.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"
tcp_try client 192.0.2.200 80 2
