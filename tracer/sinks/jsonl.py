"""JSON lines: one object per attributed drop; field names are a public interface (README)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any, TextIO

from tracer.model import AttributedDrop, proto_name
from tracer.model.counters import CounterEvent
from tracer.model.evidence import evidence_json
from tracer.model.tracing import HookReport, Summary


def to_json(item: AttributedDrop) -> dict[str, Any]:
    d, f, diag = item.drop, item.facts, item.diagnosis
    return {
        "time": f.time.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "reason": f.reason,
        "category": str(diag.category),
        "location": f.location,
        "iface": f.iface,
        "netns": f.netns,
        "src": str(d.src) if d.src else None,
        "dst": str(d.dst) if d.dst else None,
        "proto": proto_name(d.l4proto),
        "sport": d.sport,
        "dport": d.dport,
        "src_pod": f.src_pod,
        "dst_pod": f.dst_pod,
        "svc": f.svc,
        "rule": asdict(f.rule) if f.rule else None,
        "evidence": evidence_json(f.evidence),
        "explanation": diag.explanation,
        "fix": diag.fix,
        "benign": diag.benign,
        "ifindex": d.ifindex,
        "netns_inode": d.netns,
        "len": d.length,
        "suppressed": d.suppressed,
    }


class JsonLines:
    def __init__(
        self,
        out: TextIO = sys.stdout,
        err: TextIO = sys.stderr,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._out = out
        self._err = err
        self._extra = extra or {}  # fields added to every line (serve: the node)

    def start(self, hooks: HookReport) -> None:
        for line in hooks.unavailable:
            print(f"droptrace: hook unavailable: {line}", file=self._err)
        print(f"droptrace: tracing with {', '.join(hooks.active)}", file=self._err, flush=True)

    def drop(self, item: AttributedDrop) -> None:
        obj = to_json(item) | self._extra if self._extra else to_json(item)
        self._out.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def counter(self, event: CounterEvent) -> None:
        """A kernel counter that moved beyond the traced drops: a line of its own type."""
        obj = event.json() | self._extra
        self._out.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self._out.flush()  # once per batch: one write(2) for many lines in a storm

    def finish(self, s: Summary) -> None:
        # The kernel's counters first: the summary line stays the last one, as scripts expect.
        for line in s.counter_lines():
            print(f"droptrace: {line}", file=self._err)
        totals = ", ".join(f"{r} {n}" for r, n in s.totals.items()) or "none"
        print(
            f"droptrace: {s.matched} drops in {s.seconds:.1f}s ({totals}); {s.accounting()}",
            file=self._err,
            flush=True,
        )
