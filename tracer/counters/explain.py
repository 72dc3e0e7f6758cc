"""A counter that moved beyond the traced drops, in words: whose it is (the listening socket
and its process, the UDP socket, the device) and what to change. The socket causes speak
through their own modules (tracer.diagnose.listen_queue, socket_buffer), so a counter and a
traced drop of the same cause give the same advice."""

from __future__ import annotations

import socket as so
from datetime import UTC, datetime

from tracer.diagnose import CAUSES, category_of, listen_queue, socket_buffer
from tracer.model.counters import CounterEvent, CounterMove, DeviceInfo, Settings
from tracer.model.evidence import Evidence
from tracer.model.sockets import ListenQueue, PodOf, SocketsDropping
from tracer.system import counters, netns, sockets, sysctl
from tracer.system.netns import NetnsRef

LISTEN = {"TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPReqQFullDrop"}
RCVBUF = {
    "UdpRcvbufErrors",
    "Udp6RcvbufErrors",
    "UdpLiteRcvbufErrors",
    "UdpLite6RcvbufErrors",
    "UdpMemErrors",
    "Udp6MemErrors",
    "UdpInErrors",
    "Udp6InErrors",
}
NIC_RING = {"rx_missed_errors", "rx_fifo_errors", "rx_over_errors"}
_TOP = 5  # sockets named in one event


def gather(
    move: CounterMove, ref: NetnsRef | None, qdisc: str | None, pod_of: PodOf
) -> tuple[Evidence, ...]:
    """What to read about a counter that moved (one sock_diag dump, or one device)."""
    if move.counter == "softnet_dropped":
        keys = ["net.core.netdev_max_backlog"]  # global: the host's
        return (Settings(dict(sysctl.read(netns.HOST_NETNS, keys))),)
    if ref is None:
        return ()
    try:
        if move.counter in LISTEN:
            found = sockets.sockets(ref.path, so.IPPROTO_TCP, sockets.LISTEN)
            bad = [s for s in found if s.full or (s.drops or 0) > 0]
            bad = sorted(bad, key=lambda s: (not s.full, -(s.drops or 0)))[:_TOP]
            somaxconn = sysctl.read(ref.path, ["net.core.somaxconn"])["net.core.somaxconn"]
            return (ListenQueue(tuple(sockets.with_owners(ref.inode, bad, pod_of)), somaxconn),)
        if move.counter in RCVBUF:
            found = sockets.sockets(ref.path, so.IPPROTO_UDP)
            bad = sorted((s for s in found if (s.drops or 0) > 0), key=lambda s: -(s.drops or 0))
            owned = sockets.with_owners(ref.inode, bad[:_TOP], pod_of)
            return (SocketsDropping(tuple(owned), sockets.buffer_sysctls(ref.path, "udp")),)
    except OSError:
        return ()  # the namespace went away meanwhile
    if move.ifindex:
        info = counters.device_info(ref, move.ifindex, qdisc)
        return (info,) if info is not None else ()
    return ()


def event(move: CounterMove, new: int, evidence: tuple[Evidence, ...]) -> CounterEvent:
    """The event the sinks show for a counter that moved beyond the traced drops."""
    counted = f"{move.label} +{move.delta} in netns {move.netns}"
    if move.reasons:
        counted += f", {move.untraced} of them not among the traced drops ({move.traced_as()})"
    else:
        counted += " (drops the tracepoint does not see)"
    detail, fix = _words(move, evidence)
    category = str(category_of(move.reasons[0])) if move.reasons else None
    if move.counter.startswith("conntrack_"):
        category = "conntrack"  # traced as NETFILTER_DROP, but conntrack's own doing
    return CounterEvent(
        datetime.now(UTC), move, new, category, f"{counted}: {detail}", fix, evidence
    )


def _words(move: CounterMove, evidence: tuple[Evidence, ...]) -> tuple[str, str | None]:
    """(what happened, what to change) for a counter, from its evidence where there is some."""
    for ev in evidence:
        if isinstance(ev, ListenQueue):
            if not ev.listeners:
                return f"{move.what}; no listener shows drops now", listen_queue.FIX
            s = ev.listeners[0]
            return (
                f"{move.what}: listening socket {listen_queue.describe(s)}",
                listen_queue.fix_for(s, ev.somaxconn),
            )
        if isinstance(ev, SocketsDropping):
            if not ev.sockets:
                return f"{move.what}; no socket shows drops now", socket_buffer.FIX
            s = ev.sockets[0]
            return (
                f"{move.what}: {socket_buffer.describe(s)}",
                socket_buffer.fix_for(s, ev.sysctls, move.netns),
            )
        if isinstance(ev, DeviceInfo):
            return _device(move, ev)
        if isinstance(ev, Settings) and move.counter == "softnet_dropped":
            backlog = ev.values.get("net.core.netdev_max_backlog")
            return move.what, (
                f"raise net.core.netdev_max_backlog (now {backlog}) and spread receive work"
                " over CPUs (RSS, RPS: /sys/class/net/<dev>/queues/rx-*/rps_cpus)"
            )
    return move.what, _cause_fix(move)


def _device(move: CounterMove, d: DeviceInfo) -> tuple[str, str | None]:
    driver = f" ({d.driver})" if d.driver else ""
    what = f"{move.what}, on {d.name}{driver}"
    if move.counter in NIC_RING:
        ring = f" (rx ring {d.rx_ring} of at most {d.rx_ring_max})" if d.rx_ring else ""
        if d.rx_queues:
            ring += f", {d.rx_queues} receive queue{'s' if d.rx_queues > 1 else ''}"
        return what + ring, (
            f"grow the receive ring (ethtool -G {d.name} rx {d.rx_ring_max or 'MAX'}), spread"
            " the load over queues and CPUs (RSS, RPS), raise net.core.netdev_max_backlog"
        )
    if move.counter == "qdisc_drops":
        return f"{what}, qdisc {d.qdisc}", (
            f"see which qdisc drops with `tc -s qdisc show dev {d.name}`: raise its limit or"
            " rate, or find the sender that floods it"
        )
    if d.driver == "veth":
        return what, (
            f"`ip -s link show {d.name}` here and its peer: a veth drops when its peer is down"
            " or the peer's namespace cannot take the packets"
        )
    return what, (
        f"`ip -s -s link show {d.name}` shows which counter; a full backlog needs"
        " net.core.netdev_max_backlog raised, a protocol nothing handles is harmless"
    )


def _cause_fix(move: CounterMove) -> str | None:
    for reason in move.reasons:
        fix = next((c.fix for c in CAUSES if reason in c.reasons and c.fix), None)
        if fix is not None:
            return fix
    return None
