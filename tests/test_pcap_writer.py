"""The pcapng writer and the packet redaction as pure functions (no root): the header shapes
the lab's UDP drops do not reach (IPv6, TCP and IPv4 options, fragments, extension headers),
and the file read back with python-pcapng's own reader. tests/test_pcap.py reads real drops
back with tshark."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from pcapng import FileScanner, blocks

from tracer.errors import WriteFailed
from tracer.model import AttributedDrop, Category, Diagnosis, Drop, Facts, IPAddress
from tracer.sinks import packet
from tracer.sinks.pcapng import LINKTYPE_RAW, PcapngWriter
from tracer.sinks.report import Redactor

V4_SRC, V4_DST = "198.51.100.7", "203.0.113.9"
V6_SRC, V6_DST = "2001:db8::7", "2001:db8:1::9"


def _v4(proto: int, l4: bytes, options: bytes = b"", frag: int = 0) -> bytes:
    ihl = (20 + len(options)) // 4
    total = ihl * 4 + len(l4)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0,
                         IPv4Address(V4_SRC).packed, IPv4Address(V4_DST).packed)  # fmt: skip
    return header + options + l4


def _v6(nexthdr: int, l4: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), nexthdr, 64,
                       IPv6Address(V6_SRC).packed, IPv6Address(V6_DST).packed) + l4  # fmt: skip


def _tcp(options: bytes, payload: bytes) -> bytes:
    doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, doff << 4, 0x02, 1024, 0xBEEF, 0) + (
        options + payload
    )


def _udp(payload: bytes) -> bytes:
    return struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0xBEEF) + payload


def _renamer() -> tuple[Redactor, object]:
    r = Redactor()

    def rename(addr: IPAddress) -> IPAddress:
        return packet.placeholder_address(r.number(str(addr)), addr.version)

    return r, rename


def _ipv4_checksum_ok(header: bytes) -> bool:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_ipv4_tcp_keeps_the_headers_with_placeholders_and_no_options_or_payload() -> None:
    record_route = bytes([7, 11, 4]) + IPv4Address("192.0.2.99").packed * 2  # 11 bytes + NOP
    mptcp_add_addr = bytes([30, 8, 0x30, 1]) + IPv4Address("192.0.2.98").packed
    raw = _v4(6, _tcp(mptcp_add_addr, b"secret payload"), record_route + b"\x01")
    r, rename = _renamer()
    out = packet.redact(raw, rename)  # type: ignore[arg-type]
    assert len(out) == 32 + 28  # IP header with its options, TCP header with its options
    assert out[12:16] == IPv4Address("240.0.0.1").packed and r.number(V4_SRC) == 1
    assert out[16:20] == IPv4Address("240.0.0.2").packed and r.number(V4_DST) == 2
    assert out[20:32] == b"\x01" * 12 and out[32 + 20 :] == b"\x01" * 8  # options: no-ops
    assert _ipv4_checksum_ok(out[:32])
    assert out[32:36] == raw[32:36]  # the ports stay
    assert out[32 + 16 : 32 + 18] == b"\0\0"  # the TCP checksum covered the real addresses
    for real in ("192.0.2.99", "192.0.2.98", V4_SRC, V4_DST):
        assert IPv4Address(real).packed not in out
    assert packet.ip_length(raw) == len(raw)


def test_a_later_fragment_keeps_only_its_ip_header() -> None:
    raw = _v4(17, b"not a udp header, just data", frag=185)
    out = packet.redact(raw, _renamer()[1])  # type: ignore[arg-type]
    assert len(out) == 20 and _ipv4_checksum_ok(out)


def test_ipv6_udp_and_an_extension_header() -> None:
    _, rename = _renamer()
    out = packet.redact(_v6(17, _udp(b"secret")), rename)  # type: ignore[arg-type]
    assert len(out) == 48
    assert IPv6Address(out[8:24]) == IPv6Address("100::1")
    assert IPv6Address(out[24:40]) == IPv6Address("100::2")
    assert out[40:44] == _udp(b"")[:4] and out[46:48] == b"\0\0"
    # A routing header may list addresses: everything after the IPv6 header is cut.
    routing = bytes([17, 2, 0, 1, 0, 0, 0, 0]) + IPv6Address("2001:db8::99").packed
    out = packet.redact(_v6(43, routing + _udp(b"x")), rename)  # type: ignore[arg-type]
    assert len(out) == 40 and IPv6Address("2001:db8::99").packed not in out


def test_a_header_not_captured_whole_keeps_nothing() -> None:
    assert packet.redact(_v4(17, _udp(b""))[:19], _renamer()[1]) == b""  # type: ignore[arg-type]
    assert packet.redact(b"\x00" * 60, _renamer()[1]) == b""  # type: ignore[arg-type]


def _item(raw: bytes, src: str | None, dst: str | None, ifindex: int = 2) -> AttributedDrop:
    drop = Drop(
        ts_ns=1, location=0, reason=0, netns=4026531840, ifindex=ifindex, length=len(raw) - 20,
        mark=0, l3proto=0x800, l4proto=17, src=ip_address(src) if src else None,
        dst=ip_address(dst) if dst else None, sport=40000, dport=53, icmp_type=None,
        icmp_code=None, hook=1, suppressed=2, packet=raw,
    )  # fmt: skip
    facts = Facts(
        datetime(2026, 11, 30, 12, 0, 1, 250, tzinfo=UTC), "NO_SOCKET", "__udp4_lib_rcv",
        f"eth{ifindex}", "node1",
    )  # fmt: skip
    why = Diagnosis(Category.NO_SOCKET, f"nothing listens on {dst}:53\nhere", "start it")
    return AttributedDrop(drop, facts, why)


def test_the_file_has_an_interface_per_device_the_drop_time_and_why_as_comment() -> None:
    raw = _v4(17, _udp(b"abc"))
    out = io.BytesIO()
    writer = PcapngWriter(out, 128, name="f")
    writer.add(_item(raw, V4_SRC, V4_DST))
    writer.add(_item(raw, V4_SRC, V4_DST, ifindex=3))
    writer.add(_item(raw, V4_SRC, V4_DST))
    writer.add(_item(b"", None, None))  # not IP
    writer.add(_item(b"", V4_SRC, V4_DST))  # IP, but no bytes captured
    assert (writer.written, writer.not_ip, writer.no_bytes) == (3, 1, 1)
    assert writer.outcome() == (
        "wrote 3 packets to f; skipped drops: 1 not IP, 1 without packet bytes"
    )
    read = list(FileScanner(io.BytesIO(out.getvalue())))
    idbs = [b for b in read if isinstance(b, blocks.InterfaceDescription)]
    epbs = [b for b in read if isinstance(b, blocks.EnhancedPacket)]
    assert [(i.link_type, i.snaplen, i.options["if_name"]) for i in idbs] == [
        (LINKTYPE_RAW, 128, "eth2@node1"),
        (LINKTYPE_RAW, 128, "eth3@node1"),
    ]
    assert [e.interface_id for e in epbs] == [0, 1, 0]
    first = epbs[0]
    assert first.packet_data == raw and first.packet_len == len(raw)
    micros = (first.timestamp_high << 32) + first.timestamp_low  # microseconds, by default
    assert micros == int(datetime(2026, 11, 30, 12, 0, 1, tzinfo=UTC).timestamp()) * 10**6 + 250
    assert first.options["opt_comment"] == (
        f"NO_SOCKET [no_socket] at __udp4_lib_rcv: nothing listens on {V4_DST}:53 here "
        "Fix: start it (2 identical drops before this one were not streamed)"
    )


def test_a_redacted_file_renames_addresses_in_packets_and_comments_alike() -> None:
    r = Redactor()
    r.learn(f"{V4_SRC} {V4_DST}")
    out = io.BytesIO()
    writer = PcapngWriter(out, 128, r)
    writer.add(_item(_v4(17, _udp(b"secret")), V4_SRC, V4_DST))
    data = out.getvalue()
    (epb,) = [b for b in FileScanner(io.BytesIO(data)) if isinstance(b, blocks.EnhancedPacket)]
    assert (
        epb.packet_data[12:20] == IPv4Address("240.0.0.1").packed + IPv4Address("240.0.0.2").packed
    )
    assert epb.packet_len == 34 and len(epb.packet_data) == 28
    assert "nothing listens on ip-2:53" in epb.options["opt_comment"]
    for real in (V4_SRC, V4_DST):
        assert real.encode() not in data and IPv4Address(real).packed not in data
    assert b"secret" not in data


def test_a_full_disk_is_one_line_naming_the_file() -> None:
    with open("/dev/full", "wb", buffering=0) as full, pytest.raises(WriteFailed) as err:
        PcapngWriter(full, 128, name="drops.pcapng")
    assert str(err.value) == "--pcap drops.pcapng: No space left on device"
