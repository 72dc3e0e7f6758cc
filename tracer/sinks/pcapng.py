"""pcapng: the dropped packets for Wireshark and tshark, each with why the kernel dropped it
as its comment (`tshark -r FILE -T fields -e frame.comment`).

The blocks are python-pcapng's; this module decides what goes in them: one interface per
(network namespace, interface) as first met, link type RAW (the kernel keeps the bytes from
the IP header on, so there is no link layer), the drop's wall-clock time, the bytes the BPF
program captured (at most DT_CAPTURE_LEN), and the packet's length from its IP header.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import BinaryIO

from pcapng import FileWriter, blocks

from tracer.errors import WriteFailed
from tracer.model import AttributedDrop, IPAddress
from tracer.model.counters import CounterEvent
from tracer.model.tracing import HookReport, Summary
from tracer.sinks import Sink
from tracer.sinks import packet as pkt
from tracer.sinks.report import Redactor

LINKTYPE_RAW = 101  # the packet starts at its IPv4 or IPv6 header
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COMMENT_MAX = 8000  # bytes; a pcapng option holds at most 65535
Note = Callable[[str], None]


def comment(item: AttributedDrop) -> str:
    """Why the packet died, on one line: reason, category, where, the explanation, the fix."""
    f, diag = item.facts, item.diagnosis
    text = f"{f.reason} [{diag.category}] at {f.location}: {diag.explanation}"
    if diag.fix:
        text += f" Fix: {diag.fix}"
    if item.drop.suppressed:
        text += f" ({item.drop.suppressed} identical drops before this one were not streamed)"
    text = " ".join(text.split())  # one line in tshark's field output
    return text.encode()[:_COMMENT_MAX].decode(errors="ignore")


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _version() -> str:
    try:
        return metadata.version("droptrace")
    except metadata.PackageNotFoundError:
        return "(checkout)"


class PcapngWriter:
    """Writes attributed drops to a pcapng stream as they come.

    With a redactor (`dump --redact`), addresses in the packets become the placeholder
    addresses of their ip-N names (tracer.sinks.packet), payloads are cut after the L4
    header, and comments are redacted as the JSON report is."""

    def __init__(
        self, stream: BinaryIO, snaplen: int, redactor: Redactor | None = None, name: str = ""
    ) -> None:
        self.name = name or str(getattr(stream, "name", "pcapng"))
        self._stream = stream
        self._snaplen = snaplen
        self._redactor = redactor
        self._shb = blocks.SectionHeader(
            options={
                "shb_userappl": f"droptrace {_version()}",
                "shb_os": f"{os.uname().sysname} {os.uname().release}",
            }
        )
        with self._failing():
            self._writer = FileWriter(stream, self._shb)
        self._ifaces: dict[tuple[int, int], int] = {}  # (netns inode, ifindex) -> interface id
        self.written = 0
        self.not_ip = 0  # drops of packets that were not IP: not written
        self.no_bytes = 0  # IP drops with no packet bytes captured: not written

    @contextmanager
    def _failing(self) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            raise WriteFailed(f"--pcap {self.name}: {err.strerror or err}") from None

    def add(self, item: AttributedDrop) -> None:
        with self._failing():
            self._add(item)

    def _add(self, item: AttributedDrop) -> None:
        d = item.drop
        if d.src is None or d.dst is None:
            self.not_ip += 1
            return
        data = d.packet
        text = comment(item)
        if self._redactor is not None:
            data = pkt.redact(data, self._rename)
            text = self._redactor.text(text)
        if not data:
            self.no_bytes += 1
            return
        # skb->len counts from skb->data, which is the transport header once the IP layer
        # has pulled its own: the IP header's length is the packet's.
        length = max(pkt.ip_length(d.packet) or d.length, len(data))
        ts = _micros(item.facts.time)
        epb = self._shb.new_member(
            blocks.EnhancedPacket,
            interface_id=self._interface(item),
            timestamp_high=ts >> 32,
            timestamp_low=ts & 0xFFFFFFFF,
            packet_data=data,
            packet_len=length,
            options={"opt_comment": text},
        )
        self._writer.write_block(epb)
        self.written += 1

    def _rename(self, addr: IPAddress) -> IPAddress:
        assert self._redactor is not None
        return pkt.placeholder_address(self._redactor.number(str(addr)), addr.version)

    def _interface(self, item: AttributedDrop) -> int:
        d, f = item.drop, item.facts
        key = (d.netns, d.ifindex)
        known = self._ifaces.get(key)
        if known is not None:
            return known
        iface = f.iface or (f"if{d.ifindex}" if d.ifindex else "unknown")
        idb = self._shb.new_member(
            blocks.InterfaceDescription,
            link_type=LINKTYPE_RAW,
            snaplen=self._snaplen,
            options={
                "if_name": f"{iface}@{f.netns}",
                "if_description": f"ifindex {d.ifindex} in network namespace {d.netns}",
            },
        )
        self._writer.write_block(idb)
        self._ifaces[key] = idb.interface_id
        return int(idb.interface_id)

    def flush(self) -> None:
        with self._failing():
            self._stream.flush()

    def close(self) -> None:
        with self._failing():
            self._stream.close()

    def outcome(self) -> str:
        """One line: how many packets went where, and what was left out and why."""
        line = f"wrote {self.written} packets to {self.name}"
        left = []
        if self.not_ip:
            left.append(f"{self.not_ip} not IP")
        if self.no_bytes:
            left.append(f"{self.no_bytes} without packet bytes")
        return line + (f"; skipped drops: {', '.join(left)}" if left else "")


class PcapngSink:
    """Another sink's drops, also written to a pcapng file; the file is complete when the
    session finishes (and after each batch the explainer catches up with)."""

    def __init__(self, inner: Sink, writer: PcapngWriter, note: Note) -> None:
        self._inner = inner
        self._writer = writer
        self._note = note

    def start(self, hooks: HookReport) -> None:
        self._inner.start(hooks)

    def drop(self, item: AttributedDrop) -> None:
        self._inner.drop(item)
        self._writer.add(item)

    def flush(self) -> None:
        self._inner.flush()
        self._writer.flush()

    def counter(self, event: CounterEvent) -> None:
        self._inner.counter(event)

    def finish(self, summary: Summary) -> None:
        self._writer.close()
        self._note(self._writer.outcome())  # before the summary, which ends output
        self._inner.finish(summary)
