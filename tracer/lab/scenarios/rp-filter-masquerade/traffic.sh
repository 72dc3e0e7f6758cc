#!/usr/bin/env bash
# The pod reaches for "the internet": HTTPS and DNS.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"
tcp_try pod 203.0.113.10 443 2
udp_send pod 203.0.113.10 53 2
