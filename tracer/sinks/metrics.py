"""Prometheus metrics for `droptrace serve`, counted by the kernel and labelled by the stream.

`droptrace_drops_total` is read from the in-kernel counters at every scrape, so it is exact
whatever the stream loses or the per-flow limit holds back. Each counter key (location,
reason, interface, netns) gets its labels once, from the first drop of that key the stream
explains (category, the local pod); a key whose drops were never streamed gets labels from
its reason alone after a grace period. Labels never change once given, so every series only
grows, as a Prometheus counter must.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tracer.model import AttributedDrop
from tracer.model.counters import CounterMove
from tracer.model.tracing import CounterKey, HookReport, HookState, KeyLabels, Stats, counter_key
from tracer.sinks.kernel_metrics import KernelDropMetrics

# A counter key with no explained drop after this long is labelled from its reason alone.
GRACE_S = 3.0
OTHER = "_other"  # label value of series aggregated beyond --max-series

_LABEL_NAMES = ("node", "reason", "category", "iface", "namespace", "pod")


@dataclass(frozen=True, slots=True)
class KernelView:
    """What the collector reads from the live tracer at scrape time."""

    # The per-key counts and the totals, from one read of the counters.
    totals: Callable[[], tuple[dict[CounterKey, int], Stats]]
    # The kernel's own drop counters read now, reconciled with the traced drops.
    kernel_counters: Callable[[], list[CounterMove]] | None = None


class DropMetrics(Collector):
    """A sink for the explained stream and a Prometheus collector of the kernel's counts."""

    def __init__(
        self,
        node: str,
        max_series: int,
        note: Callable[[str], None],
        unexplained: Callable[[CounterKey], KeyLabels],
        clock: Callable[[], float] = time.monotonic,
        kernel_drops: KernelDropMetrics | None = None,
    ) -> None:
        """unexplained: labels for a key none of whose drops the stream explained;
        kernel_drops: the series of the kernel's own counters."""
        self._kernel_drops = kernel_drops
        self._node = node
        self._label_unexplained = unexplained
        self._max_series = max_series
        self._note = note
        self._clock = clock
        self._lock = threading.Lock()
        self._labels: dict[CounterKey, KeyLabels] = {}
        self._first_seen: dict[CounterKey, float] = {}
        self._series: set[KeyLabels] = set()
        self._aggregated = 0
        self._kernel: KernelView | None = None
        self._hooks: dict[str, bool] = {}

    # -- the tracer's lifetime --------------------------------------------------------------

    def attach(self, kernel: KernelView | None) -> None:
        """The live tracer to read at scrape time; None once it is closing."""
        with self._lock:
            self._kernel = kernel

    @property
    def attached(self) -> bool:
        return self._kernel is not None

    def hooks(self, report: HookReport) -> None:
        states: dict[str, bool] = {}
        for h in report.hooks:
            states[h.hook] = states.get(h.hook, False) or h.state is HookState.ACTIVE
        with self._lock:
            self._hooks = states

    # -- the explained stream ---------------------------------------------------------------

    def drop(self, item: AttributedDrop) -> None:
        key = counter_key(item.drop)
        with self._lock:
            if key not in self._labels:  # a scrape may have labelled it meanwhile
                self._give(key, KeyLabels.of(item))

    def _give(self, key: CounterKey, labels: KeyLabels) -> None:
        if labels not in self._series and len(self._series) >= self._max_series:
            labels = KeyLabels(labels.reason, labels.category, OTHER, OTHER, OTHER)
            if self._aggregated == 0:
                self._note(
                    f"more than {self._max_series} label sets: further drops are counted under "
                    f'iface/namespace/pod "{OTHER}" (--max-series)'
                )
            self._aggregated += 1
        self._series.add(labels)
        self._labels[key] = labels
        self._first_seen.pop(key, None)

    # -- the collector ----------------------------------------------------------------------

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        with self._lock:
            kernel = self._kernel
            counts, stats = kernel.totals() if kernel else ({}, None)
            totals: Counter[KeyLabels] = Counter({labels: 0 for labels in self._series})
            now = self._clock()
            for key, n in counts.items():
                labels = self._labels.get(key)
                if labels is None:
                    labels = self._unexplained(key, now)
                if labels is not None:
                    totals[labels] += n
            hooks = dict(self._hooks)
            aggregated = self._aggregated
            kernel_families = []
            if self._kernel_drops is not None:
                moves = kernel.kernel_counters() if kernel and kernel.kernel_counters else []
                kernel_families = self._kernel_drops.families(moves)
        drops = CounterMetricFamily(
            "droptrace_drops",
            "Packets the kernel dropped, counted in the kernel (exact), by reason, droptrace's "
            "category, interface and the local pod.",
            labels=_LABEL_NAMES,
        )
        for labels, n in sorted(totals.items()):
            names = (labels.reason, labels.category, labels.iface, labels.namespace, labels.pod)
            drops.add_metric((self._node, *names), n)
        yield drops
        yield self._node_counter(
            "droptrace_events_lost",
            "Drops counted but not streamed because the ring buffer was full.",
            stats.lost if stats else 0,
        )
        yield self._node_counter(
            "droptrace_events_suppressed",
            "Drops counted but held back from the stream by the per-flow limit.",
            stats.suppressed if stats else 0,
        )
        active = GaugeMetricFamily(
            "droptrace_hook_active",
            "1 if the kernel accepted this hook, 0 if it refused it.",
            labels=("node", "hook"),
        )
        for hook, on in sorted(hooks.items()):
            active.add_metric((self._node, hook), 1 if on else 0)
        yield active
        yield from kernel_families
        yield self._node_counter(
            "droptrace_series_aggregated",
            f'Kernel counter keys counted under "{OTHER}" labels beyond --max-series.',
            aggregated,
        )

    def _node_counter(self, name: str, documentation: str, value: int) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=("node",))
        family.add_metric((self._node,), value)
        return family

    def _unexplained(self, key: CounterKey, now: float) -> KeyLabels | None:
        """Labels for a key the stream has not explained: none within the grace period (the
        drop may be on its way), then from its reason alone. Called with the lock held."""
        first = self._first_seen.setdefault(key, now)
        if now - first < GRACE_S:
            return None
        self._give(key, self._label_unexplained(key))
        return self._labels[key]
