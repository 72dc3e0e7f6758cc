"""Socket receive buffer full: SOCKET_RCVBUFF (the socket's SO_RCVBUF was reached),
PROTO_MEM (the protocol's memory for all its sockets, udp_mem/tcp_mem, was reached),
SOCKET_BACKLOG (a TCP socket's backlog overflowed while its owner held it busy).

The evidence is the socket the packet was for (sock_diag, in the drop's namespace), the
process holding it (socket inode -> /proc/PID/fd) and its pod, its buffer and queue, and
the sysctls that bound the buffer. The same words explain the `UdpRcvbufErrors` counter
(tracer.counters), so the live view and the counters give the same advice.
"""

from __future__ import annotations

import socket as so

from tracer.diagnose.base import Cause, Read, Site, at
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Evidence
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.model.sockets import Socket, SocketBuffer
from tracer.system import sockets

REASONS = {
    "SOCKET_RCVBUFF": "the receiving socket's buffer was full",
    "PROTO_MEM": "the protocol's memory for all its sockets was used up (udp_mem/tcp_mem)",
    "SOCKET_BACKLOG": "the TCP socket's backlog was full while its owner held it busy",
}
_PROTOS = {so.IPPROTO_UDP: "udp", so.IPPROTO_TCP: "tcp"}
FIX = (
    "the application reads too slowly: make it read faster (more readers, recvmmsg), or"
    " give the socket a bigger buffer with setsockopt(SO_RCVBUF), capped by"
    " net.core.rmem_max (raise it with sysctl -w net.core.rmem_max=N)"
)


def evidence(site: Site) -> Read | None:
    d = site.drop
    proto = _PROTOS.get(d.l4proto)
    if site.reason not in REASONS or proto is None:
        return None
    if d.src is None or d.dst is None or d.sport is None or d.dport is None:
        return None
    src, dst, sport, dport = d.src, d.dst, d.sport, d.dport

    def read() -> tuple[Evidence, ...]:
        found = sockets.sockets(site.ref.path, d.l4proto)
        s = sockets.receiving(found, dst, dport, src, sport)
        if s is not None:
            s = sockets.with_owners(site.ref.inode, [s], site.pod_of)[0]
        return (SocketBuffer(s, sockets.buffer_sysctls(site.ref.path, proto)),)

    # An unconnected UDP socket takes every sender: one read for all of them.
    peer = (src, sport) if proto == "tcp" else ()
    return Read(("socket_buffer", d.netns, proto, dst, dport, *peer), read)


def fix_for(s: Socket, sysctls: dict[str, int | str | None], netns: str) -> str:
    """What to change for a socket that dropped for a full receive buffer."""
    who = f" ({s.who()})" if s.owner else ""
    cap = sysctls.get("net.core.rmem_max")
    return (
        f"the application holding {s.proto} socket {s.local}{who} reads too slowly: make it"
        f" read faster (more readers, recvmmsg), or give the socket a bigger buffer with"
        f" setsockopt(SO_RCVBUF) (now {s.limit} bytes), capped by net.core.rmem_max={cap}"
        f" (sysctl -w net.core.rmem_max=N in netns {netns})"
    )


def describe(s: Socket) -> str:
    """`udp socket 127.0.0.1:9999 (pid 12 (python3)): 7488 of 8192 bytes queued, 191 drops`."""
    drops = f", {s.drops} drops on this socket" if s.drops else ""
    return f"{s.proto} socket {s.local} ({s.who()}): {s.queued} of {s.limit} bytes queued{drops}"


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    ev = facts.find(SocketBuffer)
    if facts.reason not in REASONS or ev is None:
        return None
    where = f"(on {at(facts)})"
    s = ev.socket
    if s is None:
        what = REASONS[facts.reason]
        return Diagnosis(Category.SOCKET_BUFFER, f"{what}; the socket is gone since {where}", FIX)
    if facts.reason == "PROTO_MEM":
        mem = ev.sysctls.get("net.ipv4.udp_mem", ev.sysctls.get("net.ipv4.tcp_rmem"))
        explanation = f"{REASONS['PROTO_MEM']} when a packet for {describe(s)} arrived {where}"
        fix = (
            f"find the sockets holding the memory (ss -m) and make their readers faster, or"
            f" raise the protocol's limit (now {mem}; pages: min pressure max)"
        )
        return Diagnosis(Category.SOCKET_BUFFER, explanation, fix)
    explanation = f"{REASONS[facts.reason]}: {describe(s)} {where}"
    return Diagnosis(Category.SOCKET_BUFFER, explanation, fix_for(s, ev.sysctls, facts.netns))


def doctor(f: NamespaceFacts) -> list[Finding]:
    """UDP sockets that dropped for a full receive buffer (their own sk_drops count)."""
    dropping = [s for s in f.sockets if s.proto == "udp" and not s.listening and (s.drops or 0) > 0]
    if not dropping:
        return [Finding(Level.OK, f"no UDP socket in {f.where} dropped for a full buffer")]
    return [
        Finding(
            Level.WARN,
            f"{describe(s)} in {f.where}",
            fix_for(s, f.socket_sysctls, f.name),
        )
        for s in sorted(dropping, key=lambda s: -(s.drops or 0))[:5]
    ]


CAUSE = Cause(
    "socket_buffer",
    Category.SOCKET_BUFFER,
    reasons=REASONS,
    diagnose=diagnose,
    evidence=evidence,
    doctor=doctor,
    fix=FIX,
)
