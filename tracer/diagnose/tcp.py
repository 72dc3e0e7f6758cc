"""TCP: segments the TCP state machine freed. Most are the protocol working on a busy server
(a retransmission of data already received, a segment for a connection that has closed,
answered with an ACK or a RST): benign, counted but not shown without --all. Those that say
something is wrong (a full accept queue, a zero window, pruned queues, authentication) are
explained; a drop not understood says so plainly.

NOT_SPECIFIED at tcp_v4_rcv/tcp_v6_rcv: on 5.17+ kernels the paths that end there without
a reason of their own are a segment for a TIME_WAIT/FIN_WAIT2 connection or a request socket
(answered and freed) and, before 6.x named it, the last ACK to a listener whose accept
queue is full. listen_queue (before this module) names a listener whose queue is full now;
a ListenOverflows counter that moved meanwhile keeps the drop from being called benign.
"""

from __future__ import annotations

from tracer.diagnose import listen_queue
from tracer.diagnose.base import Cause, Read, Site, at
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Evidence, TcpCounters
from tracer.system import counters, sysctl

# reason -> (what it says, benign: the protocol working)
REASONS: dict[str, tuple[str, bool]] = {
    "TCP_OLD_DATA": ("a retransmission of data already received (TCP ACKed it again)", True),
    "TCP_OLD_SEQUENCE": ("a segment older than the receive window (a late duplicate)", True),
    "TCP_OLD_ACK": ("an ACK older than what was already acknowledged", True),
    "TCP_TOO_OLD_ACK": ("an ACK far older than what was already acknowledged", True),
    "TCP_RFC7323_PAWS": ("a segment with an older timestamp than seen (PAWS: a duplicate)", True),
    "TCP_RFC7323_PAWS_ACK": ("an ACK with an older timestamp than seen (PAWS)", True),
    "TCP_RFC7323_TW_PAWS": ("an old duplicate for a TIME_WAIT connection (PAWS)", True),
    "TCP_RFC7323_TSECR": ("a timestamp echo that does not match (a stale segment)", True),
    "TCP_CLOSE": ("a segment for a socket already closed (TCP answered with a RST)", True),
    "TCP_RESET": ("a RST, acted upon: the connection was reset", True),
    "TCP_ABORT_ON_DATA": ("data after the application closed its socket (answered: RST)", True),
    "TCP_OFOMERGE": ("a segment merged into out-of-order data already queued", True),
    "TCP_INVALID_SYN": ("a SYN on an established connection (answered: challenge ACK)", True),
    "TCP_FLAGS": ("a segment with flags TCP refuses in the connection's state", False),
    "TCP_ZEROWINDOW": (
        "data while the receive window is zero: the application reads too slowly",
        False,
    ),
    "TCP_OFO_QUEUE_PRUNE": (
        "out-of-order data pruned: the socket ran out of receive memory",
        False,
    ),
    "TCP_OFO_DROP": ("out-of-order data dropped: no receive memory for it", False),
    "TCP_INVALID_SEQUENCE": ("a segment outside the receive window", False),
    "TCP_INVALID_END_SEQUENCE": ("a segment ending beyond the receive window", False),
    "TCP_INVALID_ACK_SEQUENCE": ("an ACK for data never sent", False),
    "TCP_ACK_UNSENT_DATA": ("an ACK for data never sent", False),
    "TCP_FASTOPEN": ("a TCP Fast Open SYN's data could not be accepted", False),
    "TCP_MINTTL": ("a TTL below the socket's minimum (IP_MINTTL, e.g. BGP GTSM)", False),
    "TCP_MD5NOTFOUND": ("no TCP-MD5 signature where the socket wants one", False),
    "TCP_MD5UNEXPECTED": ("a TCP-MD5 signature the socket does not expect", False),
    "TCP_MD5FAILURE": ("a wrong TCP-MD5 signature", False),
    "TCP_AONOTFOUND": ("no TCP-AO option where the socket wants one", False),
    "TCP_AOUNEXPECTED": ("a TCP-AO option the socket does not expect", False),
    "TCP_AOKEYNOTFOUND": ("a TCP-AO key the socket does not have", False),
    "TCP_AOFAILURE": ("a wrong TCP-AO signature", False),
    "TCP_AUTH_HDR": ("a malformed TCP-MD5/AO option", False),
}
_RMEM = "raise net.ipv4.tcp_rmem (and net.core.rmem_max), or find the loss that reorders"
FIXES = {
    "TCP_ZEROWINDOW": "the receiving application reads too slowly: find why (CPU, a lock)",
    "TCP_OFO_QUEUE_PRUNE": _RMEM,
    "TCP_OFO_DROP": _RMEM,
    "TCP_INVALID_SEQUENCE": "look for a middlebox or NAT rewriting sequence numbers",
}
RECEIVE = {"tcp_v4_rcv", "tcp_v6_rcv"}
_SOMAXCONN = "net.core.somaxconn"
_LISTEN = ("TcpExtListenOverflows", "TcpExtListenDrops")


def evidence(site: Site) -> Read | None:
    if site.reason != "NOT_SPECIFIED" or site.location not in RECEIVE:
        return None

    def read() -> tuple[Evidence, ...]:
        ext = counters.mibs(site.ref.path, _LISTEN)
        values = {k.removeprefix("TcpExt"): ext.get(k, 0) for k in _LISTEN}
        moved = site.deltas.moved(("tcp", site.ref.inode), values)
        somaxconn = sysctl.read(site.ref.path, [_SOMAXCONN])[_SOMAXCONN]
        return (TcpCounters(values, moved, somaxconn),)

    return Read(("tcp", site.drop.netns), read)


def _listener(drop: Drop, facts: Facts, t: TcpCounters) -> Diagnosis:
    grew = t.grew("ListenOverflows")
    explanation = (
        f"the accept queue of the listener on {drop.dst}:{drop.dport} is full (TcpExt"
        f" ListenOverflows +{grew}, net.core.somaxconn={t.somaxconn}): the connection from"
        f" {drop.src}:{drop.sport} was not accepted ({facts.reason} on {at(facts)})"
    )
    return Diagnosis(Category.TCP, explanation, listen_queue.FIX)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    if facts.reason in REASONS:
        what, benign = REASONS[facts.reason]
        t = facts.find(TcpCounters)
        if t is not None and t.grew("ListenOverflows"):
            return _listener(drop, facts, t)
        explanation = (
            f"{what}, from {drop.src}:{drop.sport} to {drop.dst}:{drop.dport} on {at(facts)}"
        )
        if benign:
            explanation += ": the protocol working, nothing to fix"
        return Diagnosis(Category.TCP, explanation, FIXES.get(facts.reason), benign=benign)
    t = facts.find(TcpCounters)
    if t is None or facts.location not in RECEIVE:
        return None
    if t.grew("ListenOverflows"):
        return _listener(drop, facts, t)
    explanation = (
        f"TCP answered and freed a segment from {drop.src}:{drop.sport} to"
        f" {drop.dst}:{drop.dport} on {at(facts)} without naming why (NOT_SPECIFIED at"
        f" {facts.location}): it was for a connection closing or closed here (TIME_WAIT,"
        " FIN_WAIT2: data after close, a retransmission) or one being set up (a retransmitted"
        " SYN); no listener's accept queue overflowed: the protocol working"
    )
    return Diagnosis(Category.TCP, explanation, None, benign=True)


CAUSE = Cause(
    "tcp",
    Category.TCP,
    reasons={r: what for r, (what, _) in REASONS.items()},
    diagnose=diagnose,
    evidence=evidence,
)
