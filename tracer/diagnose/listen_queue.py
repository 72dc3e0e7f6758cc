"""Listen queue overflow: a TCP listener's accept queue was full, so the kernel dropped the
handshake. The SYN of a new connection is then freed as *consumed* (no drop reason, never
seen by kfree_skb's tracepoint); only the final ACK of a handshake that raced the queue
filling up is a drop: TCP_LISTEN_OVERFLOW at tcp_v4_rcv on 6.x kernels, NOT_SPECIFIED on
older ones. So most overflows show only in the TcpExtListenOverflows counter, which
tracer.counters watches and explains with the same words as this module.

The evidence is the listening socket (sock_diag: its accept queue against its backlog, and
its own drop count), the process holding it and its pod, and net.core.somaxconn.
"""

from __future__ import annotations

import socket as so

from tracer.diagnose.base import Cause, Read, Site, at
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Evidence
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.model.sockets import ListenQueue, Socket
from tracer.system import sockets, sysctl

REASON = "TCP_LISTEN_OVERFLOW"
# Where kernels without that reason drop the final ACK to a full queue.
_TCP_RCV = {"tcp_v4_rcv", "tcp_v6_rcv"}
_GENERIC = {"NOT_SPECIFIED", "UNKNOWN"}
SOMAXCONN = "net.core.somaxconn"
FIX = (
    "the application does not accept() connections as fast as they come: accept faster"
    " (more workers), or raise its listen() backlog (capped by net.core.somaxconn)"
)


def evidence(site: Site) -> Read | None:
    d = site.drop
    if d.l4proto != so.IPPROTO_TCP or d.dst is None or d.dport is None:
        return None
    if site.reason != REASON and not (site.reason in _GENERIC and site.location in _TCP_RCV):
        return None
    dst, dport = d.dst, d.dport

    def read() -> tuple[Evidence, ...]:
        found = sockets.sockets(site.ref.path, so.IPPROTO_TCP, sockets.LISTEN)
        mine = [s for s in found if sockets.accepts(s, dst, dport)]
        if not mine:
            return ()  # e.g. a packet to a client's port: nothing listens there
        somaxconn = sysctl.read(site.ref.path, [SOMAXCONN])[SOMAXCONN]
        listeners = sockets.with_owners(site.ref.inode, mine, site.pod_of)
        return (ListenQueue(tuple(listeners), somaxconn),)

    return Read(("listen_queue", d.netns, dst, dport), read)


def queue(s: Socket) -> str:
    """`accept queue 2 of backlog 1 (full), 433 drops since it listens`."""
    full = " (full)" if s.full else ""
    drops = f", {s.drops} drops since it listens" if s.drops else ""
    return f"accept queue {s.queued} of backlog {s.limit}{full}{drops}"


def describe(s: Socket) -> str:
    """`127.0.0.1:7000 (pid 12 (python3)): accept queue 2 of backlog 1 (full), ...`."""
    return f"{s.local} ({s.who()}): {queue(s)}"


def fix_for(s: Socket, somaxconn: int | None) -> str:
    who = f"the application ({s.who()})" if s.owner else "the application"
    cap = f"{somaxconn}" if somaxconn is not None else "?"
    raise_cap = (
        " and net.core.somaxconn with it" if somaxconn is not None and s.limit >= somaxconn else ""
    )
    return (
        f"{who} does not accept() connections on {s.local} as fast as they come: accept"
        f" faster (more workers), or raise its listen() backlog (now {s.limit};"
        f" net.core.somaxconn={cap} caps it){raise_cap}"
    )


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    ev = facts.find(ListenQueue)
    where = f"(on {at(facts)})"
    if ev is None or not ev.listeners:
        if facts.reason != REASON:
            return None
        return Diagnosis(
            Category.LISTEN_QUEUE,
            f"the listening socket's accept queue for port {drop.dport} was full {where}",
            FIX,
        )
    s = max(ev.listeners, key=lambda s: (s.full, s.drops or 0))
    if facts.reason != REASON and not s.full:
        return None  # a generic drop at tcp_v4_rcv is an overflow only if the queue is full
    explanation = (
        f"the listening socket {s.local} ({s.who()}) had no room in its accept queue, so the"
        f" kernel dropped the handshake {where}; now: {queue(s)}"
    )
    return Diagnosis(Category.LISTEN_QUEUE, explanation, fix_for(s, ev.somaxconn))


def doctor(f: NamespaceFacts) -> list[Finding]:
    """Listeners whose accept queue is full now, or that have dropped since they listen."""
    bad = [s for s in f.sockets if s.listening and (s.full or (s.drops or 0) > 0)]
    if not bad:
        return [Finding(Level.OK, f"no listening socket in {f.where} overflowed")]
    somaxconn = f.socket_sysctls.get(SOMAXCONN)
    cap = somaxconn if isinstance(somaxconn, int) else None
    return [
        Finding(Level.WARN, f"listening socket {describe(s)} in {f.where}", fix_for(s, cap))
        for s in sorted(bad, key=lambda s: (-s.full, -(s.drops or 0)))[:5]
    ]


CAUSE = Cause(
    "listen_queue",
    Category.LISTEN_QUEUE,
    reasons={REASON: "the listening socket's accept queue was full"},
    diagnose=diagnose,
    evidence=evidence,
    doctor=doctor,
    fix=FIX,
)
