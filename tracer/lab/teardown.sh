#!/usr/bin/env bash
# Remove every network namespace whose name starts with ${LAB_PREFIX} (required, e.g.
# dtlab-), killing what still runs inside first; deleting a namespace removes its veths,
# bridges, routes and rules. Namespaces without the prefix are never touched.
set -euo pipefail
prefix=${LAB_PREFIX:?LAB_PREFIX must be set, e.g. dtlab-}
while read -r name _; do
  [[ -n $name && $name == "$prefix"* ]] || continue
  for pid in $(ip netns pids "$name" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns delete "$name"
done < <(ip netns list)
