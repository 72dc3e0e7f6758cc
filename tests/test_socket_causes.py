"""The socket causes from typed evidence (no root): a receive buffer full and a listener's
accept queue full, with the socket, its process and the setting to change."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address

from tracer import diagnose
from tracer.model import Category, Drop, Facts
from tracer.model.evidence import Evidence, evidence_json
from tracer.model.findings import Level, NamespaceFacts
from tracer.model.sockets import ListenQueue, Owner, Socket, SocketBuffer

RMEM = {
    "net.core.rmem_default": 212992,
    "net.core.rmem_max": 212992,
    "net.ipv4.udp_mem": "575802 767736 1151604",
}


def udp_drop() -> Drop:
    src, dst = ip_address("198.51.100.7"), ip_address("198.51.100.2")
    return Drop(0, 0, 0, 1, 2, 128, 0, 0x800, 17, src, dst, 40000, 5353, None, None, 1)


def tcp_drop() -> Drop:
    src, dst = ip_address("198.51.100.7"), ip_address("198.51.100.2")
    return Drop(0, 0, 0, 1, 2, 52, 0, 0x800, 6, src, dst, 40000, 7000, None, None, 1)


def facts(reason: str, *evidence: Evidence, location: str = "udp_queue_rcv_one_skb") -> Facts:
    return Facts(datetime.now(UTC), reason, location, "eth0", "pod-ns", tuple(evidence))


def receiver(drops: int = 191) -> Socket:
    owner = Owner(4242, "dns-cache", "kube-system/coredns-1")
    return Socket("udp", "198.51.100.2:5353", None, "unconnected", 77, 7488, 8192, drops, owner)


def listener(queued: int = 2, drops: int = 433) -> Socket:
    return Socket("tcp", "0.0.0.0:7000", None, "listen", 78, queued, 1, drops, Owner(9, "slowapp"))


def test_a_udp_receiver_that_reads_too_slowly_is_named_with_its_process_and_buffer() -> None:
    ev = SocketBuffer(receiver(), RMEM)
    d = diagnose.diagnose(udp_drop(), facts("SOCKET_RCVBUFF", ev))
    assert d.category is Category.SOCKET_BUFFER
    assert "udp socket 198.51.100.2:5353 (pid 4242 (dns-cache, pod kube-system/coredns-1))" in (
        d.explanation
    )
    assert "7488 of 8192 bytes queued, 191 drops on this socket" in d.explanation
    assert d.fix is not None and "reads too slowly" in d.fix
    assert "SO_RCVBUF" in d.fix and "net.core.rmem_max=212992" in d.fix
    got = evidence_json((ev,))
    assert got["socket"]["pid"] == 4242 and got["socket"]["rcvbuf"] == 8192
    assert got["rmem"]["net.ipv4.udp_mem"] == "575802 767736 1151604"


def test_protocol_memory_exhausted_points_at_udp_mem() -> None:
    d = diagnose.diagnose(udp_drop(), facts("PROTO_MEM", SocketBuffer(receiver(), RMEM)))
    assert d.category is Category.SOCKET_BUFFER
    assert "udp_mem" in d.explanation and d.fix is not None and "575802 767736 1151604" in d.fix


def test_a_full_buffer_whose_socket_is_gone_still_says_what_happened() -> None:
    d = diagnose.diagnose(udp_drop(), facts("SOCKET_RCVBUFF", SocketBuffer(None, RMEM)))
    assert d.category is Category.SOCKET_BUFFER
    assert "the socket is gone since" in d.explanation


def test_a_listen_overflow_names_the_listener_its_backlog_and_somaxconn() -> None:
    ev = ListenQueue((listener(),), 4096)
    d = diagnose.diagnose(tcp_drop(), facts("TCP_LISTEN_OVERFLOW", ev, location="tcp_v4_rcv"))
    assert d.category is Category.LISTEN_QUEUE
    assert "listening socket 0.0.0.0:7000 (pid 9 (slowapp))" in d.explanation
    assert "accept queue 2 of backlog 1 (full), 433 drops since it listens" in d.explanation
    assert d.fix is not None and "raise its listen() backlog (now 1" in d.fix
    assert "net.core.somaxconn=4096" in d.fix


def test_an_older_kernels_unnamed_drop_to_a_full_listener_is_a_listen_overflow() -> None:
    # Before TCP_LISTEN_OVERFLOW, the last ACK to a full queue is NOT_SPECIFIED at tcp_v4_rcv.
    full = facts("NOT_SPECIFIED", ListenQueue((listener(),), 4096), location="tcp_v4_rcv")
    assert diagnose.diagnose(tcp_drop(), full).category is Category.LISTEN_QUEUE
    # A listener with room is no evidence of an overflow.
    room = facts("NOT_SPECIFIED", ListenQueue((listener(0),), 4096), location="tcp_v4_rcv")
    assert diagnose.diagnose(tcp_drop(), room).category is Category.OTHER


def test_doctor_names_the_sockets_that_dropped() -> None:
    ns = NamespaceFacts(
        name="pod-ns",
        sysctls={},
        interfaces=["eth0"],
        bridges=[],
        masquerade=False,
        rule_counts={},
        sockets=(receiver(), listener()),
        socket_sysctls=dict(RMEM) | {"net.core.somaxconn": 4096},
    )
    warned = [f for f in diagnose.doctor(ns) if f.level is Level.WARN]
    assert any("198.51.100.2:5353" in f.what and "191 drops" in f.what for f in warned)
    assert any("listening socket 0.0.0.0:7000" in f.what for f in warned)
    quiet = NamespaceFacts("pod-ns", {}, ["eth0"], [], False, {})
    assert not [f for f in diagnose.doctor(quiet) if "socket" in f.what and f.level is Level.WARN]
