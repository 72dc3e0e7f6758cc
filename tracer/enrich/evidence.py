"""The machine's state at the moment of a drop, read as each cause module asks for it.

Each read is cached under its cause's key (namespace, interface, flow) for a short while,
so a storm of identical drops costs one lookup.
"""

from __future__ import annotations

import time
from typing import Any

from tracer.diagnose import evidence_reads
from tracer.diagnose.base import Read, Site
from tracer.model import Drop
from tracer.model.evidence import Evidence, IfaceFromRoute, Unreadable
from tracer.system import routes
from tracer.system.netns import NetnsRef

_TTL = 2.0
MAX_ENTRIES = 4096  # cached reads at most: a session of many flows stays bounded


class EvidenceCache:
    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[float, tuple[Evidence, ...]]] = {}

    def gather(self, site: Site) -> tuple[Evidence, ...]:
        """Every record the cause modules want for this drop."""
        return tuple(e for read in evidence_reads(site) for e in self.cached(read))

    def cached(self, read: Read) -> tuple[Evidence, ...]:
        hit = self._cache.get(read.key)
        now = time.monotonic()
        if hit and now - hit[0] < _TTL:
            return hit[1]
        try:
            value = read.read()
        except OSError as err:  # the namespace went away, or we may not enter it
            value = (Unreadable(str(err)),)
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[read.key] = (now, value)
        return value


def egress_read(drop: Drop, ref: NetnsRef) -> Read:
    """The device a packet the namespace sent would leave by: its route, from its own source
    address where that is one of the namespace's (else from any)."""

    def read() -> tuple[Evidence, ...]:
        dst = str(drop.dst)
        out = routes.egress(ref.path, dst, str(drop.src)) if drop.src else None
        out = out or routes.egress(ref.path, dst)
        return (IfaceFromRoute(out.oif),) if out is not None and out.oif else ()

    return Read(("egress", drop.netns, drop.src, drop.dst), read)
