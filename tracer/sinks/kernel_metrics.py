"""Prometheus series of the kernel's own drop counters, beside droptrace_drops_total:

- droptrace_kernel_drops_total{node, namespace, pod, iface, counter}: what the counter
  counted since the agent started (UdpRcvbufErrors, TcpExtListenOverflows, rx_dropped...);
- droptrace_kernel_drops_untraced_total{...}: of those, the drops no traced drop accounts
  for (the tracepoint did not see them, e.g. SYNs to a full accept queue).

Each counter's labels are given once, at its first scrape: `namespace`/`pod` of the pod whose
network namespace it is (empty for the host and other namespaces), `iface` for device
counters. Counters of a namespace that is gone keep their last value, so a series summed
over several namespaces only grows. Beyond `max_series` label sets, new ones get "_other".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily

from tracer.model.counters import CounterMove, CounterRef

_LABELS = ("node", "namespace", "pod", "iface", "counter")
OTHER = "_other"

Labels = tuple[str, str, str, str]  # namespace, pod, iface, counter


class KernelDropMetrics:
    def __init__(
        self, node: str, max_series: int, pod_of_netns: Callable[[int], tuple[str, str]]
    ) -> None:
        """pod_of_netns: (namespace, name) of the pod whose network namespace it is."""
        self._node = node
        self._max_series = max_series
        self._pod_of_netns = pod_of_netns
        self._labels: dict[CounterRef, Labels] = {}
        self._series: set[Labels] = set()
        self._counted: dict[CounterRef, int] = {}
        self._untraced: dict[CounterRef, int] = {}  # the most seen: a counter only grows

    def _label(self, ref: CounterRef, m: CounterMove) -> Labels:
        labels = self._labels.get(ref)
        if labels is None:
            namespace, pod = self._pod_of_netns(m.netns_inode)
            labels = (namespace, pod, m.iface or "", m.counter)
            if labels not in self._series and len(self._series) >= self._max_series:
                labels = (OTHER, OTHER, OTHER, m.counter)
            self._labels[ref] = labels
            self._series.add(labels)
        return labels

    def families(self, moves: list[CounterMove]) -> list[CounterMetricFamily]:
        for m in moves:
            if not m.primary:
                continue  # a sum of others: it would count their drops twice
            ref = CounterRef(m.netns_inode, m.counter, m.ifindex)
            self._label(ref, m)
            self._counted[ref] = max(self._counted.get(ref, 0), m.delta)
            self._untraced[ref] = max(self._untraced.get(ref, 0), m.untraced)
        counted = CounterMetricFamily(
            "droptrace_kernel_drops",
            "Packets the kernel's own counters counted as dropped since droptrace started "
            "(SNMP MIBs, conntrack, softnet_stat, interfaces and qdiscs), by counter.",
            labels=_LABELS,
        )
        untraced = CounterMetricFamily(
            "droptrace_kernel_drops_untraced",
            "Of droptrace_kernel_drops_total, the drops no traced drop accounts for: the "
            "kfree_skb tracepoint did not see them.",
            labels=_LABELS,
        )
        for family, values in ((counted, self._counted), (untraced, self._untraced)):
            sums: Counter[Labels] = Counter()
            for ref, n in values.items():
                sums[self._labels[ref]] += n
            for labels, n in sorted(sums.items()):
                family.add_metric((self._node, *labels), n)
        return [counted, untraced]
