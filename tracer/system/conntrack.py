"""Conntrack lookups inside a namespace: ctnetlink messages from pyroute2's codec, sent on one
netlink socket per namespace that droptrace keeps open.

pyroute2's Conntrack opens a socket and an asyncio loop per call, and a call must run in the
namespace (a thread that setns()s, tracer.system.netns): ~1 ms a lookup, paid for every new
flow of a port-scan storm. A netlink socket stays in the namespace it was created in, so one
created there once answers every later lookup from any thread.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from tracer.model.net import IPAddress
from tracer.system import netns
from tracer.system.netlink import (
    IPCTNL_MSG_CT_GET,
    NFNL_SUBSYS_CTNETLINK,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    ConntrackEntry,
    NFCTAttrTuple,
    nfct_msg,
)

_NETLINK_NETFILTER = 12
_TIMEOUT_S = 0.5  # a lookup is one hash lookup in the kernel: more means something is wrong
# Sockets kept open at most: each holds its namespace alive, so on a node where pods come
# and go the least recently used is closed (and one whose namespace was deleted with it).
MAX_SOCKETS = 64
_SWEEP_S = 10.0


@dataclass(frozen=True, slots=True)
class DnatOrigin:
    """A connection whose reply should have come from `original_dst`, not from the backend."""

    original_dst: IPAddress
    original_dport: int | None
    backend: str
    state: str | None


class ConntrackLookups:
    """Lookups by tuple in any namespace, each namespace's socket opened on first use."""

    def __init__(self) -> None:
        self._socks: dict[Path, socket.socket] = {}  # least recently used first
        self._swept = time.monotonic()
        self._lock = threading.Lock()
        self._seq = 0

    def close(self) -> None:
        with self._lock:
            for sock in self._socks.values():
                sock.close()
            self._socks.clear()

    def dnat_origin(
        self, ns_path: Path, proto: int, src: str, sport: int, dst: str, dport: int
    ) -> DnatOrigin | None:
        """The DNAT'd connection for which the packet src:sport -> dst:dport is the reply.

        A reply that comes straight from the backend (its own address, not the service's)
        bypassed the un-DNAT: conntrack in this namespace saw the request but not the reply.
        """
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        wanted = NFCTAttrTuple(family, proto=proto, saddr=src, daddr=dst, sport=sport, dport=dport)
        msg = self._get(ns_path, family, wanted)
        if msg is None:
            return None
        e = ConntrackEntry(
            family,
            msg.get_attr("CTA_TUPLE_ORIG"),
            msg.get_attr("CTA_TUPLE_REPLY"),
            msg.get_attr("CTA_STATUS"),
            msg.get_attr("CTA_TIMEOUT"),
            msg.get_attr("CTA_PROTOINFO"),
            msg.get_attr("CTA_MARK"),
            msg.get_attr("CTA_ID"),
            msg.get_attr("CTA_USE"),
            msg.get_attr("CTA_ZONE"),
        )
        o = e.tuple_orig
        if o.daddr is None or o.daddr == src:
            return None  # not translated: the reply source is the real peer
        state = e.protoinfo.state_name() if e.protoinfo is not None else None
        return DnatOrigin(ip_address(o.daddr), o.dport, src, state)

    def _get(self, ns_path: Path, family: int, reply: NFCTAttrTuple) -> nfct_msg | None:
        """IPCTNL_MSG_CT_GET by the reply tuple: the connection, or None if there is none."""
        with self._lock:  # one request in flight per process keeps the answers in order
            sock = self._socket(ns_path)
            if sock is None:
                return None
            self._seq += 1
            req = nfct_msg.create_from(tuple_reply=reply)
            req["header"]["type"] = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
            req["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
            req["header"]["sequence_number"] = self._seq
            req["nfgen_family"] = family
            req.encode()
            try:
                sock.send(req.data)
                return _answer(sock, self._seq)
            except OSError:  # the namespace went away, or a timeout: drop the socket
                sock.close()
                del self._socks[ns_path]
                return None

    def _socket(self, ns_path: Path) -> socket.socket | None:
        if time.monotonic() - self._swept > _SWEEP_S:
            self._swept = time.monotonic()
            for gone in [p for p in self._socks if not p.exists()]:
                self._socks.pop(gone).close()
        sock = self._socks.pop(ns_path, None)
        if sock is None:
            try:
                sock = netns.run_in(ns_path, _open)
            except OSError:
                return None
            while len(self._socks) >= MAX_SOCKETS:
                self._socks.pop(next(iter(self._socks))).close()
        self._socks[ns_path] = sock  # now the most recently used
        return sock

    def __len__(self) -> int:
        return len(self._socks)


def _open() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
    sock.settimeout(_TIMEOUT_S)
    sock.bind((0, 0))
    return sock


def _answer(sock: socket.socket, seq: int) -> nfct_msg | None:
    """The entry the kernel sent for request `seq` (then its ACK), or None on ENOENT."""
    found: nfct_msg | None = None
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, msg_seq = struct.unpack_from("=IHHI", data, offset)
            if length < 16:
                return found
            chunk = data[offset : offset + length]
            offset += (length + 3) & ~3
            if msg_seq != seq:
                continue  # an answer to an earlier request that timed out
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", chunk, 16)[0]
                if code not in (0, errno.ENOENT):
                    raise OSError(code, "ctnetlink get failed")
                return found
            msg = nfct_msg(chunk)
            msg.decode()
            found = msg


# ctnetlink attribute numbers (linux/netfilter/nfnetlink_conntrack.h)
_CTA_TUPLE_ORIG, _CTA_TUPLE_IP, _CTA_IP_V4_SRC, _CTA_IP_V6_SRC = 1, 1, 1, 3
_NLA_TYPE_MASK = 0x3FFF
_NLM_F_DUMP = 0x300
_NLMSG_DONE = 3


def top_sources(
    ns_path: Path, limit: int = 3, scan: int = 50_000
) -> tuple[int, list[tuple[str, int]]]:
    """Who holds the namespace's conntrack entries: (entries scanned, the `limit` original
    sources with the most entries). At most `scan` entries are read (a full table of a
    million would take seconds); only the addresses are parsed, not whole entries."""

    def dump() -> tuple[int, list[tuple[str, int]]]:
        counts: dict[str, int] = {}
        seen = 0
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
            sock.settimeout(2.0)
            sock.bind((0, 0))
            msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
            header = struct.pack("=IHHII", 20, msg_type, NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
            sock.send(header + struct.pack("=BBH", socket.AF_UNSPEC, 0, 0))
            while seen < scan:
                data = sock.recv(1 << 17)
                if not data or _tally(data, counts) is None:
                    break
                seen = sum(counts.values())
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
        return sum(counts.values()), top

    return netns.run_in(ns_path, dump)


def _tally(data: bytes, counts: dict[str, int]) -> int | None:
    """Count each entry's original source; None once the dump is done."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16 or kind in (_NLMSG_DONE, NLMSG_ERROR):
            return None
        src = _orig_src(data[offset + 20 : offset + length])
        if src is not None:
            counts[src] = counts.get(src, 0) + 1
        offset += (length + 3) & ~3
    return len(counts)


def _attrs(data: bytes) -> dict[int, bytes]:
    out, offset = {}, 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind & _NLA_TYPE_MASK] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def _orig_src(payload: bytes) -> str | None:
    ip = _attrs(_attrs(payload).get(_CTA_TUPLE_ORIG, b"")).get(_CTA_TUPLE_IP, b"")
    addrs = _attrs(ip)
    if _CTA_IP_V4_SRC in addrs:
        return str(ip_address(addrs[_CTA_IP_V4_SRC][:4]))
    if _CTA_IP_V6_SRC in addrs:
        return str(ip_address(addrs[_CTA_IP_V6_SRC][:16]))
    return None
