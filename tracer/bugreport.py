"""Turn what the flight recorder holds into the bug report document (see sinks/report.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tracer import recorder
from tracer.counters import baseline
from tracer.counters.source import CounterScope, CounterSource
from tracer.errors import UsageError
from tracer.model.tracing import CounterKey
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
    kernel_counters, not_traced = _counters(pipeline, rec.counters)
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
            "cause_rate": rec.cause_rate,
        },
        "totals": {
            "matched": rec.stats.matched,
            "per_reason": totals,
            "uncounted": rec.stats.uncounted,
            "held": rec.stats.suppressed,  # over their cause's rate: counted, not kept
        },
        "counters": counters,
        "drops": drops,
        "kernel_counters": kernel_counters,
        "not_traced": not_traced,
        "sysctls": sysctls,
    }


def _counters(
    pipeline: Pipeline, traced: dict[CounterKey, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The kernel's drop counters since the recording started, next to the recorder's traced
    drops, and what the tracepoint did not see, explained (empty without a baseline)."""
    loaded = baseline.load(baseline.path_for(recorder.PIN_DIR))
    if loaded is None:
        return [], []
    first, scope = loaded
    refs, host_wide = baseline.namespaces(scope)
    e = pipeline.enricher
    source = CounterSource(
        CounterScope(lambda: refs, host_wide), e.reasons.name, e.ifaces.name, e.pods.of_process
    )
    source.begin(first)
    source.update()
    moves = source.moves(traced)
    kernel = [m.json() | {"primary": m.primary} for m in moves]
    return kernel, [ev.json() for ev in source.untraced(moves)]


def check_out(path: str) -> Path:
    """Where `dump --out` will write, refused before any work if it cannot be written."""
    out = Path(path)
    if out.is_dir() and not out.is_symlink():
        raise UsageError(f"--out {path}: is a directory")
    parent = out.parent
    if not parent.is_dir():
        raise UsageError(f"--out {path}: no directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path}: cannot write in {parent}")
    return out


def write_private(out: Path, text: str) -> None:
    """Write a report readable by its owner only (it names hosts, addresses and rules).

    Into a new file of its own in the same directory, then renamed over `out`: a symlink
    planted at `out` by whoever can write the directory is replaced, never followed, so
    root's dump never overwrites or chmods the file it points to."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)  # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
