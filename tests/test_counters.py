"""The kernel's drop counters, parsed and reconciled with the traced drops (no root): the files
as this kernel writes them, and the reconciliation a session's summary prints."""

from __future__ import annotations

from datetime import UTC, datetime

from tracer.counters import explain
from tracer.counters.catalog import BY_NAME, MIB_NAMES
from tracer.counters.reconcile import Deltas, reconcile
from tracer.model.counters import (
    HOST_WIDE,
    CounterMove,
    CounterRef,
    Device,
    DeviceInfo,
    NetnsCounters,
    Reading,
)
from tracer.model.sockets import ListenQueue, Owner, Socket
from tracer.model.tracing import Summary
from tracer.system.counters import parse_conntrack_stat, parse_snmp, parse_snmp6, parse_softnet

SNMP = """\
Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos \
InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs \
ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 2 64 900 0 3 0 0 0 900 900 0 0 0 0 0 0 0 0 0 900
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors \
IgnoredMulti MemErrors
Udp: 9 4 191 200 191 0 0 0 0
"""
NETSTAT = """\
TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPBacklogDrop
TcpExt: 0 433 433 0
IpExt: InNoRoutes InTruncatedPkts
IpExt: 7 0
"""
SNMP6 = "Ip6InReceives                   	12\nIp6InNoRoutes                   	2\n"
CONNTRACK = """\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop \
early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000004  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 \
0000000a 00000001 00000000  00000000 00000000 00000000 00000000
00000004  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 \
00000005 00000000 00000000  00000000 00000000 00000000 00000000
"""
SOFTNET = (
    "0003eb3b 00000002 00000010 00000000 00000000 00000000 00000000 00000000\n"
    "0003cf3d 00000001 00000001 00000000 00000000 00000000 00000000 00000000\n"
)
NS = 4026532597


def test_snmp_files_read_as_nstat_names() -> None:
    got = parse_snmp(SNMP, MIB_NAMES) | parse_snmp(NETSTAT, MIB_NAMES)
    assert got["UdpRcvbufErrors"] == 191
    assert got["UdpNoPorts"] == 4
    assert got["IpInAddrErrors"] == 3
    assert got["TcpExtListenOverflows"] == 433
    assert got["IpExtInNoRoutes"] == 7
    assert "UdpInDatagrams" not in got  # not a drop counter
    assert parse_snmp6(SNMP6, MIB_NAMES) == {"Ip6InNoRoutes": 2}


def test_conntrack_and_softnet_stats_sum_their_per_cpu_hex_columns() -> None:
    # early_drop evicts a connection to make room: it drops no packet.
    assert parse_conntrack_stat(CONNTRACK) == {"conntrack_drop": 15, "conntrack_insert_failed": 3}
    assert parse_softnet(SOFTNET) == {"dropped": 3, "time_squeeze": 17}


def reading(at: float, **mibs: int) -> Reading:
    dev = Device(2, {"rx_dropped": mibs.pop("rx_dropped", 0), "qdisc_drops": 0}, "noqueue")
    return Reading(at, {NS: NetnsCounters(NS, "dt-x", dict(mibs), (dev,))})


def test_deltas_count_from_the_first_reading_and_across_a_reset() -> None:
    d = Deltas(reading(0, UdpRcvbufErrors=100, rx_dropped=5))
    d.update(reading(1, UdpRcvbufErrors=160, rx_dropped=5))
    totals = d.update(reading(2, UdpRcvbufErrors=170, rx_dropped=2))  # device counter reset
    assert totals[CounterRef(NS, "UdpRcvbufErrors")] == 70
    assert totals[CounterRef(NS, "rx_dropped", 2)] == 2
    # A namespace made after the first reading: all it counted is new.
    later = Reading(3, {7: NetnsCounters(7, "new", {"UdpNoPorts": 4})})
    assert d.update(later)[CounterRef(7, "UdpNoPorts")] == 4
    # A namespace that is gone keeps its totals.
    assert d.totals[CounterRef(NS, "UdpRcvbufErrors")] == 70
    # One missing from a reading (a read that failed) is no news when it is back.
    assert (
        d.update(reading(4, UdpRcvbufErrors=175, rx_dropped=2))[CounterRef(NS, "UdpRcvbufErrors")]
        == 75
    )


def names(inode: int) -> str:
    return "dt-x"


def ifaces(inode: int, ifindex: int) -> str | None:
    return {2: "veth0"}.get(ifindex)


def test_each_counter_next_to_the_traced_drops_of_its_reasons() -> None:
    totals = {
        CounterRef(NS, "UdpRcvbufErrors"): 120,
        CounterRef(NS, "UdpInErrors"): 120,
        CounterRef(NS, "TcpExtListenOverflows"): 433,
        CounterRef(NS, "rx_dropped", 2): 30,
        CounterRef(HOST_WIDE, "softnet_dropped"): 2,
    }
    traced = {
        (NS, 1, "SOCKET_RCVBUFF"): 120,
        (NS, 1, "TCP_LISTEN_OVERFLOW"): 3,
        (NS, 2, "UNHANDLED_PROTO"): 30,
    }
    moves = {m.label: m for m in reconcile(totals, traced, names, ifaces)}
    rcvbuf = moves["UdpRcvbufErrors"]
    assert (rcvbuf.delta, rcvbuf.traced, rcvbuf.untraced) == (120, 120, 0)
    assert rcvbuf.line() == "UdpRcvbufErrors +120 \u2194 120 traced SOCKET_RCVBUFF"
    # A sum of other counters compares with all their traced drops, and is never reported.
    assert moves["UdpInErrors"].traced == 120 and not moves["UdpInErrors"].primary
    listen = moves["TcpExtListenOverflows"]
    assert (listen.traced, listen.untraced) == (3, 430)
    assert listen.line().endswith("3 traced TCP_LISTEN_OVERFLOW; 430 not traced")
    dev = moves["veth0 rx_dropped"]
    assert (dev.traced, dev.untraced, dev.iface) == (30, 0, "veth0")
    softnet = moves["softnet_dropped"]
    assert (softnet.netns, softnet.untraced) == ("host-wide", 2)


def test_two_counters_of_one_reason_never_claim_the_same_drop() -> None:
    totals = {CounterRef(NS, "UdpRcvbufErrors"): 10, CounterRef(NS, "Udp6RcvbufErrors"): 5}
    moves = reconcile(totals, {(NS, 1, "SOCKET_RCVBUFF"): 12}, names, ifaces)
    assert [(m.counter, m.traced) for m in moves] == [
        ("UdpRcvbufErrors", 10),
        ("Udp6RcvbufErrors", 2),
    ]


def test_a_counter_the_tracepoint_never_sees_says_so() -> None:
    [m] = reconcile({CounterRef(NS, "rx_missed_errors", 2): 9}, {}, names, ifaces)
    assert m.reasons == () and m.untraced == 9
    assert m.line() == "veth0 rx_missed_errors +9 \u2194 not seen by the tracepoint"
    assert BY_NAME["TcpExtTCPReqQFullDrop"].reasons == ()


def listen_move() -> CounterMove:
    what = BY_NAME["TcpExtListenOverflows"].what
    return CounterMove(
        "TcpExtListenOverflows", "dt-x", NS, None, 433, 3, ("TCP_LISTEN_OVERFLOW",), what
    )


def test_a_listen_overflow_counter_names_the_socket_its_process_and_backlog() -> None:
    listener = Socket(
        "tcp",
        "198.51.100.2:7000",
        None,
        "listen",
        99,
        2,
        1,
        433,
        Owner(42, "slowapp", "shop/web-0"),
    )
    e = explain.event(listen_move(), 430, (ListenQueue((listener,), 4096),))
    assert e.category == "listen_queue"
    assert "TcpExtListenOverflows +433 in netns dt-x, 430 of them not among" in e.explanation
    assert "198.51.100.2:7000 (pid 42 (slowapp, pod shop/web-0))" in e.explanation
    assert "accept queue 2 of backlog 1 (full)" in e.explanation
    assert e.fix is not None and "raise its listen() backlog (now 1" in e.fix
    line = e.json()
    assert line["type"] == "counter" and line["untraced"] == 430 and line["new"] == 430
    assert line["evidence"]["listeners"][0]["pid"] == 42


def test_a_nic_that_ran_out_of_ring_is_told_to_grow_it() -> None:
    [m] = reconcile({CounterRef(NS, "rx_missed_errors", 2): 9}, {}, names, ifaces)
    e = explain.event(m, 9, (DeviceInfo("eth0", "virtio_net", "mq", 256, 1024, 4, 4),))
    assert "on eth0 (virtio_net) (rx ring 256 of at most 1024), 4 receive queues" in e.explanation
    assert e.fix is not None and e.fix.startswith("grow the receive ring (ethtool -G eth0 rx 1024)")


def test_the_summary_prints_the_counters_and_what_the_tracepoint_did_not_see() -> None:
    e = explain.event(listen_move(), 430, ())
    s = Summary(
        1.0, 0, {}, 0, 0, 0, False, counters=(listen_move(),), untraced=(e,), counters_note=""
    )
    lines = s.counter_lines()
    assert lines[0].startswith("kernel counters in dt-x: TcpExtListenOverflows +433")
    assert lines[1] == "not seen by the tracepoint (counted by the kernel only):"
    doc = s.to_json()
    assert doc["kernel_counters"][0]["counter"] == "TcpExtListenOverflows"
    assert doc["not_traced"][0]["untraced"] == 430


def test_a_counter_event_line_has_a_type_and_a_time() -> None:
    e = explain.event(listen_move(), 1, ())
    assert e.time.tzinfo is UTC and e.time <= datetime.now(UTC)
    assert e.json()["time"].endswith("Z")


def test_the_socket_a_datagram_went_to_is_found_as_the_kernel_picks_it() -> None:
    from ipaddress import ip_address

    from tracer.system.sockets import accepts, receiving

    def udp(local: str, remote: str | None = None) -> Socket:
        return Socket("udp", local, remote, "unconnected", 1, 0, 0)

    dst, src = ip_address("198.51.100.2"), ip_address("198.51.100.7")
    wild, bound = udp("0.0.0.0:53"), udp("198.51.100.2:53")
    connected = udp("198.51.100.2:53", "198.51.100.7:4000")
    v6wild = udp("[::]:53")
    assert receiving([wild, bound], dst, 53, src, 4000) is bound
    assert receiving([wild, bound, connected], dst, 53, src, 4000) is connected
    assert receiving([wild, connected], dst, 53, src, 4001) is wild  # another peer
    assert receiving([v6wild], dst, 53, src, 4000) is v6wild  # dual-stack
    assert receiving([udp("203.0.113.1:53")], dst, 53, src, 4000) is None
    assert accepts(udp("[::ffff:198.51.100.2]:53"), dst, 53)


def test_the_live_view_shows_a_counter_beyond_the_traced_drops_as_one_line() -> None:
    from io import StringIO

    from rich.console import Console

    from tracer.sinks.live import LiveView

    out = StringIO()
    view = LiveView(Console(file=out, width=300, color_system=None))
    view.counter(explain.event(listen_move(), 430, ()))
    text = out.getvalue()
    assert text.startswith("kernel counted, not traced: TcpExtListenOverflows +433 in netns dt-x")
    assert "fix: the application does not accept()" in text
