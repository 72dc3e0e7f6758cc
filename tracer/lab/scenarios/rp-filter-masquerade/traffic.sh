#!/usr/bin/env bash
# The pod reaches for "the internet" (203.0.113.10 in inet): HTTPS, whose SYN-ACKs come
# back over eth2 and meet strict rp_filter, and ping, which the firewall REJECTs.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"
tcp_try pod 203.0.113.10 443 2
in_ns pod ping -n -c 2 -i 0.2 -W 1 203.0.113.10 || true
