"""Which kernel counters count dropped packets, what each counts, and the drop reasons the
kfree_skb tracepoint shows for the same drops (on kernels that give reasons).

A counter with no reasons counts drops the tracepoint never sees: the SYN to a full accept
queue is freed as *consumed*, a NIC that runs out of ring drops before there is an skb. The
order matters: traced drops are given to the counters in this order, so a specific counter
comes before a sum that includes it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Spec:
    name: str  # nstat's name, or the device/softnet/conntrack counter's
    what: str
    reasons: tuple[str, ...] = ()  # () : the tracepoint does not see these drops
    primary: bool = True  # False: a sum of others; shown, never reported on its own


_QDISC = (
    "QDISC_DROP",
    "QDISC_OVERLIMIT",
    "QDISC_CONGESTED",
    "CAKE_FLOOD",
    "FQ_BAND_LIMIT",
    "FQ_HORIZON_LIMIT",
    "FQ_FLOW_LIMIT",
    "DUALPI2_STEP_DROP",
    "TC_INGRESS",
    "TC_EGRESS",
)
_REASM = ("FRAG_REASM_TIMEOUT", "DUP_FRAG", "FRAG_TOO_FAR")


def _both(v4: str, v6: str, what: str, *reasons: str, primary: bool = True) -> tuple[Spec, ...]:
    return (Spec(v4, what, reasons, primary), Spec(v6, what, reasons, primary))


# Per namespace, from /proc/net/snmp, /proc/net/netstat, /proc/net/snmp6, conntrack stats.
MIBS: tuple[Spec, ...] = (
    *_both(
        "UdpRcvbufErrors",
        "Udp6RcvbufErrors",
        "datagrams dropped because the receiving socket's buffer was full",
        "SOCKET_RCVBUFF",
    ),
    *_both(
        "UdpLiteRcvbufErrors",
        "UdpLite6RcvbufErrors",
        "UDP-Lite datagrams dropped because the socket's buffer was full",
        "SOCKET_RCVBUFF",
    ),
    *_both(
        "UdpMemErrors",
        "Udp6MemErrors",
        "datagrams dropped because UDP's memory for all sockets (udp_mem) was used up",
        "PROTO_MEM",
    ),
    Spec(
        "TcpExtTCPRcvQDrop",
        "TCP segments dropped because the socket could not get receive memory",
        ("PROTO_MEM",),
    ),
    Spec(
        "TcpExtTCPOFODrop",
        "out-of-order TCP segments dropped for lack of receive memory",
        ("PROTO_MEM",),
    ),
    Spec(
        "TcpExtTCPBacklogDrop",
        "TCP segments dropped because the socket's backlog was full while its owner held it",
        ("SOCKET_BACKLOG",),
    ),
    Spec(
        "TcpExtListenOverflows",
        "handshakes dropped because a listening socket's accept queue was full (the SYNs are"
        " freed as consumed: only a final ACK that raced the queue is a traced drop)",
        ("TCP_LISTEN_OVERFLOW",),
    ),
    Spec(
        "TcpExtTCPReqQFullDrop",
        "SYNs dropped because a listener's SYN queue was full and SYN cookies are off",
    ),
    Spec(
        "TcpExtListenDrops",
        "every SYN or handshake a listener dropped (ListenOverflows and the rest)",
        ("TCP_LISTEN_OVERFLOW",),
        primary=False,
    ),
    Spec("TcpExtTCPZeroWindowDrop", "TCP segments dropped for a zero window", ("TCP_ZEROWINDOW",)),
    Spec(
        "TcpExtPAWSEstab",
        "TCP segments dropped by the PAWS check (an old timestamp)",
        ("TCP_RFC7323_PAWS", "TCP_RFC7323_PAWS_ACK"),
    ),
    Spec("TcpExtTCPMinTTLDrop", "TCP segments below the socket's minimum TTL", ("TCP_MINTTL",)),
    Spec(
        "TcpExtIPReversePathFilter",
        "packets dropped by the reverse-path filter (rp_filter)",
        ("IP_RPFILTER",),
    ),
    Spec("TcpInCsumErrors", "TCP segments with a bad checksum", ("TCP_CSUM",)),
    *_both("UdpInCsumErrors", "Udp6InCsumErrors", "datagrams with a bad checksum", "UDP_CSUM"),
    *_both(
        "UdpNoPorts",
        "Udp6NoPorts",
        "datagrams to a port no socket listens on",
        "NO_SOCKET",
    ),
    *_both(
        "UdpInErrors",
        "Udp6InErrors",
        "every datagram UDP could not deliver (buffer full, memory, checksum)",
        "SOCKET_RCVBUFF",
        "PROTO_MEM",
        "UDP_CSUM",
        primary=False,
    ),
    *_both("IcmpInCsumErrors", "Icmp6InCsumErrors", "ICMP with a bad checksum", "ICMP_CSUM"),
    Spec("IpInHdrErrors", "IP packets with a bad header or checksum", ("IP_INHDR", "IP_CSUM")),
    Spec("Ip6InHdrErrors", "IPv6 packets with a bad header", ("IP_INHDR", "IPV6_BAD_EXTHDR")),
    *_both(
        "IpInAddrErrors",
        "Ip6InAddrErrors",
        "packets for an address that is not this host's, and not forwarded",
        "IP_INADDRERRORS",
    ),
    *_both(
        "IpExtInNoRoutes",
        "Ip6InNoRoutes",
        "received packets with no route to forward them on",
        "IP_INNOROUTES",
    ),
    *_both(
        "IpOutNoRoutes",
        "Ip6OutNoRoutes",
        "packets (or a socket's sends, before any packet) with no route out",
        "IP_OUTNOROUTES",
    ),
    *_both(
        "IpInUnknownProtos",
        "Ip6InUnknownProtos",
        "packets for a protocol nothing handles",
        "IP_NOPROTO",
    ),
    Spec("IpInDiscards", "IP packets discarded on input (memory, IPsec policy)", ("XFRM_POLICY",)),
    Spec(
        "Ip6InDiscards",
        "IPv6 packets discarded on input (IPv6 disabled on the device, memory, IPsec policy)",
        ("IPV6DISABLED", "XFRM_POLICY"),
    ),
    Spec(
        "IpFragFails",
        "packets too big for the next link that could not be fragmented (DF set)",
        ("PKT_TOO_BIG",),
    ),
    Spec("Ip6InTooBigErrors", "IPv6 packets too big for the next link", ("PKT_TOO_BIG",)),
    *_both(
        "IpReasmFails",
        "Ip6ReasmFails",
        "fragmented datagrams that could not be reassembled (one per datagram)",
        *_REASM,
    ),
    Spec(
        "conntrack_drop",
        "packets conntrack dropped: its table was full and nothing could be evicted",
        ("NETFILTER_DROP",),
    ),
    Spec(
        "conntrack_insert_failed",
        "packets dropped because their new connection clashed with one inserted meanwhile",
        ("NETFILTER_DROP",),
    ),
)

# Per interface: IFLA_STATS64 and the device's qdiscs. Traced drops are those on the device.
DEVICE: tuple[Spec, ...] = (
    Spec("qdisc_drops", "packets the device's qdiscs dropped (a full queue, policing)", _QDISC),
    Spec(
        "tx_dropped",
        "packets the device could not send (its peer down, its queue full)",
        ("DEV_READY", "FULL_RING", "NOT_SPECIFIED", "QDISC_DROP", "NOMEM"),
    ),
    Spec(
        "rx_dropped",
        "received packets the stack dropped (no handler for the protocol, a full backlog,"
        " a device not up)",
        ("UNHANDLED_PROTO", "CPU_BACKLOG", "DEV_READY", "NOT_SPECIFIED", "XDP", "PFMEMALLOC"),
    ),
    Spec("rx_missed_errors", "packets the NIC dropped: no room in its receive ring"),
    Spec("rx_fifo_errors", "packets the NIC dropped: its receive FIFO overran"),
    Spec("rx_over_errors", "packets the NIC dropped: its receive ring overflowed"),
)

# Host-wide, from /proc/net/softnet_stat.
SOFTNET = Spec(
    "softnet_dropped",
    "packets dropped because a CPU's input backlog was full (net.core.netdev_max_backlog)",
    ("CPU_BACKLOG",),
)

MIB_NAMES = frozenset(s.name for s in MIBS)
BY_NAME = {s.name: s for s in (*MIBS, *DEVICE, SOFTNET)}
