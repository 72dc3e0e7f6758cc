#!/usr/bin/env bash
# Bridged traffic stops going through iptables (br_netfilter not loaded after a reboot, or
# bridge-nf-call-iptables=0), so replies between pods on one bridge skip the un-DNAT.
# Runs on the node. Env: none.
set -euo pipefail
case "${1:-}" in
  inject) sysctl -qw net.bridge.bridge-nf-call-iptables=0 ;;
  undo) sysctl -qw net.bridge.bridge-nf-call-iptables=1 ;;
  *) echo "usage: $0 inject|undo" >&2; exit 2 ;;
esac
