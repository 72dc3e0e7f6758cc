"""The kernel's own drop counters: what one reading holds, and how a counter's movement
compares with the drops droptrace traced (reconciliation). Nothing here does I/O.

Names are the ones people already grep for: nstat's for the SNMP MIBs (`UdpRcvbufErrors`,
`TcpExtListenOverflows`, `Ip6InNoRoutes`), `ip -s link`'s for devices (`rx_dropped`),
and `qdisc_drops`, `softnet_dropped`, `conntrack_<column>` for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tracer.model.evidence import Evidence, Json, evidence_json

HOST_WIDE = 0  # the netns "inode" of counters that belong to no namespace (softnet_stat)


@dataclass(frozen=True, slots=True)
class Device:
    """One interface's drop counters (IFLA_STATS64, and its qdiscs' drops)."""

    ifindex: int
    counts: dict[str, int]  # rx_dropped, tx_dropped, rx_missed_errors, ..., qdisc_drops
    qdisc: str | None = None  # the root qdisc's kind


@dataclass(frozen=True, slots=True)
class NetnsCounters:
    """Every drop counter of one network namespace, as read at one moment."""

    inode: int
    name: str
    mibs: dict[str, int]  # nstat names -> value
    devices: tuple[Device, ...] = ()


@dataclass(frozen=True, slots=True, order=True)
class CounterRef:
    """One counter: a MIB of a namespace, or a counter of one of its devices."""

    netns: int  # inode; HOST_WIDE for softnet_stat
    name: str
    ifindex: int = 0  # device counters only


@dataclass(frozen=True, slots=True)
class Reading:
    """Every counter in scope, read at `at` (CLOCK_MONOTONIC seconds)."""

    at: float
    namespaces: dict[int, NetnsCounters] = field(default_factory=dict)
    softnet: dict[str, int] = field(default_factory=dict)  # host-wide: dropped, time_squeeze

    def values(self) -> dict[CounterRef, int]:
        out: dict[CounterRef, int] = {}
        for ns in self.namespaces.values():
            for name, value in ns.mibs.items():
                out[CounterRef(ns.inode, name)] = value
            for dev in ns.devices:
                for name, value in dev.counts.items():
                    out[CounterRef(ns.inode, name, dev.ifindex)] = value
        for name, value in self.softnet.items():
            out[CounterRef(HOST_WIDE, f"softnet_{name}")] = value
        return out

    def device(self, netns: int, ifindex: int) -> Device | None:
        ns = self.namespaces.get(netns)
        return next((d for d in ns.devices if d.ifindex == ifindex), None) if ns else None


@dataclass(frozen=True, slots=True)
class CounterMove:
    """One counter's movement over a span, next to the traced drops it corresponds to."""

    counter: str  # UdpRcvbufErrors, rx_dropped...
    netns: str  # the namespace's name ("host-wide" for softnet_stat)
    netns_inode: int
    iface: str | None  # device counters
    delta: int  # what the kernel counted over the span
    traced: int  # of those, how many droptrace traced (drops of `reasons`)
    reasons: tuple[str, ...]  # the drop reasons the tracepoint shows for them; () for none
    what: str  # what the counter counts, in words
    primary: bool = True  # False: a sum of other counters, shown but never alone reported
    ifindex: int = 0  # device counters

    @property
    def untraced(self) -> int:
        """Drops the kernel counted that no traced drop accounts for."""
        return max(0, self.delta - self.traced)

    @property
    def label(self) -> str:
        """The counter as a person reads it: `UdpRcvbufErrors`, `eth0 rx_dropped`."""
        return f"{self.iface} {self.counter}" if self.iface else self.counter

    def traced_as(self) -> str:
        """What it was traced as, in words: `120 traced SOCKET_RCVBUFF`."""
        if not self.reasons:
            return "not seen by the tracepoint"
        shown = "/".join(self.reasons[:3]) + ("/..." if len(self.reasons) > 3 else "")
        where = f" on {self.iface}" if self.iface else ""
        return f"{self.traced} traced {shown}{where}"

    def line(self) -> str:
        """`UdpRcvbufErrors +120 <-> 120 traced SOCKET_RCVBUFF` (and what was not traced)."""
        text = f"{self.label} +{self.delta} \u2194 {self.traced_as()}"
        if self.untraced and self.reasons:
            text += f"; {self.untraced} not traced"
        if not self.primary:
            text += " (a sum of the counters above)"
        return text

    def json(self) -> dict[str, Json]:
        """The keys of a `kernel_counters` entry (summary) or a counter event (--json)."""
        return {
            "counter": self.counter,
            "netns": self.netns,
            "netns_inode": self.netns_inode,
            "iface": self.iface,
            "delta": self.delta,
            "traced": self.traced,
            "untraced": self.untraced,
            "reasons": list(self.reasons),
            "what": self.what,
        }


@dataclass(frozen=True, slots=True)
class CounterEvent:
    """A counter that moved beyond the traced drops while tracing: what it counts, whose it
    is (evidence: the listening socket, the device...) and what to change."""

    time: datetime
    move: CounterMove  # since the session started
    new: int  # untraced drops since the previous event of this counter
    category: str | None
    explanation: str
    fix: str | None = None
    evidence: tuple[Evidence, ...] = ()

    def json(self) -> dict[str, Json]:
        """A `{"type": "counter", ...}` line of --json (README): the counts since the
        session started, and `new` untraced drops since this counter's previous line."""
        return {
            "type": "counter",
            "time": self.time.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            **self.move.json(),
            "new": self.new,
            "category": self.category,
            "evidence": evidence_json(self.evidence),
            "explanation": self.explanation,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class DeviceInfo(Evidence):
    """The device whose counter moved: its driver, root qdisc, and receive ring."""

    name: str
    driver: str | None  # veth, bridge (the link kind) or the NIC's driver (virtio_net...)
    qdisc: str | None
    rx_ring: int | None = None  # ethtool -g: the ring's size and the most it can be
    rx_ring_max: int | None = None
    rx_queues: int | None = None  # the device's receive and transmit queues
    tx_queues: int | None = None

    def json(self) -> dict[str, Json]:
        return {
            "device": {
                "name": self.name,
                "driver": self.driver,
                "qdisc": self.qdisc,
                "rx_ring": self.rx_ring,
                "rx_ring_max": self.rx_ring_max,
                "rx_queues": self.rx_queues,
                "tx_queues": self.tx_queues,
            }
        }


@dataclass(frozen=True, slots=True)
class Settings(Evidence):
    """Sysctls and counts read alongside a counter (netdev_max_backlog, time_squeeze)."""

    values: dict[str, int | str | None]

    def json(self) -> dict[str, Json]:
        return dict(self.values)
