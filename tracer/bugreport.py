"""Turn what the flight recorder holds into the bug report document (see sinks/report.py)."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from tracer import recorder
from tracer.pipeline import Pipeline
from tracer.sinks.jsonl import to_json
from tracer.system import host


def build(pipeline: Pipeline) -> dict[str, Any]:
    rec = recorder.read()
    enricher = pipeline.enricher
    drops = [to_json(pipeline.explain_raw(raw)) for raw in rec.events]
    counters = [asdict(c) for c in pipeline.counted(rec.counters)]
    totals = pipeline.totals(rec.counters).per_reason
    sysctls = {}
    inodes = {k.netns for k in rec.counters} | {enricher.netns.lookup_host()}
    for inode in sorted(inodes):
        ref = enricher.netns.lookup(inode)
        if ref is not None:
            try:
                sysctls[ref.name] = host.sysctls(ref.path)
            except OSError:
                continue
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "hostname": socket.gethostname(),
            "kernel": host.kernel(),
            "hooks_active": [rec.hook],
            "iptables": host.iptables_version(),
            "nft_ruleset_sha256": host.ruleset_digest(),
        },
        "recorder": {
            "since": datetime.fromtimestamp(rec.started_ns / 1e9, UTC).isoformat(
                timespec="seconds"
            ),
            "hook": rec.hook,
            "slots": rec.slots,
        },
        "totals": {
            "matched": rec.stats.matched,
            "per_reason": totals,
            "uncounted": rec.stats.uncounted,
        },
        "counters": counters,
        "drops": drops,
        "sysctls": sysctls,
    }


def write_private(path: str, text: str) -> None:
    """Write a report readable by its owner only (it names hosts, addresses and rules)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # also when the file already existed
        f.write(text)
