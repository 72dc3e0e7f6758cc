#!/usr/bin/env bash
# Forwarding switched off on the node (a hardening script, or a sysctl.d file that won).
# Runs on the node. Env: none.
set -euo pipefail
case "${1:-}" in
  inject) sysctl -qw net.ipv4.ip_forward=0 ;;
  undo) sysctl -qw net.ipv4.ip_forward=1 ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
