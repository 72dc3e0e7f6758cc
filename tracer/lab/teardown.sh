#!/usr/bin/env bash
# Remove every namespace named ${LAB_PREFIX}* (default dtlab-), killing what runs inside.
set -euo pipefail
prefix=${LAB_PREFIX:-dtlab-}
for name in $(ip netns list | awk '{print $1}' | grep "^${prefix}" || true); do
  for pid in $(ip netns pids "$name" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns delete "$name"
done
