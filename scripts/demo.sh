#!/usr/bin/env bash
# A short live session: UDP to a closed port inside a namespace made (and removed) here.
set -euo pipefail
cd "$(dirname "$0")/.."

ns="dt-demo-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

ip netns add "$ns"
ip -n "$ns" link set lo up
echo "==> droptrace --netns $ns --duration 6  (UDP to 127.0.0.1:9, nothing listens)"
(
  sleep 2
  ip netns exec "$ns" python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3): s.sendto(b"demo", ("127.0.0.1", 9))'
) &
./.venv/bin/droptrace --netns "$ns" --duration 6
wait
