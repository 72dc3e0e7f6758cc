#!/usr/bin/env bash
# The client calls the ClusterIP: TCP, whose SYN-ACK comes back from 198.18.1.3 (RST),
# and a DNS-like query from a connected UDP socket, as resolvers use.
set -euo pipefail
# shellcheck source=tracer/lab/lib.sh
source "$(dirname "$0")/../../lib.sh"
tcp_try client 198.19.0.10 80 2
in_ns client python3 -c 'import socket
ok = 0
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.connect(("198.19.0.10", 53))
    try:
        s.send(b"droptrace-lab query"); s.recv(512); ok += 1
    except OSError:
        pass
    s.close()
print("udp 198.19.0.10:53 %d/2 answered" % ok)' || true
