"""Sinks: where attributed drops go. They render typed data (tracer.model); they never
enrich, and never reach into the loader or the session."""

from __future__ import annotations

from typing import Protocol

from tracer.model import AttributedDrop
from tracer.model.counters import CounterEvent
from tracer.model.tracing import HookReport, Summary


class Sink(Protocol):
    def start(self, hooks: HookReport) -> None: ...
    def drop(self, item: AttributedDrop) -> None: ...
    def flush(self) -> None: ...  # whenever the explainer has caught up
    def counter(self, event: CounterEvent) -> None: ...  # a kernel counter beyond the traced
    def finish(self, summary: Summary) -> None: ...
