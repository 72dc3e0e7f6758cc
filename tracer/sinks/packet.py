"""A dropped packet's captured bytes (from its IP header, as the BPF program keeps them): how
long the packet was, and the same bytes with their addresses renamed for posting.

Pure functions over bytes: no kernel, no files."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from tracer.model.net import IPAddress

_TCP, _UDP, _ICMP, _ICMPV6, _SCTP = 6, 17, 1, 58, 132
# Bytes of each L4 header that redaction keeps (TCP's own length is in its header), and
# where its checksum is.
_L4_HEADER = {_UDP: 8, _ICMP: 8, _ICMPV6: 8, _SCTP: 12}
_L4_CHECKSUM = {_TCP: (16, 2), _UDP: (6, 2), _ICMP: (2, 2), _ICMPV6: (2, 2), _SCTP: (8, 4)}
_IP_NOP = 0x01  # IPv4 option "no operation"
_TCP_NOP = 0x01


def ip_length(data: bytes) -> int | None:
    """The packet's length as its IP header gives it, if the header was captured (0 in a
    jumbogram's or a GSO packet's header: not known)."""
    if len(data) >= 4 and data[0] >> 4 == 4:
        return int.from_bytes(data[2:4], "big") or None
    if len(data) >= 6 and data[0] >> 4 == 6:
        payload = int.from_bytes(data[4:6], "big")
        return payload + 40 if payload else None
    return None


def placeholder_address(n: int, version: int) -> IPAddress:
    """The address standing for redacted address number n in packet bytes: 240.0.0.0/4
    (reserved, never assigned) for IPv4, the discard-only prefix 100::/64 (RFC 6666) for
    IPv6. Neither is a range the lab, a pod network or the Internet uses."""
    if version == 4:
        return IPv4Address((240 << 24) + (n & 0x0FFFFFFF))
    return IPv6Address((0x100 << 112) + (n & 0xFFFFFFFFFFFFFFFF))


def redact(data: bytes, rename: Callable[[IPAddress], IPAddress]) -> bytes:
    """The packet with each address replaced by rename(address), IPv4 and TCP options
    replaced with no-ops (record route and MPTCP's ADD_ADDR carry addresses), the payload
    past the L4 header cut, the IPv4 header checksum recomputed and the L4 checksum zeroed
    (it was computed over the real addresses and the payload that is cut).

    Empty if the IP header was not captured whole: nothing of it is kept then."""
    if len(data) >= 20 and data[0] >> 4 == 4:
        return _redact_v4(data, rename)
    if len(data) >= 40 and data[0] >> 4 == 6:
        return _redact_v6(data, rename)
    return b""


def _redact_v4(data: bytes, rename: Callable[[IPAddress], IPAddress]) -> bytes:
    ihl = (data[0] & 0x0F) * 4
    if ihl < 20 or len(data) < ihl:
        return b""
    later_fragment = int.from_bytes(data[6:8], "big") & 0x1FFF
    proto = data[9]
    out = bytearray(data[: ihl + (0 if later_fragment else _l4_length(data, ihl, proto))])
    for at in (12, 16):
        out[at : at + 4] = rename(IPv4Address(bytes(data[at : at + 4]))).packed
    out[20:ihl] = bytes([_IP_NOP]) * (ihl - 20)
    out[10:12] = b"\0\0"
    out[10:12] = _checksum(bytes(out[:ihl])).to_bytes(2, "big")
    if not later_fragment:
        _scrub_l4(out, ihl, proto)
    return bytes(out)


def _redact_v6(data: bytes, rename: Callable[[IPAddress], IPAddress]) -> bytes:
    proto = data[6]
    # An extension header (hop-by-hop, routing, destination options...) may carry addresses
    # (a routing header's segments, a home address option): cut before it.
    l4 = _l4_length(data, 40, proto) if proto in _L4_CHECKSUM else 0
    out = bytearray(data[: 40 + l4])
    for at in (8, 24):
        out[at : at + 16] = rename(IPv6Address(bytes(data[at : at + 16]))).packed
    if l4:
        _scrub_l4(out, 40, proto)
    return bytes(out)


def _l4_length(data: bytes, at: int, proto: int) -> int:
    """Bytes of the L4 header at `at` that were captured (its options included)."""
    if proto == _TCP:
        if len(data) < at + 13:
            return max(0, len(data) - at)
        return max(20, (data[at + 12] >> 4) * 4)
    return _L4_HEADER.get(proto, 0)


def _scrub_l4(out: bytearray, at: int, proto: int) -> None:
    where = _L4_CHECKSUM.get(proto)
    if where is not None and len(out) >= at + where[0] + where[1]:
        out[at + where[0] : at + where[0] + where[1]] = bytes(where[1])
    if proto == _TCP and len(out) > at + 20:
        out[at + 20 :] = bytes([_TCP_NOP]) * (len(out) - at - 20)


def _checksum(header: bytes) -> int:
    """The Internet checksum (RFC 1071) of an IPv4 header whose checksum field is zero."""
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, len(header), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
