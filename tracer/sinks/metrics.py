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

from tracer.classify import category_of
from tracer.enrich import Enricher
from tracer.hooks import CounterKey, HookReport, Stats
from tracer.model import AttributedDrop, Drop

# A counter key with no explained drop after this long is labelled from its reason alone.
GRACE_S = 3.0
OTHER = "_other"  # label value of series aggregated beyond --max-series

Labels = tuple[str, str, str, str, str]  # reason, category, iface, namespace, pod
_LABEL_NAMES = ("node", "reason", "category", "iface", "namespace", "pod")


@dataclass(frozen=True, slots=True)
class KernelView:
    """What the collector reads from the live tracer at scrape time."""

    counters: Callable[[], dict[CounterKey, int]]
    stats: Callable[[], Stats]


class DropMetrics(Collector):
    """A sink for the explained stream and a Prometheus collector of the kernel's counts."""

    def __init__(
        self,
        node: str,
        enricher: Enricher,
        max_series: int,
        note: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node = node
        self._enricher = enricher
        self._max_series = max_series
        self._note = note
        self._clock = clock
        self._lock = threading.Lock()
        self._labels: dict[CounterKey, Labels] = {}
        self._first_seen: dict[CounterKey, float] = {}
        self._series: set[Labels] = set()
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
        states = {h: True for h in report.active}
        for line in (*report.unavailable, *report.optional):
            for hook in line.split(":", 1)[0].split(", "):
                states.setdefault(hook.strip(), False)
        with self._lock:
            self._hooks = states

    # -- the explained stream ---------------------------------------------------------------

    def drop(self, item: AttributedDrop) -> None:
        key = _key(item.drop)
        with self._lock:
            if key in self._labels:
                return
        namespace, pod = self._local_pod(item.drop)
        labels = (
            item.facts.reason,
            str(item.diagnosis.category),
            item.facts.iface or "",
            namespace,
            pod,
        )
        with self._lock:
            if key not in self._labels:  # a scrape may have labelled it meanwhile
                self._give(key, labels)

    def _local_pod(self, drop: Drop) -> tuple[str, str]:
        """The pod on this node whose packet it was: the one whose netns the drop is in, else
        the sender, else the receiver. Pods elsewhere are not labels (cardinality)."""
        pods = self._enricher.pods
        local = [p for ip in (drop.src, drop.dst) if ip and (p := pods.by_ip(ip)) is not None]
        local = [p for p in local if p.netns_inode is not None]
        mine = [p for p in local if p.netns_inode == drop.netns] or local
        return (mine[0].namespace, mine[0].name) if mine else ("", "")

    def _give(self, key: CounterKey, labels: Labels) -> None:
        if labels not in self._series and len(self._series) >= self._max_series:
            reason, category = labels[0], labels[1]
            labels = (reason, category, OTHER, OTHER, OTHER)
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
            counts = kernel.counters() if kernel else {}
            stats = kernel.stats() if kernel else None
            totals: Counter[Labels] = Counter({labels: 0 for labels in self._series})
            now = self._clock()
            for key, n in counts.items():
                labels = self._labels.get(key)
                if labels is None:
                    labels = self._unexplained(key, now)
                if labels is not None:
                    totals[labels] += n
            hooks = dict(self._hooks)
            aggregated = self._aggregated
        drops = CounterMetricFamily(
            "droptrace_drops",
            "Packets the kernel dropped, counted in the kernel (exact), by reason, droptrace's "
            "category, interface and the local pod.",
            labels=_LABEL_NAMES,
        )
        for labels, n in sorted(totals.items()):
            drops.add_metric((self._node, *labels), n)
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
        yield self._node_counter(
            "droptrace_series_aggregated",
            f'Kernel counter keys counted under "{OTHER}" labels beyond --max-series.',
            aggregated,
        )

    def _node_counter(self, name: str, documentation: str, value: int) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=("node",))
        family.add_metric((self._node,), value)
        return family

    def _unexplained(self, key: CounterKey, now: float) -> Labels | None:
        """Labels for a key the stream has not explained: none within the grace period (the
        drop may be on its way), then from its reason alone. Called with the lock held."""
        first = self._first_seen.setdefault(key, now)
        if now - first < GRACE_S:
            return None
        reason = self._enricher.reasons.name(key.reason)
        iface = self._enricher.ifaces.name(key.netns, key.ifindex) or ""
        self._give(key, (reason, str(category_of(reason)), iface, "", ""))
        return self._labels[key]


def _key(drop: Drop) -> CounterKey:
    return CounterKey(drop.location, drop.reason, drop.ifindex, drop.netns)
