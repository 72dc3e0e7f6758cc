"""NFT_MSG_TRACE messages from the trace group, decoded into drop verdicts (pyroute2 codec)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from tracer.model import Drop, IPAddress
from tracer.system.netlink import NFNL_SUBSYS_NFTABLES, nfgen_msg, nla

TABLE_PREFIX = "droptrace_"  # droptrace's own trace tables: their verdicts are not news
_NFT_MSG_TRACE = 17
_TRACE_RULE, _TRACE_POLICY = 3, 1  # enum nft_trace_types
_NF_DROP = 0
_FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}


class nft_trace_msg(nfgen_msg):  # type: ignore[misc]  # pyroute2 names messages so
    """NFT_MSG_TRACE: pyroute2 0.9 decodes nf_tables messages but has no trace message."""

    nla_map = (
        ("NFTA_TRACE_UNSPEC", "none"),
        ("NFTA_TRACE_TABLE", "asciiz"),
        ("NFTA_TRACE_CHAIN", "asciiz"),
        ("NFTA_TRACE_RULE_HANDLE", "be64"),
        ("NFTA_TRACE_TYPE", "be32"),
        ("NFTA_TRACE_VERDICT", "verdict"),
        ("NFTA_TRACE_ID", "be32"),
        ("NFTA_TRACE_LL_HEADER", "cdata"),
        ("NFTA_TRACE_NETWORK_HEADER", "cdata"),
        ("NFTA_TRACE_TRANSPORT_HEADER", "cdata"),
        ("NFTA_TRACE_IIF", "be32"),
        ("NFTA_TRACE_IIFTYPE", "be16"),
        ("NFTA_TRACE_OIF", "be32"),
        ("NFTA_TRACE_OIFTYPE", "be16"),
        ("NFTA_TRACE_MARK", "be32"),
        ("NFTA_TRACE_NFPROTO", "be32"),
        ("NFTA_TRACE_POLICY", "be32"),
    )

    class verdict(nla):  # type: ignore[misc]
        nla_map = (
            ("NFTA_VERDICT_UNSPEC", "none"),
            ("NFTA_VERDICT_CODE", "be32"),
            ("NFTA_VERDICT_CHAIN", "asciiz"),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """One drop verdict the kernel traced: where, and for which packet."""

    seen: float  # monotonic
    family: str
    table: str
    chain: str
    handle: int | None  # None: the chain's policy dropped it
    src: IPAddress
    dst: IPAddress
    proto: int
    dport: int | None


@dataclass(frozen=True, slots=True)
class FlowKey:
    src: IPAddress
    dst: IPAddress
    proto: int
    dport: int | None


def flow_key(drop: Drop) -> FlowKey | None:
    if drop.src is None or drop.dst is None:
        return None
    return FlowKey(drop.src, drop.dst, drop.l4proto, drop.dport)


Packet = tuple[IPAddress, IPAddress, int, int | None]  # src, dst, proto, dport


def parse_verdicts(data: bytes, now: float, packets: dict[int, Packet]) -> list[Verdict]:
    """The drop verdicts in a batch of netlink messages from the trace group.

    The kernel sends a packet's headers once, with the first message of its trace id;
    `packets` keeps them by id for the messages that follow (the verdict among them).
    """
    out, offset = [], 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_TRACE:
            msg = nft_trace_msg(data[offset : offset + length])
            msg.decode()
            v = _verdict(msg, now, packets)
            if v is not None:
                out.append(v)
        offset += (length + 3) & ~3
    return out


def _verdict(msg: nft_trace_msg, now: float, packets: dict[int, Packet]) -> Verdict | None:
    trace_id = msg.get_attr("NFTA_TRACE_ID")
    header = msg.get_attr("NFTA_TRACE_NETWORK_HEADER")
    if header:
        packet = _packet(header, msg.get_attr("NFTA_TRACE_TRANSPORT_HEADER"))
        if packet is not None:
            if len(packets) > 4096:
                packets.clear()
            packets[trace_id] = packet
    kind = msg.get_attr("NFTA_TRACE_TYPE")
    table = msg.get_attr("NFTA_TRACE_TABLE") or ""
    if table.startswith(TABLE_PREFIX):
        return None
    if kind == _TRACE_RULE:
        v = msg.get_attr("NFTA_TRACE_VERDICT")
        code = v.get_attr("NFTA_VERDICT_CODE") if v is not None else None
        handle = msg.get_attr("NFTA_TRACE_RULE_HANDLE")
    elif kind == _TRACE_POLICY:
        code, handle = msg.get_attr("NFTA_TRACE_POLICY"), None
    else:
        return None
    if code != _NF_DROP or trace_id not in packets:
        return None
    src, dst, proto, dport = packets.pop(trace_id)
    # The table's family is the message's; NFTA_TRACE_NFPROTO is the packet's (ip in inet).
    family = _FAMILIES.get(msg["nfgen_family"], "?")
    chain = msg.get_attr("NFTA_TRACE_CHAIN") or ""
    return Verdict(now, family, table, chain, handle, src, dst, proto, dport)


def _packet(network: bytes, transport: bytes | None) -> Packet | None:
    addresses = _addresses(network)
    if addresses is None:
        return None
    src, dst, proto = addresses
    dport = None
    if proto in (6, 17, 132) and transport and len(transport) >= 4:
        dport = struct.unpack_from("!H", transport, 2)[0]
    return src, dst, proto, dport


def _addresses(header: bytes) -> tuple[IPAddress, IPAddress, int] | None:
    version = header[0] >> 4
    if version == 4 and len(header) >= 20:
        return (
            ipaddress.IPv4Address(header[12:16]),
            ipaddress.IPv4Address(header[16:20]),
            header[9],
        )
    if version == 6 and len(header) >= 40:
        return (
            ipaddress.IPv6Address(header[8:24]),
            ipaddress.IPv6Address(header[24:40]),
            header[6],
        )
    return None
